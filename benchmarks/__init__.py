"""Benchmarks of issue 7: each runs with `python -m benchmarks.<name>`; not collected by pytest."""
