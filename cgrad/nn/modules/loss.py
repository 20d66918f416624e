"""Loss modules: thin Modules over cgrad.nn.functional's losses, with
PyTorch's constructor signatures (class weights are buffers, so they follow
module.to() and appear in state_dict, as in torch)."""
from cgrad._core import Tensor
from cgrad.nn import _functional_losses as F
from cgrad.nn.modules.module import Module

__all__ = [
    "L1Loss", "MSELoss", "HuberLoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss",
    "CrossEntropyLoss", "NLLLoss", "KLDivLoss", "FocalLoss", "DiceLoss",
]


class _Loss(Module):
    _allowed = F._REDUCTIONS

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        reduction = F._legacy_reduction(size_average, reduce, reduction, type(self).__name__)
        F._check_reduction(reduction, type(self).__name__, self._allowed)
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class L1Loss(_Loss):
    """mean |input - target| (see functional.l1_loss)."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class MSELoss(_Loss):
    """mean (input - target)^2 (see functional.mse_loss)."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class HuberLoss(_Loss):
    """Quadratic below delta, delta-scaled L1 above (see functional.huber_loss)."""

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        if not delta > 0:
            raise ValueError(f"HuberLoss: delta must be positive, got {delta!r}")
        self.delta = delta

    def forward(self, input, target):
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(_Loss):
    """Quadratic / beta below beta, L1 above (see functional.smooth_l1_loss)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        if not beta >= 0:
            raise ValueError(f"SmoothL1Loss: beta must be non-negative, got {beta!r}")
        self.beta = beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(_WeightedLoss):
    """Binary cross-entropy of probabilities (see functional.binary_cross_entropy)."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits, with pos_weight (see
    functional.binary_cross_entropy_with_logits)."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, weight=self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities (see functional.nll_loss)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_WeightedLoss):
    """log_softmax + NLL with class weights, ignore_index, label smoothing and
    class-probability targets (see functional.cross_entropy)."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, "
                             f"got {label_smoothing!r}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class KLDivLoss(_Loss):
    """Pointwise KL divergence of log-probabilities (see functional.kl_div)."""
    _allowed = F._REDUCTIONS + ("batchmean",)

    def __init__(self, size_average=None, reduce=None, reduction="mean", log_target=False):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class FocalLoss(_Loss):
    """Focal loss (Lin et al.), binary or multi-class; the rule is `mode`:

    mode='multiclass' (default): input logits (N, C, ...) and int64 class
      indices, functional.focal_loss; alpha None, a float, or per-class
      weights (C,) (a tensor is a buffer); ignore_index honoured.
    mode='binary': one logit per element and float targets in [0, 1] of the
      same shape, functional.sigmoid_focal_loss (torchvision's formula); alpha
      None means no alpha weighting (torchvision's alpha=-1), a float in
      [0, 1] weights positives by alpha and negatives by 1 - alpha (pass
      alpha=0.25 for torchvision's default).

    Unlike the functionals (torchvision's sigmoid_focal_loss defaults to
    'none'), the module reduces with 'mean' by default, as every torch loss."""

    def __init__(self, gamma=2.0, alpha=None, reduction="mean", mode="multiclass",
                 ignore_index=-100):
        super().__init__(reduction=reduction)
        if mode not in ("multiclass", "binary"):
            raise ValueError(f"FocalLoss: mode must be 'multiclass' or 'binary', got {mode!r}")
        if not gamma >= 0:
            raise ValueError(f"FocalLoss: gamma must be non-negative, got {gamma!r}")
        if mode == "binary" and alpha is not None and not (
                isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            raise ValueError(f"FocalLoss: binary mode takes alpha=None or a float in [0, 1], got {alpha!r}")
        self.gamma = gamma
        self.mode = mode
        self.ignore_index = ignore_index
        if isinstance(alpha, Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha

    def forward(self, input, target):
        if self.mode == "binary":
            alpha = -1.0 if self.alpha is None else float(self.alpha)
            return F.sigmoid_focal_loss(input, target, alpha=alpha, gamma=self.gamma,
                                        reduction=self.reduction)
        return F.focal_loss(input, target, gamma=self.gamma, alpha=self.alpha,
                            reduction=self.reduction, ignore_index=self.ignore_index)

    def extra_repr(self):
        return f"gamma={self.gamma}, mode={self.mode!r}, reduction={self.reduction!r}"


class DiceLoss(_Loss):
    """Soft Dice loss, 1 - (2 sum p t + smooth) / (sum p + sum t + smooth) per
    sample and class (see functional.dice_loss for shapes and modes)."""

    def __init__(self, smooth=1.0, reduction="mean", mode="multiclass", from_logits=False):
        super().__init__(reduction=reduction)
        if mode not in ("multiclass", "binary"):
            raise ValueError(f"DiceLoss: mode must be 'multiclass' or 'binary', got {mode!r}")
        if not smooth >= 0:
            raise ValueError(f"DiceLoss: smooth must be non-negative, got {smooth!r}")
        self.smooth = smooth
        self.mode = mode
        self.from_logits = from_logits

    def forward(self, input, target):
        return F.dice_loss(input, target, smooth=self.smooth, reduction=self.reduction,
                           mode=self.mode, from_logits=self.from_logits)

    def extra_repr(self):
        return (f"smooth={self.smooth}, mode={self.mode!r}, from_logits={self.from_logits}, "
                f"reduction={self.reduction!r}")
