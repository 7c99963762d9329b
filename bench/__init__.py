"""Benchmark harness: synthetic workloads, FHIR stub, framework floor, load driver, profiler.

Run `make bench` (or `python -m bench.run --help`) from the repository root.
"""
