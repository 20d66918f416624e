"""Conv2d."""
import math

from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn import init
from cgrad.nn.modules._utils import check_input, check_size, factory_device, factory_dtype, pair
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter

__all__ = ["Conv2d"]


class Conv2d(Module):
    """2-D convolution over (N, C_in, H, W) (or unbatched (C_in, H, W))
    inputs; weight (out_channels, in_channels // groups, kh, kw). padding
    may be an int, a pair, 'valid' or 'same' (stride 1)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        dt = factory_dtype("Conv2d", device, dtype)
        dev = factory_device("Conv2d", device)
        check_size("Conv2d", "in_channels", in_channels)
        check_size("Conv2d", "out_channels", out_channels)
        check_size("Conv2d", "groups", groups, 1)
        if in_channels % groups != 0:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"Conv2d: out_channels ({out_channels}) must be divisible by groups ({groups})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = pair("Conv2d", "stride", stride, 1)
        self.dilation = pair("Conv2d", "dilation", dilation, 1)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Conv2d: invalid padding string {padding!r}, should be one of "
                                 f"{{'valid', 'same'}}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = pair("Conv2d", "padding", padding, 0)
        if padding_mode != "zeros":
            if padding_mode in ("reflect", "replicate", "circular"):
                raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r} is not supported "
                                          f"yet (only 'zeros')")
            raise ValueError(f"Conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate' "
                             f"or 'circular', got {padding_mode!r}")
        self.padding_mode = padding_mode
        self.groups = groups
        self.output_padding = (0, 0)
        self.transposed = False
        kh, kw = self.kernel_size
        self.weight = Parameter(_core.empty(out_channels, in_channels // groups, kh, kw, dtype=dt, device=dev))
        if bias:
            self.bias = Parameter(_core.empty(out_channels, dtype=dt, device=dev))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _conv(self, x):
        if self.padding == "valid":
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        if self.padding != "same":
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        # 'same': total padding d*(k-1) per dim, the odd one extra on the
        # right (PyTorch). Pad the larger half on both sides, then drop the
        # first output row/column that the extra left padding added.
        totals = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
        rights = [t - t // 2 for t in totals]
        out = F.conv2d(x, self.weight, self.bias, 1, tuple(rights), self.dilation, self.groups)
        if totals[0] % 2:
            out = out[:, :, 1:, :]
        if totals[1] % 2:
            out = out[:, :, :, 1:]
        return out

    def forward(self, input):
        check_input("Conv2d", input)
        if input.ndim not in (3, 4):
            raise ValueError(f"Conv2d: expected 3-D (unbatched) or 4-D (batched) input, got input of "
                             f"shape {tuple(input.shape)}")
        unbatched = input.ndim == 3
        x = input.unsqueeze(0) if unbatched else input
        if x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: expected input with {self.in_channels} channels, got input of "
                             f"shape {tuple(input.shape)}")
        out = self._conv(x)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
