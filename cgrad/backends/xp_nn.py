"""Indexing, embedding, dropout, convolution and pooling kernels of the
array backend (see docs/backend.md)."""


class NNKernels:
    pass
