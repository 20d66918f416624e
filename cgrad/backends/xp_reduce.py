"""Reduction and matmul kernels of the array backend (see docs/backend.md)."""


class ReduceKernels:
    pass
