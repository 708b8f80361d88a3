"""Benchmark workloads (see DESIGN.md, "Common workloads"); figures go in RESULTS.md."""
