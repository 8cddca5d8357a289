"""Running experiments: configs and presets, the methods by name, the training loop, the result store,
experiments and sweeps, and vectorized seeds."""
