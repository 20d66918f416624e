"""Normalization and recurrent-cell functions of cgrad.nn.functional."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = []
