"""kdlib benchmarks: ``python -m benchmarks.run [--device cpu|cuda] [--quick] [--out FILE]`` prints one JSON object."""
