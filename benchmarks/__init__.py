"""Benchmark workloads; RESULTS.md describes them ("The workloads") and holds their figures."""
