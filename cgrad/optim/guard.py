"""Update guards (cgrad's own feature): skip an optimizer step whose loss or
global gradient norm is non-finite or an upward outlier, and count why.

    guard = UpdateGuard(opt)
    for xb, yb in loader:
        opt.zero_grad(); loss = loss_fn(model(xb), yb); loss.backward()
        clip_grad_norm_(model.parameters(), 1.0)   # optional; its norm is reused
        guard.step(loss)                           # in place of opt.step()

Outliers are judged with a robust z-score against the window of the last
`window` accepted steps (skipped steps never enter it, so one spike cannot
widen the band for the next):

    z = (x - median) / scale,  scale = 1.4826 * MAD    (MAD: median |x - median|)

1.4826 * MAD estimates the standard deviation of normal data, so
z_threshold=6 is "six sigma", but a few spikes in the window do not move it
as they would move a mean and standard deviation. When more than half the
window is one value (MAD = 0) the scale falls back to 1.253314 * the mean
absolute deviation (IBM's modified z-score), and never drops below
1e-6 * |median| so a flat window does not reject every tiny rise. Only
upward outliers are skipped (a sudden drop of the loss is good news). The
z test starts once `warmup` steps were accepted; non-finite values are
always skipped.

The gradient norm is the total norm clip_grad_norm_ measured this step for
these parameters (before clipping), or else get_total_norm over the
gradients (one pass). A skipped step leaves the parameters and optimizer
state untouched and records optimizer.last_report with skipped=True and
the reason, like a GradScaler skip. Note: a sustained legitimate rise (say
an lr increase) is rejected until reset() clears the windows.
"""
import collections
import dataclasses
import math
import numbers
from typing import Optional

import numpy as np

from cgrad._core import Tensor
from cgrad.nn.utils import clip_grad as _clip

__all__ = ["UpdateGuard", "GuardDecision"]

REASONS = ("nonfinite_loss", "nonfinite_grad_norm", "loss_outlier", "grad_norm_outlier")
_MAD_TO_SIGMA = 1.4826
_MEANAD_TO_SIGMA = 1.253314
_REL_FLOOR = 1e-6


@dataclasses.dataclass
class GuardDecision:
    """What the guard decided for one step."""
    step: int                 # guard.step() calls before this one
    accepted: bool
    kind: Optional[str]       # one of REASONS when skipped
    reason: Optional[str]     # human-readable, also in the StepReport
    loss: Optional[float]
    grad_norm: Optional[float]
    loss_z: Optional[float] = None
    grad_norm_z: Optional[float] = None


def robust_z(x, window):
    """(x - median) / robust scale of `window` (see the module docstring)."""
    a = np.asarray(window, dtype=np.float64)
    med = float(np.median(a))
    dev = np.abs(a - med)
    scale = _MAD_TO_SIGMA * float(np.median(dev))
    if scale == 0.0:
        scale = _MEANAD_TO_SIGMA * float(dev.mean())
    scale = max(scale, _REL_FLOOR * abs(med), 1e-300)
    return (x - med) / scale


def _int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
        raise ValueError(f"UpdateGuard: {name} must be an integer >= {low}, got {v!r}")
    return int(v)


class UpdateGuard:
    """UpdateGuard(optimizer, z_threshold=6.0, window=100, warmup=20,
    check_loss=True, check_grad_norm=True, norm_type=2.0).

    step(loss=None) runs optimizer.step() unless the step is rejected;
    returns step()'s result, or None when skipped (like GradScaler.step).
    skipped: the total of skipped steps; counts: skips per reason kind
    (nonfinite_loss, nonfinite_grad_norm, loss_outlier, grad_norm_outlier);
    last: the GuardDecision of the latest step; decisions: the latest 1000
    skips.

    With a GradScaler, call scaler.unscale_(optimizer) before guard.step(loss)
    (the norm is then the true one; an inf/NaN gradient is skipped as
    nonfinite_grad_norm) and scaler.update() after it as usual: the scaler
    saw the non-finite values while unscaling and backs off.
    """

    def __init__(self, optimizer, z_threshold=6.0, window=100, warmup=20, check_loss=True,
                 check_grad_norm=True, norm_type=2.0):
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "_skip_step"):
            raise TypeError(f"UpdateGuard: optimizer must be a cgrad.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        if isinstance(z_threshold, bool) or not isinstance(z_threshold, numbers.Real) or \
                not z_threshold > 0:
            raise ValueError(f"UpdateGuard: z_threshold must be a positive number (inf disables "
                             f"the outlier test), got {z_threshold!r}")
        self.window = _int("window", window, 2)
        self.warmup = _int("warmup", warmup, 2)
        if self.warmup > self.window:
            raise ValueError(f"UpdateGuard: warmup ({warmup}) cannot exceed window ({window}): "
                             f"the outlier test would never start")
        self.z_threshold = float(z_threshold)
        self.check_loss = bool(check_loss)
        self.check_grad_norm = bool(check_grad_norm)
        self.norm_type = _clip._norm_type(norm_type, "UpdateGuard")
        self.optimizer = optimizer
        self.loss_window = collections.deque(maxlen=self.window)
        self.grad_norm_window = collections.deque(maxlen=self.window)
        self.counts = dict.fromkeys(REASONS, 0)
        self.skipped = 0
        self.accepted = 0
        self.decisions = collections.deque(maxlen=1000)  # the latest skipped steps
        self.last = None

    # ---------------------------------------------------------- measure
    def _loss_value(self, loss):
        if loss is None:
            if self.check_loss:
                raise ValueError("UpdateGuard.step: check_loss=True needs the loss, got None "
                                 "(pass guard.step(loss) or build the guard with check_loss=False)")
            return None
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"UpdateGuard.step: loss must be a single value, got a tensor "
                                 f"of shape {tuple(loss.shape)}")
            return float(loss.item())
        if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
            raise TypeError(f"UpdateGuard.step: loss must be a Tensor or a number, got {loss!r}")
        return float(loss)

    def _params(self):
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def _grad_norm(self):
        """This step's clip_grad_norm_ total (not consumed: the optimizer's
        report still takes it), else one get_total_norm pass."""
        params = self._params()
        ids = {id(p) for p in params}
        seen = getattr(self.optimizer, "_clip_serial_seen", None)
        if seen is not None:
            for res in reversed(_clip._recent()):
                if res.serial <= seen:
                    break
                if res.kind == "norm" and not res.taken and res.total_norm is not None \
                        and not ids.isdisjoint(res.param_ids):
                    return float(res.total_norm)
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return None
        return float(_clip.get_total_norm(grads, self.norm_type).item())

    # ------------------------------------------------------------- step
    def _judge(self, loss, norm):
        """(kind, reason, loss_z, norm_z); kind None means accept."""
        if loss is not None and not math.isfinite(loss):
            return "nonfinite_loss", f"non-finite loss ({loss})", None, None
        if norm is not None and not math.isfinite(norm):
            return "nonfinite_grad_norm", f"non-finite gradient norm ({norm})", None, None
        loss_z = norm_z = None
        if loss is not None and len(self.loss_window) >= self.warmup:
            loss_z = robust_z(loss, self.loss_window)
        if norm is not None and len(self.grad_norm_window) >= self.warmup:
            norm_z = robust_z(norm, self.grad_norm_window)
        if loss_z is not None and loss_z > self.z_threshold:
            return ("loss_outlier", f"loss {loss:.6g} is an outlier (robust z {loss_z:.3g} > "
                    f"{self.z_threshold:g})", loss_z, norm_z)
        if norm_z is not None and norm_z > self.z_threshold:
            return ("grad_norm_outlier", f"gradient norm {norm:.6g} is an outlier (robust z "
                    f"{norm_z:.3g} > {self.z_threshold:g})", loss_z, norm_z)
        return None, None, loss_z, norm_z

    def check(self, loss=None):
        """The GuardDecision for the current gradients and loss, without
        stepping or recording anything."""
        loss_v = self._loss_value(loss) if self.check_loss else None
        norm = self._grad_norm() if self.check_grad_norm else None
        kind, reason, lz, nz = self._judge(loss_v, norm)
        return GuardDecision(self.accepted + self.skipped, kind is None, kind, reason, loss_v,
                             norm, lz, nz)

    def step(self, loss=None, *args, **kwargs):
        """optimizer.step(*args, **kwargs) unless the loss or the gradient
        norm is rejected; None and a skipped StepReport then."""
        decision = self.check(loss)
        self.last = decision
        if not decision.accepted:
            self.skipped += 1
            self.counts[decision.kind] += 1
            self.decisions.append(decision)
            self.optimizer._skip_step(decision.reason, grad_norm=decision.grad_norm)
            return None
        if decision.grad_norm is not None and hasattr(self.optimizer, "_report_extra"):
            self.optimizer._report_extra["grad_norm"] = decision.grad_norm
        out = self.optimizer.step(*args, **kwargs)
        self.accepted += 1
        if decision.loss is not None:
            self.loss_window.append(decision.loss)
        if decision.grad_norm is not None:
            self.grad_norm_window.append(decision.grad_norm)
        return out

    def reset(self):
        """Empties the windows (the warmup starts again); counts stay."""
        self.loss_window.clear()
        self.grad_norm_window.clear()

    # ------------------------------------------------------------ state
    def state_dict(self):
        return {"loss_window": list(self.loss_window),
                "grad_norm_window": list(self.grad_norm_window),
                "counts": dict(self.counts), "skipped": self.skipped, "accepted": self.accepted}

    def load_state_dict(self, state):
        if not isinstance(state, dict) or "loss_window" not in state or \
                "grad_norm_window" not in state:
            raise ValueError(f"UpdateGuard.load_state_dict: expected a dict with 'loss_window' and "
                             f"'grad_norm_window', got {state!r}")
        self.loss_window = collections.deque((float(v) for v in state["loss_window"]),
                                             maxlen=self.window)
        self.grad_norm_window = collections.deque((float(v) for v in state["grad_norm_window"]),
                                                  maxlen=self.window)
        self.counts = dict.fromkeys(REASONS, 0)
        self.counts.update({k: int(v) for k, v in state.get("counts", {}).items() if k in REASONS})
        self.skipped = int(state.get("skipped", sum(self.counts.values())))
        self.accepted = int(state.get("accepted", 0))

    def __repr__(self):
        return (f"UpdateGuard(z_threshold={self.z_threshold:g}, window={self.window}, "
                f"warmup={self.warmup}, accepted={self.accepted}, skipped={self.skipped})")
