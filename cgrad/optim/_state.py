"""State tensors of the built-in optimizers: made on the parameter's device
and in its dtype, because the fused update runs where the parameter lives
and refuses operands on another device (PyTorch keeps state there too)."""
from cgrad import _core


def zeros(p):
    """Zeros shaped like p, on p's device, in p's dtype."""
    return _core.zeros(*p.shape, dtype=p.dtype, device=p.device)


def full(p, value):
    """value everywhere, shaped like p, on p's device, in p's dtype."""
    return _core.full(tuple(p.shape), value, dtype=p.dtype, device=p.device)


def follow(value, p):
    """A floating state tensor (not 'step') cast to p's dtype and moved to
    p's device when either changed since it was made (a model moved with
    .to() after its optimizer was built, a state dict saved elsewhere)."""
    if value.device != p.device:
        value = value.to(p.device)
    if value.dtype != p.dtype:
        value = value.to(p.dtype)
    return value
