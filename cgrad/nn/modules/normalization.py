"""LayerNorm and BatchNorm1d."""
from cgrad import _core
from cgrad.nn import functional as F
from cgrad.nn import init
from cgrad.nn.modules._utils import check_input, check_size, factory_device, factory_dtype
from cgrad.nn.modules.module import Module
from cgrad.nn.parameter import Parameter
from cgrad._grad_mode import no_grad

__all__ = ["LayerNorm", "BatchNorm1d"]


class LayerNorm(Module):
    """Normalizes over the trailing normalized_shape dims; weight ones and
    bias zeros of that shape when elementwise_affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None,
                 dtype=None):
        super().__init__()
        dt = factory_dtype("LayerNorm", device, dtype)
        dev = factory_device("LayerNorm", device)
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_size("LayerNorm", "normalized_shape", s) for s in normalized_shape)
        if not self.normalized_shape:
            raise ValueError("LayerNorm: normalized_shape must have at least one dimension")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(_core.empty(*self.normalized_shape, dtype=dt, device=dev))
            if bias:
                self.bias = Parameter(_core.empty(*self.normalized_shape, dtype=dt, device=dev))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.elementwise_affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(check_input("LayerNorm", input), self.normalized_shape, self.weight,
                            self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class BatchNorm1d(Module):
    """Batch normalization over (N, C) or (N, C, L): batch statistics in
    training (updating running_mean/running_var with momentum, or a
    cumulative average when momentum is None), running ones in eval."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        dt = factory_dtype("BatchNorm1d", device, dtype)
        dev = factory_device("BatchNorm1d", device)
        self.num_features = check_size("BatchNorm1d", "num_features", num_features)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"BatchNorm1d: momentum must be in [0, 1] or None, got {momentum}")
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(_core.empty(num_features, dtype=dt, device=dev))
            if bias:
                self.bias = Parameter(_core.empty(num_features, dtype=dt, device=dev))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", _core.zeros(num_features, dtype=dt, device=dev))
            self.register_buffer("running_var", _core.ones(num_features, dtype=dt, device=dev))
            self.register_buffer("num_batches_tracked", _core.tensor(0, dtype=_core.int64, device=dev))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            with no_grad():
                self.running_mean.zero_()
                self.running_var.fill_(1)
                self.num_batches_tracked.zero_()

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        check_input("BatchNorm1d", input)
        if input.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D or 3D input (got {input.ndim}D input of shape "
                             f"{tuple(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm1d: expected input with {self.num_features} features in dim 1, "
                             f"got input of shape {tuple(input.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            with no_grad():
                self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked.item()) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_running = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if use_running else None,
                            self.running_var if use_running else None, self.weight, self.bias,
                            bn_training, factor, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, missing_keys, error_msgs):
        # checkpoints from before num_batches_tracked existed lack it (PyTorch
        # loads them too): the current count is kept
        super()._load_from_state_dict(state_dict, prefix, missing_keys, error_msgs)
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and key in missing_keys:
            missing_keys.remove(key)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")
