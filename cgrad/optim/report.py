"""StepReport: what one optimizer step did (cgrad's own feature).

Every step() of a cgrad optimizer stores one in optimizer.last_report and
passes it to the hooks of optimizer.register_report_hook(fn). Values come
from work that already happened: clipping (cgrad.nn.utils.clip_grad_*_)
leaves its result for the next step of an optimizer owning those
parameters (a clip of device gradients is copied back only when a field
is read), a GradScaler sets loss_scale, nonfinite and skipped. The
gradients are measured by the step itself only when the optimizer was
built with report_grad_norm=True; otherwise fields nothing computed are
None.
"""
import dataclasses
import math
from typing import Any, List, NamedTuple, Optional

from cgrad import _core
from cgrad._pending import PENDING, Resolved


@dataclasses.dataclass
class StepReport:
    step: int                       # index of this step() call, from 0, skipped ones included
    skipped: bool = False           # the update did not run (GradScaler found inf/NaN)
    reason: Optional[str] = None    # why it was skipped
    grad_norm_before_clip: Optional[float] = Resolved(None)  # total norm clipping saw (or measured)
    grad_norm_after_clip: Optional[float] = Resolved(None)   # after clipping (total * coef, or measured)
    max_norm: Optional[float] = None
    clip_coef: Optional[float] = Resolved(None)  # the factor clip_grad_norm_ applied (1: untouched)
    clipped: bool = Resolved(False)  # clipping changed some gradient
    lr: List[Optional[float]] = dataclasses.field(default_factory=list)  # per param group
    loss_scale: Optional[float] = None  # GradScaler's scale used for this step
    nonfinite: Optional[int] = None     # NaN/inf gradient elements found
    clip: Any = None                # the ClipResult picked up, if any

    # A ClipResult whose values are still on the device: its clipping
    # fields (the four of a clip by norm, clipped of the others) are PENDING
    # until one is read, which copies them back (see cgrad._pending).
    _from_clip = None

    def _take_clip(self, clip):
        """Fills the clipping fields from clip, pending while clip is (a
        clip by value or AGC measured no norm: only clipped is pending)."""
        self.clip = clip
        self.max_norm = clip.max_norm
        if clip.pending:
            self.clipped = PENDING
            if clip.kind == "norm":
                self.clip_coef = PENDING
                self.grad_norm_before_clip = self.grad_norm_after_clip = PENDING
            self._from_clip = clip
        else:
            self._copy_clip(clip)

    def _copy_clip(self, clip):
        self.clipped = clip.clipped
        self.clip_coef = clip.clip_coef
        self.grad_norm_before_clip = clip.total_norm
        self.grad_norm_after_clip = clip.total_norm_after

    def _resolve(self):
        clip = self._from_clip
        if clip is None:
            return
        if clip.kind == "norm":
            self._copy_clip(clip)
        else:
            self.clipped = clip.clipped
        self._from_clip = None


class TensorStats(NamedTuple):
    """One pass over a float tensor (cg_tensor_stats): the sums leave the
    non-finite elements out, so one inf does not hide the rest."""
    sum_sq: float    # sum of x^2 over the finite elements (in double)
    max_abs: float   # max |x| over the finite elements (0 if none)
    nonfinite: int   # NaN and +-inf elements
    numel: int

    @property
    def norm(self):
        """L2 norm of the finite elements."""
        return math.sqrt(self.sum_sq)


def tensor_stats(t):
    """TensorStats of t (any strides, float32/float64) in one pass; e.g.
    per parameter gradient for a monitor: tensor_stats(p.grad)."""
    return TensorStats(*_core._tensor_stats(t))
