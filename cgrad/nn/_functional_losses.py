"""Losses of cgrad.nn.functional: PyTorch's names, signatures, defaults and
numerics, plus cgrad's focal and Dice losses.

Every loss is written with differentiable cgrad ops (so create_graph and
gradcheck work through it), except binary_cross_entropy, whose backward is
PyTorch's formula (x - t) / max(x (1 - x), 1e-12) so that probabilities of
exactly 0 or 1 give the same finite gradients as PyTorch.

Stable forms: log-softmax for cross-entropy, softplus (no threshold) for
log-sigmoid, logs clamped at -100 for BCE and never evaluated at 0 where a
gradient flows (a `where` over log(0) would send 0 * inf = NaN backwards).
"""
import warnings

import numpy as np

from cgrad import _core
from cgrad._core import Function, Tensor

__all__ = [
    "l1_loss", "mse_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy", "kl_div",
    "sigmoid_focal_loss", "focal_loss", "dice_loss",
]

_REDUCTIONS = ("none", "mean", "sum")
_INF = float("inf")
# torch's BCE backward denominator floor: the float constant 1e-12f, widened
_BCE_EPS = float(np.float32(1e-12))


# ------------------------------------------------------------------ helpers
def _legacy_reduction(size_average, reduce, reduction, fn):
    """PyTorch's deprecated size_average/reduce pair, mapped as torch does."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(f"{fn}: size_average and reduce are deprecated, use reduction="
                  f"'none' | 'mean' | 'sum' instead", stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        return "mean"
    return "sum" if reduce else "none"


def _check_reduction(reduction, fn, allowed=_REDUCTIONS):
    if reduction not in allowed:
        names = ", ".join(repr(r) for r in allowed)
        raise ValueError(f"{fn}: reduction must be one of {names}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _float_input(x, fn, name="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a cgrad.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {x.dtype!r}")
    return x


def _host(t):
    """t's values as a NumPy array, for the argument checks that PyTorch
    does with device-side asserts (a copy for a tensor on 'cuda')."""
    return t.detach().cpu().numpy()  # cpu() is t itself on the host


def _tensor_arg(x, fn, name, like):
    """A tensor argument (target, weight); numbers, lists and arrays are
    converted (floats take like's dtype)."""
    if x is None or isinstance(x, Tensor):
        return x
    try:
        arr = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise TypeError(f"{fn}: {name} must be a Tensor, got {type(x).__name__}") from e
    if arr.dtype.kind == "f":
        return _core.tensor(arr, dtype=like.dtype, device=like.device)
    if arr.dtype.kind in "iub":
        return _core.tensor(arr, device=like.device)
    raise TypeError(f"{fn}: {name} must be a Tensor, got {type(x).__name__}")


def _float_target(target, input, fn, name="target"):
    target = _tensor_arg(target, fn, name, input)
    if not target.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got {target.dtype!r}")
    return target


def _broadcast_pair(input, target, fn):
    """Regression losses broadcast a mismatched target, with PyTorch's warning."""
    if input.shape != target.shape:
        try:
            np.broadcast_shapes(input.shape, target.shape)
        except ValueError:
            raise ValueError(f"{fn}: input shape {input.shape} and target shape {target.shape} "
                             f"cannot be broadcast together") from None
        warnings.warn(f"{fn}: using a target size {target.shape} that is different to the "
                      f"input size {input.shape}. This will likely lead to incorrect results "
                      f"due to broadcasting. Please ensure they have the same size.", stacklevel=3)


def _elementwise_weight(loss, weight, input, reduction, fn, mean_by_weight):
    """torch 2.x's optional per-element weight of l1/mse/huber."""
    if weight is None:
        return _reduce(loss, reduction)
    weight = _float_target(weight, input, fn, "weight")
    if weight.shape != input.shape:
        raise ValueError(f"{fn}: weight shape {weight.shape} must equal the input shape {input.shape}")
    loss = loss * weight
    if reduction == "mean" and mean_by_weight:
        return loss.sum() / weight.sum()
    return _reduce(loss, reduction)


def _safe_log(x, clamp=-100.0):
    """max(log(x), clamp) whose gradient is 1/x above the clamp and exactly 0
    below it (log is only evaluated where x is in range, never at 0)."""
    keep = x > float(np.exp(clamp))
    return _core.where(keep, _core.where(keep, x, 1.0).log(), clamp)


def _log1m(x):
    """log(1 - x), accurate for small x (log1p's correction: w = 1 - x rounds,
    log(w) * (-x) / (w - 1) undoes the rounding). Forward only: the unused
    branch may be 0/0."""
    w = 1.0 - x
    return _core.where(w == 1.0, -x, w.log() * (-x) / (w - 1.0))


# ------------------------------------------------------------------ regression
def l1_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """mean |input - target| (PyTorch: optional per-element weight; the
    weighted mean divides by weight.sum())."""
    fn = "l1_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    _broadcast_pair(input, target, fn)
    return _elementwise_weight((input - target).abs(), weight, input, reduction, fn, True)


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """mean (input - target)^2 (weighted mean divides by weight.sum(), as torch)."""
    fn = "mse_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    _broadcast_pair(input, target, fn)
    diff = input - target
    return _elementwise_weight(diff * diff, weight, input, reduction, fn, True)


def _piecewise_quadratic(diff, threshold, quad_scale, lin_scale):
    """quad_scale * 0.5 d^2 where |d| < threshold, lin_scale * (|d| - threshold/2) elsewhere."""
    a = diff.abs()
    return _core.where(a < threshold, (diff * diff) * (0.5 * quad_scale),
                       (a - 0.5 * threshold) * lin_scale)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """0.5 d^2 for |d| < delta, delta (|d| - delta/2) otherwise, d = input - target.
    With weight, 'mean' is the plain mean of the weighted losses (as torch)."""
    fn = "huber_loss"
    _check_reduction(reduction, fn)
    if not delta > 0:
        raise ValueError(f"{fn}: delta must be positive, got {delta!r}")
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    _broadcast_pair(input, target, fn)
    loss = _piecewise_quadratic(input - target, float(delta), 1.0, float(delta))
    return _elementwise_weight(loss, weight, input, reduction, fn, False)


def smooth_l1_loss(input, target, size_average=None, reduce=None, reduction="mean", beta=1.0):
    """0.5 d^2 / beta for |d| < beta, |d| - beta/2 otherwise; beta = 0 is l1_loss."""
    fn = "smooth_l1_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    if not beta >= 0:
        raise ValueError(f"{fn}: beta must be non-negative, got {beta!r}")
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    _broadcast_pair(input, target, fn)
    diff = input - target
    if beta == 0:
        return _reduce(diff.abs(), reduction)
    return _reduce(_piecewise_quadratic(diff, float(beta), 1.0 / beta, 1.0), reduction)


# ------------------------------------------------------------------ binary
class _BinaryCrossEntropy(Function):
    """Elementwise -w (t log x + (1 - t) log(1 - x)), logs clamped at -100,
    with PyTorch's backward (finite at x = 0 and x = 1)."""

    @staticmethod
    def forward(ctx, x, t, w):
        ctx.save_for_backward(x, t, w)
        loss = -(t * x.log().clamp(min=-100.0) + (1.0 - t) * _log1m(x).clamp(min=-100.0))
        return loss if w is None else loss * w

    @staticmethod
    def backward(ctx, g):
        x, t, w = ctx.saved_tensors
        gs = g * w if w is not None else g
        gx = gt = gw = None
        if ctx.needs_input_grad[0]:
            gx = gs * (x - t) / (x * (1.0 - x)).clamp(min=_BCE_EPS)
        if ctx.needs_input_grad[1]:
            # the derivative of the clamped loss (torch differentiates the
            # unclamped one and gives +-inf at x = 0 or 1)
            gt = gs * (_safe_log(1.0 - x) - _safe_log(x))
        if ctx.needs_input_grad[2]:
            gw = g * -(t * _safe_log(x) + (1.0 - t) * _safe_log(1.0 - x))
        return gx, gt, gw


def binary_cross_entropy(input, target, weight=None, size_average=None, reduce=None,
                         reduction="mean"):
    """BCE of probabilities input in [0, 1] against targets in [0, 1]; logs
    clamped at -100 (so a probability of 0 gives a loss of 100, not inf)."""
    fn = "binary_cross_entropy"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    if target.shape != input.shape:
        raise ValueError(f"{fn}: target size {target.shape} must be the same as the input size {input.shape}")
    for name, v in (("input", input), ("target", target)):
        if v.device != "cpu":  # counted on the device: one number comes back, not the tensor
            d = v.detach()
            if not (~((d >= 0) & (d <= 1))).sum().item():
                continue
        arr = _host(v)
        bad = ~((arr >= 0) & (arr <= 1))
        if bad.any():
            raise ValueError(f"{fn}: all elements of {name} should be between 0 and 1, "
                             f"got {float(arr[bad].flat[0])!r}")
    if weight is not None:
        weight = _float_target(weight, input, fn, "weight")
        _check_broadcast(weight, input, fn, "weight")
        weight = weight.expand(*input.shape)
    return _reduce(_BinaryCrossEntropy.apply(input, target, weight), reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, size_average=None, reduce=None,
                                     reduction="mean", pos_weight=None):
    """BCE of sigmoid(input), computed from logits as torch does:
    (1 - t) x + (1 + (pos_weight - 1) t) softplus(-x), times weight.
    Finite for any finite logit (softplus is max(z, 0) + log1p(exp(-|z|)))."""
    fn = "binary_cross_entropy_with_logits"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    if target.shape != input.shape:
        raise ValueError(f"{fn}: target size {target.shape} must be the same as the input size {input.shape}")
    neg_log_sigmoid = (-input).softplus(1.0, _INF)
    if pos_weight is not None:
        pos_weight = _float_target(pos_weight, input, fn, "pos_weight")
        _check_broadcast(pos_weight, input, fn, "pos_weight")
        neg_log_sigmoid = neg_log_sigmoid * ((pos_weight - 1.0) * target + 1.0)
    loss = (1.0 - target) * input + neg_log_sigmoid
    if weight is not None:
        weight = _float_target(weight, input, fn, "weight")
        _check_broadcast(weight, input, fn, "weight")
        loss = loss * weight
    return _reduce(loss, reduction)


def _check_broadcast(t, input, fn, name):
    try:
        ok = np.broadcast_shapes(t.shape, input.shape) == input.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{fn}: {name} shape {t.shape} cannot be broadcast to the input shape {input.shape}")


# ------------------------------------------------------------------ classification
def _class_layout(input, fn):
    """(input as (N, C, d...), number of classes, was 1-D)."""
    if input.ndim == 0:
        raise ValueError(f"{fn}: input must have a class dimension, got a 0-d tensor")
    if input.ndim == 1:
        return input.unsqueeze(0), input.shape[0], True
    return input, input.shape[1], False


def _index_target(target, input2, unbatched, ignore_index, fn, check_values=True):
    """Checked int64 class-index target shaped like input2 without dim 1, and
    whether any entry is ignore_index (_index_values; None when check_values
    is False: the C core's nll_loss checks the values itself)."""
    if not isinstance(target, Tensor):
        target = _tensor_arg(target, fn, "target", input2)
    if target.dtype is not _core.int64:
        raise TypeError(f"{fn}: class-index target must be int64, got {target.dtype!r}")
    if unbatched:
        if target.ndim != 0:
            raise ValueError(f"{fn}: a 1-D input (C,) needs a 0-d target, got shape {target.shape}")
        target = target.reshape(1)
    expected = input2.shape[:1] + input2.shape[2:]
    if target.shape != expected:
        raise ValueError(f"{fn}: target shape {target.shape} does not match input shape "
                         f"{input2.shape} (expected {expected})")
    if not check_values:
        return target, None
    return target, _index_values(target, input2.shape[1], ignore_index, fn)


def _index_values(target, n_classes, ignore_index, fn):
    """Whether any entry of a class-index target is ignore_index; IndexError
    for one outside [0, n_classes) (a device target is copied to the host)."""
    arr = _host(target)
    ignored = arr == ignore_index
    bad = ~ignored & ((arr < 0) | (arr >= n_classes))
    if bad.any():
        raise IndexError(f"{fn}: target {int(arr[bad].flat[0])} is out of bounds for "
                         f"{n_classes} classes (ignore_index={ignore_index})")
    return bool(ignored.any())


def _class_weight(weight, n_classes, input, fn, name="weight"):
    if weight is None:
        return None
    weight = _float_target(weight, input, fn, name)
    if weight.shape != (n_classes,):
        raise ValueError(f"{fn}: {name} must have shape ({n_classes},), one entry per class, "
                         f"got {weight.shape}")
    return weight if weight.dtype is input.dtype else weight.to(input.dtype)


def _target_weights(target, weight, ignore_index, has_ignored, dtype):
    """Per-target weight w[t] (0 where ignored) and the index safe to gather
    with; None weights when every target counts 1."""
    safe = _core.where(target == ignore_index, 0, target) if has_ignored else target
    w = None
    if weight is not None:
        w = weight.index_select(0, safe.reshape(-1)).reshape(*target.shape)
    if has_ignored:
        keep = (target != ignore_index).to(dtype)
        w = keep if w is None else w * keep
    return safe, w


def _nll(logp2, target, weight, ignore_index, reduction, fn):
    """nll_loss on (N, C, d...) log-probabilities and a target checked but
    for its values: the C core's nll_loss op (one op each way, the values
    checked there), or, for a weight that requires grad (the op gives it
    none, as PyTorch's), the composition of differentiable ops."""
    if weight is None or not weight.requires_grad:
        return _core.nll_loss(logp2, target, weight, ignore_index, reduction)
    has_ignored = _index_values(target, logp2.shape[1], ignore_index, fn)
    safe, w = _target_weights(target, weight, ignore_index, has_ignored, logp2.dtype)
    loss = -logp2.gather(1, safe.unsqueeze(1)).squeeze(1) * w
    return loss.sum() / w.sum() if reduction == "mean" else _reduce(loss, reduction)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """-input[n, target[n], d...] * weight[target], input log-probabilities of
    shape (C,), (N, C) or (N, C, d1, ...). 'mean' divides by the summed weights
    of the non-ignored targets (as torch; NaN when all are ignored)."""
    fn = "nll_loss"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    input2, n_classes, unbatched = _class_layout(input, fn)
    weight = _class_weight(weight, n_classes, input, fn)
    target, _ = _index_target(target, input2, unbatched, ignore_index, fn, check_values=False)
    loss = _nll(input2, target, weight, ignore_index, reduction, fn)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """log_softmax over the class dim + nll_loss, with PyTorch's options.

    input: logits (C,), (N, C) or (N, C, d1, ...). target: int64 class
    indices ((), (N,) or (N, d1, ...)) or class probabilities (the input's
    shape, floating). label_smoothing eps mixes in the uniform distribution:
    (1 - eps) * nll + eps / C * sum_c(-w_c log p_c), normalised like nll."""
    fn = "cross_entropy"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn)
    input = _float_input(input, fn)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be between 0.0 and 1.0, got {label_smoothing!r}")
    input2, n_classes, unbatched = _class_layout(input, fn)
    weight = _class_weight(weight, n_classes, input, fn)
    target = _tensor_arg(target, fn, "target", input)
    logp = input2.log_softmax(1)
    # class weights broadcast over (N, C, d...)
    w_b = None if weight is None else weight.reshape(*([1, n_classes] + [1] * (input2.ndim - 2)))

    if target.is_floating_point():
        if target.shape != input.shape:
            raise TypeError(f"{fn}: a {target.dtype.name} target of shape {target.shape} is neither "
                            f"class indices (those must be int64) nor class probabilities "
                            f"(those must have the input's shape {input.shape})")
        if ignore_index != -100:
            raise ValueError(f"{fn}: ignore_index is not supported for class-probability targets "
                             f"(got ignore_index={ignore_index})")
        t2 = target.unsqueeze(0) if unbatched else target
        if label_smoothing > 0:
            t2 = t2 * (1.0 - label_smoothing) + label_smoothing / n_classes
        prod = logp * t2 if w_b is None else logp * t2 * w_b
        if reduction == "none":
            loss = -prod.sum(1)
            return loss.reshape(()) if unbatched else loss
        total = -prod.sum()
        if reduction == "sum":
            return total
        return total / (input.numel() // n_classes) if input.numel() else total * float("nan")

    target, _ = _index_target(target, input2, unbatched, ignore_index, fn, check_values=False)
    nll = _nll(logp, target, weight, ignore_index, reduction, fn)
    if label_smoothing > 0:
        # nll checked the target's values; normalised by the same weights.
        # Ignored entries are masked whether or not there are any: finding
        # out would read the target (on a device, a copy back: a sync), and
        # a mask of ones changes no value.
        _, w_t = _target_weights(target, weight, ignore_index, True, logp.dtype)
        smooth = -(logp.sum(1) if w_b is None else (logp * w_b).sum(1))
        smooth = smooth * (target != ignore_index).to(logp.dtype)
        if reduction == "mean":
            smooth = smooth.sum() / w_t.sum()
        else:
            smooth = _reduce(smooth, reduction)
        nll = nll * (1.0 - label_smoothing) + smooth * (label_smoothing / n_classes)
    return nll.reshape(()) if unbatched and reduction == "none" else nll


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """Pointwise KL term target * (log target - input), input log-probabilities;
    0 where target == 0 (xlogy). log_target: target given as log-probabilities.
    'batchmean' divides the sum by the batch size (the true KL divergence)."""
    fn = "kl_div"
    reduction = _legacy_reduction(size_average, reduce, reduction, fn)
    _check_reduction(reduction, fn, _REDUCTIONS + ("batchmean",))
    if reduction == "mean" and size_average is None and reduce is None:
        warnings.warn("kl_div: reduction='mean' divides the total loss by both the batch size "
                      "and the support size; 'batchmean' divides only by the batch size and "
                      "matches the KL divergence's definition.", stacklevel=2)
    input = _float_input(input, fn)
    target = _float_target(target, input, fn)
    _broadcast_pair(input, target, fn)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        zero = target == 0.0
        xlogx = _core.where(zero, 0.0, target * _core.where(zero, 1.0, target).log())
        loss = xlogx - target * input
    if reduction == "batchmean":
        total = loss.sum()
        return total / input.shape[0] if input.ndim else total
    return _reduce(loss, reduction)


# ------------------------------------------------------------------ focal
def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss (Lin et al., RetinaNet):

        p = sigmoid(x), ce = bce_with_logits(x, t), p_t = p t + (1 - p)(1 - t)
        loss = alpha_t * ce * (1 - p_t)^gamma, alpha_t = alpha t + (1 - alpha)(1 - t)

    alpha < 0 disables the alpha weighting. Default reduction 'none', as torchvision."""
    fn = "sigmoid_focal_loss"
    _check_reduction(reduction, fn)
    if not gamma >= 0:
        raise ValueError(f"{fn}: gamma must be non-negative, got {gamma!r}")
    inputs = _float_input(inputs, fn, "inputs")
    targets = _float_target(targets, inputs, fn, "targets")
    ce = binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    loss = ce
    if gamma != 0:  # (1 - p_t)**0 == 1, also where 1 - p_t == 0
        p = inputs.sigmoid()
        p_t = p * targets + (1.0 - p) * (1.0 - targets)
        loss = ce * (1.0 - p_t) ** float(gamma)
    if alpha >= 0:
        loss = (targets * alpha + (1.0 - targets) * (1.0 - alpha)) * loss
    return _reduce(loss, reduction)


def focal_loss(input, target, gamma=2.0, alpha=None, reduction="mean", ignore_index=-100):
    """Multi-class focal loss on logits (C,), (N, C) or (N, C, d1, ...) with
    int64 class-index targets:

        loss_i = -alpha[t_i] * (1 - p_i)^gamma * log p_i,  log p_i = log_softmax(input)[t_i]

    alpha: None (no weighting), a float (the same for every class), or per-class
    weights of shape (C,). 'mean' averages over the non-ignored targets (the
    focal-loss paper's normalisation; not divided by the alpha sum, unlike a
    weighted cross_entropy). gamma = 0 with alpha=None is cross_entropy."""
    fn = "focal_loss"
    _check_reduction(reduction, fn)
    if not gamma >= 0:
        raise ValueError(f"{fn}: gamma must be non-negative, got {gamma!r}")
    input = _float_input(input, fn)
    input2, n_classes, unbatched = _class_layout(input, fn)
    if alpha is not None and not isinstance(alpha, Tensor) and np.ndim(alpha) == 0:
        alpha = _core.full((n_classes,), float(alpha), dtype=input.dtype, device=input.device)
    alpha = _class_weight(alpha, n_classes, input, fn, "alpha")
    target, has_ignored = _index_target(target, input2, unbatched, ignore_index, fn)
    safe, w = _target_weights(target, alpha, ignore_index, has_ignored, input.dtype)
    logp_t = input2.log_softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)
    loss = -logp_t
    if gamma != 0:
        loss = loss * (1.0 - logp_t.exp()).clamp(min=0.0) ** float(gamma)
    if w is not None:
        loss = loss * w
    if reduction == "mean":
        count = (target != ignore_index).sum().item() if has_ignored else target.numel()
        loss = loss.sum() / float(count) if count else loss.sum() * float("nan")
    else:
        loss = _reduce(loss, reduction)
    return loss.reshape(()) if unbatched and reduction == "none" else loss


# ------------------------------------------------------------------ dice
def dice_loss(input, target, smooth=1.0, reduction="mean", mode="multiclass", from_logits=False):
    """Soft Dice loss, per sample n and class c:

        dice[n, c] = (2 * sum_s p t + smooth) / (sum_s p + sum_s t + smooth)
        loss[n, c] = 1 - dice[n, c]

    the sums running over the spatial positions s.

    mode='multiclass': input (N, C, d1, ...) class probabilities (softmax over
      dim 1 first if from_logits); target either int64 class indices
      (N, d1, ...), one-hot encoded, or a float (soft / one-hot) tensor of the
      input's shape. reduction 'none' gives the (N, C) matrix.
    mode='binary': input (N, d1, ...) foreground probabilities (sigmoid first
      if from_logits), target of the same shape in [0, 1]; each sample is one
      mask, reduction 'none' gives (N,).
    'mean' / 'sum' reduce over every (n, c). smooth > 0 keeps empty masks
    finite (loss 0 when both prediction and target are empty)."""
    fn = "dice_loss"
    _check_reduction(reduction, fn)
    if mode not in ("multiclass", "binary"):
        raise ValueError(f"{fn}: mode must be 'multiclass' or 'binary', got {mode!r}")
    if not smooth >= 0:
        raise ValueError(f"{fn}: smooth must be non-negative, got {smooth!r}")
    input = _float_input(input, fn)
    target = _tensor_arg(target, fn, "target", input)
    if mode == "binary":
        if input.ndim < 1:
            raise ValueError(f"{fn}: binary input must be (N, d1, ...), got a 0-d tensor")
        if target.shape != input.shape:
            raise ValueError(f"{fn}: binary target shape {target.shape} must equal the input shape {input.shape}")
        probs = input.sigmoid() if from_logits else input
        # one mask per sample: (N, 1, prod(d))
        probs = probs.reshape(input.shape[0], 1, -1)
        onehot = target.to(input.dtype).reshape(input.shape[0], 1, -1)
    else:
        if input.ndim < 2:
            raise ValueError(f"{fn}: multiclass input must be (N, C, d1, ...), got shape {input.shape}")
        n_classes = input.shape[1]
        probs = input.softmax(1) if from_logits else input
        if target.dtype is _core.int64:
            target, _ = _index_target(target, input, False, -100, fn)
            arr = _host(target)
            if (arr < 0).any():
                raise IndexError(f"{fn}: target {int(arr[arr < 0].flat[0])} is out of bounds for "
                                 f"{n_classes} classes")
            classes = _core.arange(n_classes, device=input.device).reshape(*([1, n_classes] + [1] * (input.ndim - 2)))
            onehot = (target.unsqueeze(1) == classes).to(input.dtype)
        elif target.is_floating_point():
            if target.shape != input.shape:
                raise ValueError(f"{fn}: a float target must have the input's shape {input.shape}, "
                                 f"got {target.shape}")
            onehot = target
        else:
            raise TypeError(f"{fn}: target must be int64 class indices or floating, got {target.dtype!r}")
        probs = probs.reshape(input.shape[0], n_classes, -1)
        onehot = onehot.reshape(input.shape[0], n_classes, -1)
    inter = (probs * onehot).sum(2)
    denom = probs.sum(2) + onehot.sum(2)
    loss = 1.0 - (inter * 2.0 + float(smooth)) / (denom + float(smooth))
    if mode == "binary":
        loss = loss.reshape(input.shape[0])
    return _reduce(loss, reduction)
