"""Optimizer update, clipping and gradient-statistics kernels of the array
backend (see docs/backend.md)."""


class OptimKernels:
    pass
