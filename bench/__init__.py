"""Benchmarks: each module runs on its own and writes a Markdown report under bench/results/."""
