"""Losses of cgrad.nn.functional (PyTorch names, reductions and defaults)."""
from cgrad import _core
from cgrad._core import Tensor

__all__ = ["cross_entropy", "nll_loss", "mse_loss"]


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
