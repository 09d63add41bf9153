"""Benchmarks: what the service costs on top of the model, against the floor and a naive implementation.

Run with ``python3 dev.py bench`` (``python -m bench.run``); see BENCHMARKS.md.
"""
