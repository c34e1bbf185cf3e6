"""Benchmarks: `make bench` runs every `bench/bench_*.py` module's `main()`.

Each benchmark measures a baseline in the same run and prints ratios against it, never an
absolute time checked against a constant. Results are recorded in docs/benchmarks.md.
"""
