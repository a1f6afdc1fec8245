"""Performance harness: `python -m benchmarks.throughput` (see benchmarks/README.md)."""
