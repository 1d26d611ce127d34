"""Benchmarks of every registered technique in PyTorch and JAX (run with ``nox -s bench``)."""
