"""Identity and Linear."""
import math

from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn import init
from cgrad.nn.modules._utils import check_input, check_size, factory_device, factory_dtype
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input; takes (and ignores) any constructor arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """y = x @ weight.T + bias, weight (out_features, in_features) drawn
    from kaiming_uniform_(a=sqrt(5)), bias from U(-1/sqrt(in), 1/sqrt(in))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        dt = factory_dtype("Linear", device, dtype)
        dev = factory_device("Linear", device)
        self.in_features = check_size("Linear", "in_features", in_features)
        self.out_features = check_size("Linear", "out_features", out_features)
        self.weight = Parameter(_core.empty(out_features, in_features, dtype=dt, device=dev))
        if bias:
            self.bias = Parameter(_core.empty(out_features, dtype=dt, device=dev))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        check_input("Linear", input)
        if input.ndim == 0 or input.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input with last dimension in_features="
                             f"{self.in_features}, got input of shape {tuple(input.shape)}")
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
