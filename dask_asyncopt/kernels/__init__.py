"""Numba kernels: pure functions over NumPy arrays, never Dask."""
