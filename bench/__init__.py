"""Benchmarks: each module runs by itself (`python -m bench.NAME`) and prints a Markdown table.

They are not tests. See bench/README.md and docs/benchmarks.md.
"""
