"""The agents: TD3 (state-based) and DrQ (pixels), their networks and replay buffers, and ``base``, what
both share around NE (sparsity, topology schedulers, review, checkpoint state). Agents know nothing of the
runner."""
