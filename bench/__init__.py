"""Benchmarks that print tables (run as `python -m bench.NAME` from the repository root); never asserted in tests."""
