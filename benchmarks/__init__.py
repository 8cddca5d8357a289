"""Speed benchmarks (scripts that print numbers): ``python -m benchmarks.bench`` and friends."""
