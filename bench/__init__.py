"""Throughput, latency, recovery and memory benchmarks of the worker against peers.

Run ``python -m bench.run --help``. Nothing here is collected by pytest.
"""
