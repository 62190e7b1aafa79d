"""Benchmarks, not tests: figures measured in one run on this machine, printed as `name: value` lines. One file per
concern; python -m benchmarks lists them.
"""
