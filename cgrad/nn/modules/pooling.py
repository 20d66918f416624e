"""MaxPool2d and AvgPool2d.

ceil_mode (and AvgPool2d's divisor_override) are built on the C kernels:
the input is extended on the bottom/right by as many rows/columns as the
last, partial windows need (-inf for max, 0 for a sum), and the average
divides window sums by PyTorch's per-window divisor."""
import math

import numpy as np

from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn.modules._utils import check_input, pair
from cgrad.nn.modules.module import Module

__all__ = ["MaxPool2d", "AvgPool2d"]


def _pool_input(layer, input):
    check_input(layer, input)
    if input.ndim not in (3, 4):
        raise ValueError(f"{layer}: expected 3-D (unbatched) or 4-D (batched) input, got input of "
                         f"shape {tuple(input.shape)}")
    return input.unsqueeze(0) if input.ndim == 3 else input


def _out_size(layer, size, k, s, p, ceil_mode, shape):
    """PyTorch's pooling_output_shape (a last window must start inside the
    input or the left padding)."""
    num = size + 2 * p - k
    if num < 0:
        raise ValueError(f"{layer}: kernel size {k} (with padding {p}) is larger than the input "
                         f"dimension {size} of input shape {tuple(shape)}")
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _extend(x, extra, value):
    """x (N, C, H, W) with extra[0] rows and extra[1] columns of value
    appended (constants: no gradient flows into them)."""
    n, c, h, w = x.shape
    if extra[0] > 0:
        x = _core.cat([x, _core.full((n, c, extra[0], w), value, dtype=x.dtype, device=x.device)], 2)
    if extra[1] > 0:
        x = _core.cat([x, _core.full((n, c, x.shape[2], extra[1]), value, dtype=x.dtype, device=x.device)], 3)
    return x


def _geometry(layer, x, k, s, p, ceil_mode):
    outs = [_out_size(layer, x.shape[2 + i], k[i], s[i], p[i], ceil_mode, x.shape) for i in range(2)]
    extra = [max(0, (outs[i] - 1) * s[i] + k[i] - (x.shape[2 + i] + 2 * p[i])) for i in range(2)]
    return outs, extra


class MaxPool2d(Module):
    """Max over kernel_size windows (stride defaults to kernel_size)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode
        self._k = pair("MaxPool2d", "kernel_size", kernel_size, 1)
        self._s = pair("MaxPool2d", "stride", self.stride, 1)
        self._p = pair("MaxPool2d", "padding", padding, 0)
        if pair("MaxPool2d", "dilation", dilation, 1) != (1, 1):
            raise NotImplementedError(f"MaxPool2d: dilation={dilation} is not supported yet (only 1)")
        if return_indices:
            raise NotImplementedError("MaxPool2d: return_indices=True is not supported yet")
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(f"MaxPool2d: pad should be at most half of effective kernel size, but got "
                             f"padding={padding} and kernel_size={kernel_size}")

    def forward(self, input):
        x = _pool_input("MaxPool2d", input)
        if self.ceil_mode:
            _, extra = _geometry("MaxPool2d", x, self._k, self._s, self._p, True)
            x = _extend(x, extra, -math.inf)
        out = F.max_pool2d(x, self._k, self._s, self._p)
        return out.squeeze(0) if input.ndim == 3 else out

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


def _avg_divisors(size, outs, k, s, p, count_include_pad):
    """PyTorch's avg_pool2d divisor per output position (H_out, W_out)."""
    per_dim = []
    for i in range(2):
        start = np.arange(outs[i]) * s[i] - p[i]
        end = np.minimum(start + k[i], size[i] + p[i])
        if count_include_pad:
            per_dim.append(end - start)
        else:
            per_dim.append(np.minimum(end, size[i]) - np.maximum(start, 0))
    return np.outer(per_dim[0], per_dim[1]).astype(np.float64)


class AvgPool2d(Module):
    """Mean over kernel_size windows; count_include_pad, ceil_mode and
    divisor_override as PyTorch."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override
        self._k = pair("AvgPool2d", "kernel_size", kernel_size, 1)
        self._s = pair("AvgPool2d", "stride", self.stride, 1)
        self._p = pair("AvgPool2d", "padding", padding, 0)
        if divisor_override is not None:
            if isinstance(divisor_override, bool) or not isinstance(divisor_override, int) \
                    or divisor_override <= 0:
                raise ValueError(f"AvgPool2d: divisor_override must be a positive int, got {divisor_override!r}")
        if self._p[0] > self._k[0] // 2 or self._p[1] > self._k[1] // 2:
            raise ValueError(f"AvgPool2d: pad should be at most half of kernel size, but got "
                             f"padding={padding} and kernel_size={kernel_size}")

    def forward(self, input):
        x = _pool_input("AvgPool2d", input)
        k, s, p = self._k, self._s, self._p
        if not self.ceil_mode and self.divisor_override is None:
            out = F.avg_pool2d(x, k, s, p, self.count_include_pad)
        else:
            outs, extra = _geometry("AvgPool2d", x, k, s, p, self.ceil_mode)
            # window sums: the mean with padding counted, times the window size
            sums = F.avg_pool2d(_extend(x, extra, 0.0), k, s, p, True) * float(k[0] * k[1])
            if self.divisor_override is not None:
                out = sums / float(self.divisor_override)
            else:
                div = _avg_divisors(x.shape[2:], outs, k, s, p, self.count_include_pad)
                out = sums / _core.tensor(div, dtype=x.dtype, device=x.device)
        return out.squeeze(0) if input.ndim == 3 else out

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
