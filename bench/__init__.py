"""Benchmarks: the function's path against full TensorFlow and the machine (`make bench`).

See bench/run.py for what is measured and docs/performance.md for the results.
"""
