"""cgrad.nn.functional: stateless nn ops with PyTorch's names and defaults."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = [
    "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "softmax",
    "log_softmax", "linear", "conv2d", "max_pool2d", "avg_pool2d", "dropout", "embedding",
]

conv2d = _core.conv2d
max_pool2d = _core.max_pool2d
avg_pool2d = _core.avg_pool2d


def relu(input, inplace=False):
    return input.relu()


def leaky_relu(input, negative_slope=0.01, inplace=False):
    return input.leaky_relu(negative_slope)


def elu(input, alpha=1.0, inplace=False):
    return input.elu(alpha)


def gelu(input, approximate="none"):
    return input.gelu(approximate)


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def softplus(input, beta=1.0, threshold=20.0):
    return input.softplus(beta, threshold)


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


def linear(input, weight, bias=None):
    """input @ weight.T + bias, weight of shape (out_features, in_features).

    A 2-D weight with a bias of shape (out_features,) or none is the C core's
    linear op: one GEMM onto the bias forward, one op backward (grad_fn
    "linear"). Other shapes (a 1-D weight, a bias that broadcasts, as
    PyTorch's addmm broadcasts it) are the matmul and the add."""
    if (isinstance(input, Tensor) and isinstance(weight, Tensor) and weight.ndim == 2
            and (bias is None or (isinstance(bias, Tensor)
                                  and bias.shape == (weight.shape[0],)))):
        return _core.linear(input, weight, bias)
    out = input @ weight.t()
    return out if bias is None else out + bias


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return _core.dropout(input, p, training)



# Normalization / recurrent cells and losses live in their own files; their
# names are part of this namespace, as in torch.nn.functional.
from cgrad.nn._functional_layers import *  # noqa: E402,F401,F403
from cgrad.nn._functional_layers import __all__ as _layers_all  # noqa: E402
from cgrad.nn._functional_losses import *  # noqa: E402,F401,F403
from cgrad.nn._functional_losses import __all__ as _losses_all  # noqa: E402

__all__ = __all__ + list(_layers_all) + list(_losses_all)
