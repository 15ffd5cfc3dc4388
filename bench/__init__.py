"""Benchmarks of the Files platform, each printing its figures and the ratio to its baseline.

`make bench` (or `uv run python -m bench`) runs them all; each also runs alone, e.g.
`uv run python -m bench.upload_small --quick`. See bench/README.md.
"""
