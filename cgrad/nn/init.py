"""cgrad.nn.init: in-place parameter initialisers with PyTorch's names,
formulas and defaults, drawing from cgrad's own RNG (cgrad.manual_seed)."""
import math
import numbers
import warnings

import numpy as np

from cgrad import _core
from cgrad._core import Tensor
from cgrad._grad_mode import no_grad

__all__ = [
    "calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
    "eye_", "dirac_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "orthogonal_",
]


def _check_tensor(tensor, fn):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{fn}: tensor must be a cgrad.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{fn}: tensor must have a floating dtype, got {tensor.dtype}")


def _fill_from(tensor, values):
    """Copies values (same shape) into tensor without recording it."""
    with no_grad():
        tensor.copy_(values)
    return tensor


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for a nonlinearity (PyTorch's table)."""
    linear_fns = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d"]
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif not isinstance(param, bool) and isinstance(param, numbers.Number):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    dim = tensor.dim()
    if dim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {tuple(tensor.shape)})")
    num_input_fmaps = tensor.shape[1]
    num_output_fmaps = tensor.shape[0]
    receptive_field_size = 1
    for s in tensor.shape[2:]:
        receptive_field_size *= s
    return num_input_fmaps * receptive_field_size, num_output_fmaps * receptive_field_size


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower() if isinstance(mode, str) else mode
    valid = ["fan_in", "fan_out"]
    if mode not in valid:
        raise ValueError(f"Mode {mode} not supported, please use one of {valid}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fills tensor with U(a, b)."""
    _check_tensor(tensor, "uniform_")
    if generator is not None:
        raise NotImplementedError("uniform_: generator= is not supported; seed with cgrad.manual_seed")
    if not a <= b:
        raise ValueError(f"uniform_ expects a <= b, but got a={a}, b={b}")
    u = _core.rand(*tensor.shape, dtype=tensor.dtype)
    return _fill_from(tensor, u * (b - a) + a)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fills tensor with N(mean, std^2)."""
    _check_tensor(tensor, "normal_")
    if generator is not None:
        raise NotImplementedError("normal_: generator= is not supported; seed with cgrad.manual_seed")
    if std < 0:
        raise ValueError(f"normal_ expects std >= 0.0, but found std {std}")
    n = _core.randn(*tensor.shape, dtype=tensor.dtype)
    return _fill_from(tensor, n * std + mean)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """Fills tensor with N(mean, std^2) conditioned on [a, b] (rejection:
    out-of-range draws are redrawn, so the distribution is exact)."""
    _check_tensor(tensor, "trunc_normal_")
    if generator is not None:
        raise NotImplementedError("trunc_normal_: generator= is not supported")
    if not a < b:
        raise ValueError(f"trunc_normal_ expects a < b, but got a={a}, b={b}")
    if std <= 0:
        raise ValueError(f"trunc_normal_ expects std > 0, but got std={std}")
    lo, hi = (a - mean) / std, (b - mean) / std
    mass = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    if mass < 1e-3:
        raise ValueError(f"trunc_normal_: [a, b] = [{a}, {b}] holds only {mass:.2g} of N({mean}, "
                         f"{std}^2); choose bounds nearer the mean")
    n = tensor.numel()
    out = np.empty(n, dtype=np.float64)
    filled = 0
    while filled < n:
        want = max(16, int((n - filled) / mass * 1.2) + 1)
        draw = _core.randn(want, dtype=_core.float64).numpy()
        ok = draw[(draw >= lo) & (draw <= hi)][: n - filled]
        out[filled:filled + len(ok)] = ok
        filled += len(ok)
    vals = _core.tensor((out * std + mean).reshape(tensor.shape), dtype=tensor.dtype)
    return _fill_from(tensor, vals)


def constant_(tensor, val):
    _check_tensor(tensor, "constant_")
    with no_grad():
        tensor.fill_(val)
    return tensor


def ones_(tensor):
    return constant_(tensor, 1.0)


def zeros_(tensor):
    return constant_(tensor, 0.0)


def eye_(tensor):
    """The 2-D identity (ones on the main diagonal of a rectangle)."""
    _check_tensor(tensor, "eye_")
    if tensor.dim() != 2:
        raise ValueError(f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}")
    return _fill_from(tensor, _core.tensor(np.eye(*tensor.shape), dtype=tensor.dtype))


def dirac_(tensor, groups=1):
    """Dirac delta for 3-5-d conv weights: the conv is the identity on as
    many channels as possible (per group)."""
    _check_tensor(tensor, "dirac_")
    d = tensor.dim()
    if d not in (3, 4, 5):
        raise ValueError(f"Only tensors with 3, 4, or 5 dimensions are supported, got {d}")
    sizes = tensor.shape
    if sizes[0] % groups != 0:
        raise ValueError(f"dim 0 ({sizes[0]}) must be divisible by groups ({groups})")
    out_chans_per_grp = sizes[0] // groups
    min_dim = min(out_chans_per_grp, sizes[1])
    w = np.zeros(sizes)
    centre = tuple(s // 2 for s in sizes[2:])
    for g in range(groups):
        for k in range(min_dim):
            w[(g * out_chans_per_grp + k, k) + centre] = 1
    return _fill_from(tensor, _core.tensor(w, dtype=tensor.dtype))


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)) (Glorot)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    a = math.sqrt(3.0) * std
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-bound, bound), bound = gain * sqrt(3 / fan) (He); what Linear and
    Conv2d use with a=sqrt(5)."""
    _check_tensor(tensor, "kaiming_uniform_")
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op")
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    bound = math.sqrt(3.0) * gain / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std^2), std = gain / sqrt(fan) (He)."""
    _check_tensor(tensor, "kaiming_normal_")
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op")
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return normal_(tensor, 0.0, gain / math.sqrt(fan), generator)


def orthogonal_(tensor, gain=1, generator=None):
    """A (semi-)orthogonal matrix from the QR of a Gaussian one (sign-fixed
    so the result is Haar distributed), reshaped to tensor's shape."""
    _check_tensor(tensor, "orthogonal_")
    if tensor.dim() < 2:
        raise ValueError(f"Only tensors with 2 or more dimensions are supported, got shape "
                         f"{tuple(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    flat = _core.randn(rows, cols, dtype=_core.float64).numpy()
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    vals = _core.tensor((gain * q).reshape(tensor.shape), dtype=tensor.dtype)
    return _fill_from(tensor, vals)
