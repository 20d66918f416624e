"""Argument checks shared by the layers' constructors."""
from cgrad import _core
from cgrad._core import Tensor
from cgrad._devices import device as _device

__all__ = ["factory_dtype", "factory_device", "check_size", "pair", "check_input"]


def factory_device(layer, device=None):
    """The device a layer's parameters are created on (None: the cpu), as a
    spec string; an unknown or unsupported spec is a ValueError naming the
    layer, before anything is allocated."""
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, int, _device)):
        raise TypeError(f"{layer}: device must be a str, an int or a cgrad.device, got "
                        f"{type(device).__name__} ({device!r})")
    try:
        d = _device("cuda", device) if isinstance(device, int) else _device(device)
    except ValueError as e:
        raise ValueError(f"{layer}: {e}") from None
    if d.type == "cuda" and d.index != 0:
        raise ValueError(f"{layer}: device {str(d)!r}: only index 0 is supported")
    return str(d)


def factory_dtype(layer, device=None, dtype=None):
    """The dtype a layer's parameters are created in (device is checked by
    factory_device)."""
    factory_device(layer, device)
    if dtype is None:
        return _core.get_default_dtype()
    if dtype not in (_core.float32, _core.float64, _core.float16):
        raise TypeError(f"{layer}: dtype must be cgrad.float32, float64 or float16, got {dtype!r}")
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
