"""cgrad: customizable backpropagation on a C tape.

A PyTorch-shaped API over a C reverse-mode autodiff core:

    import cgrad
    x = cgrad.randn(3, requires_grad=True)
    (x * x).sum().backward()
    x.grad  # 2 * x
"""
import os as _os
import sys as _sys

# The extension holds the C core; loading it RTLD_GLOBAL lets a shared
# library of custom ops (cgrad.ops.load_library) resolve its cg_ calls to
# this same core, so its ops record on the same tape.
_flags = _sys.getdlopenflags()
_sys.setdlopenflags(_flags | _os.RTLD_GLOBAL)
try:
    from cgrad import _core
finally:
    _sys.setdlopenflags(_flags)
from cgrad._core import (
    Tensor, dtype, float32, float64, int64, bool_, float16,
    tensor, from_numpy, zeros, ones, empty, full, randn, rand, randint, randperm, arange,
    manual_seed, get_rng_state, set_rng_state, is_grad_enabled, set_default_dtype, get_default_dtype,
    where, cat, concatenate, stack, use_blas, gemm_backend, sparse_coo_tensor,
    as_tensor, from_dlpack,
)
from cgrad._devices import device
from cgrad import cuda
from cgrad._grad_mode import no_grad, enable_grad, set_grad_enabled
from cgrad import autograd
from cgrad._functions import *  # noqa: F401,F403  (exp, log, matmul, sum, ... as functions)
from cgrad._functions import __all__ as _fn_all
from cgrad import nn
from cgrad._custom_gradient import custom_gradient
from cgrad import ste
from cgrad.serialization import save, load
from cgrad import utils, policy, optim, amp, monitor, ops

__version__ = _core.__version__

# PyTorch's short dtype names.
float = float32  # noqa: A001
double = float64
long = int64
bool = bool_  # noqa: A001
half = float16

# Route GEMMs through SciPy's BLAS when it is importable (the C library
# alone uses its built-in kernel).
use_blas(True)

__all__ = [
    "Tensor", "dtype", "float32", "float64", "int64", "bool_", "float", "double", "long", "bool",
    "tensor", "from_numpy", "zeros", "ones", "empty", "full", "randn", "rand", "randint",
    "randperm", "arange", "zeros_like", "ones_like", "manual_seed", "get_rng_state", "set_rng_state", "is_grad_enabled",
    "set_default_dtype", "get_default_dtype", "where", "cat", "concatenate", "stack",
    "no_grad", "enable_grad", "set_grad_enabled", "autograd", "nn", "use_blas", "gemm_backend",
    "custom_gradient", "ste", "utils", "policy", "optim", "amp", "monitor", "ops", "save", "load",
    "sparse_coo_tensor",
] + list(_fn_all)
