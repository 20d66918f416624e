"""Argument checks shared by the layers' constructors."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = ["factory_dtype", "check_size", "pair", "check_input"]


def factory_dtype(layer, device=None, dtype=None):
    """The dtype a layer's parameters are created in (device must be cpu)."""
    if device is not None and str(device) not in ("cpu", "cpu:0"):
        raise NotImplementedError(f"{layer}: device {str(device)!r} is not available in this build "
                                  f"(only 'cpu'): GPU support is a later issue")
    if dtype is None:
        return _core.get_default_dtype()
    if dtype not in (_core.float32, _core.float64):
        raise TypeError(f"{layer}: dtype must be cgrad.float32 or cgrad.float64, got {dtype!r}")
    return dtype


def check_size(layer, name, value, minimum=0):
    """An integer argument that must be >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{layer}: {name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {value}")
    return value


def pair(layer, name, value, minimum=0):
    """An int or a pair of ints, as a 2-tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{layer}: {name} must be an int or a pair of ints, got {value!r}")
        return tuple(check_size(layer, name, v, minimum) for v in value)
    v = check_size(layer, name, value, minimum)
    return (v, v)


def check_input(layer, input):
    if not isinstance(input, Tensor):
        raise TypeError(f"{layer}: input must be a cgrad.Tensor, got {type(input).__name__}")
    return input
