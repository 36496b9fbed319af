"""Benchmarks: result records of quality runs and the reports made from them."""
