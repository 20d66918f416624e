"""cgrad.nn.functional: stateless nn ops with PyTorch's names and defaults."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = [
    "relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "softmax",
    "log_softmax", "linear", "conv2d", "max_pool2d", "avg_pool2d", "dropout", "embedding",
    "cross_entropy", "nll_loss", "mse_loss",
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
    """input @ weight.T + bias, weight of shape (out_features, in_features)."""
    out = input @ weight.t()
    return out if bias is None else out + bias


def dropout(input, p=0.5, training=True, inplace=False):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return _core.dropout(input, p, training)


def embedding(input, weight):
    return _core.embedding(input, weight)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nll_loss(input, target, reduction="mean"):
    """Negative log-likelihood of log-probabilities input (N, C) at int64 targets (N,)."""
    if input.ndim != 2:
        raise ValueError(f"nll_loss expects input of shape (N, C), got {input.shape}")
    target = target if isinstance(target, Tensor) else _core.tensor(target)
    if target.shape != (input.shape[0],):
        raise ValueError(f"nll_loss: target shape {target.shape} does not match input batch {input.shape[0]}")
    picked = input.gather(1, target.unsqueeze(1)).squeeze(1)
    return _reduce(-picked, reduction)


def cross_entropy(input, target, reduction="mean"):
    """log_softmax + nll_loss over class dim 1 (logits (N, C), int64 targets (N,))."""
    return nll_loss(input.log_softmax(1), target, reduction)


def mse_loss(input, target, reduction="mean"):
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    diff = input - target
    return _reduce(diff * diff, reduction)
