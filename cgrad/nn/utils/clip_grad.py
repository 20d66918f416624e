"""Gradient clipping: clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_,
get_total_norm (PyTorch's torch.nn.utils) and unit-wise adaptive clipping
(clip_grad_agc_), over the C kernels in src_c/clip.c.

Every clip records a ClipResult (whether it clipped, the coefficient, the
norms); cgrad.nn.utils.last_clip_result() returns the latest one of this
thread, and the next step() of an optimizer owning any of the clipped
parameters copies it into its StepReport. A clip of gradients on one
device leaves what it measured there (clip_grad_norm_'s norm and
coefficient, the others' counts; as PyTorch: no wait for the GPU): the
result's fields are copied back when first read.

Row-sparse gradients (Embedding(sparse=True)) are accepted by the norm and
value clips without densifying: the C kernels coalesce them in place (same
tensor, duplicate rows summed) and read/write only the stored rows.
"""
import dataclasses
import itertools
import math
import numbers
import threading
from typing import Optional

from cgrad import _core
from cgrad._core import Tensor, tensor
from cgrad._grad_mode import no_grad
from cgrad._pending import PENDING, Resolved


@dataclasses.dataclass
class ClipResult:
    kind: str                      # "norm", "value" or "agc"
    clipped: bool = Resolved()     # some gradient was changed
    total_norm: Optional[float] = Resolved(None)        # before clipping ("norm")
    total_norm_after: Optional[float] = Resolved(None)  # total_norm * clip_coef ("norm")
    max_norm: Optional[float] = None
    norm_type: Optional[float] = None
    clip_coef: Optional[float] = Resolved(None)  # factor applied, min(max/(total+1e-6), 1)
    clip_value: Optional[float] = None        # "value"
    n_clipped: Optional[int] = Resolved(None)  # elements ("value") or units ("agc") changed
    n_total: Optional[int] = None    # elements ("value") or units ("agc") looked at
    serial: int = -1
    taken: bool = dataclasses.field(default=False, repr=False)  # reported by a step already
    param_ids: frozenset = dataclasses.field(default_factory=frozenset, repr=False)

    # A clip on a device: what it measured still there, its fields PENDING
    # until one is read: clip_grad_norm_'s float64 [2] (total_norm,
    # clip_coef), or the int64 0-d count of clip_grad_value_ / clip_grad_agc_
    _on_device = None

    @property
    def pending(self):
        """What the clip measured is still on the device (reading clipped,
        total_norm, total_norm_after, clip_coef or n_clipped copies it
        back)."""
        return self._on_device is not None

    def _resolve(self):
        t = self._on_device
        if t is None:
            return
        if self.kind == "norm":
            self._set_norm(*t.tolist())
        else:
            self._set_count(int(t.item()))
        self._on_device = None

    def _take(self, measured):
        """What the C call measured (the norm's float64 [2], or the count):
        left on its device, the result pending; read now on the cpu."""
        self._on_device = measured
        if measured.device.type == "cpu":
            self._resolve()

    def _set_count(self, n):
        self.clipped = n > 0
        self.n_clipped = n

    def _set_norm(self, total, coef):
        self.clipped = coef != 1.0
        self.total_norm = total
        self.total_norm_after = total * coef if coef != 1.0 else total
        self.clip_coef = coef


_serial = itertools.count()
_last_serial = [-1]
_local = threading.local()
_KEEP = 16  # results remembered per thread for optimizers to pick up


def _recent():
    r = getattr(_local, "recent", None)
    if r is None:
        r = _local.recent = []
    return r


def _record(result, params):
    result.serial = _last_serial[0] = next(_serial)
    result.param_ids = frozenset(id(p) for p in params)
    r = _recent()
    r.append(result)
    del r[:-_KEEP]
    return result


def last_clip_result():
    """The ClipResult of the latest clip_grad_*_ call on this thread, or None."""
    r = _recent()
    return r[-1] if r else None


def _latest_serial():
    return _last_serial[0]


def _take_result_for(params, after_serial):
    """The latest result newer than after_serial that touched any of params
    and no optimizer step has taken yet; marks it taken (a clip is reported
    by one step)."""
    ids = {id(p) for p in params}
    for res in reversed(_recent()):
        if res.serial <= after_serial:
            return None
        if not res.taken and not ids.isdisjoint(res.param_ids):
            res.taken = True
            return res
    return None


def _param_list(parameters, who):
    if isinstance(parameters, Tensor):
        return [parameters]
    try:
        params = list(parameters)
    except TypeError:
        raise TypeError(f"{who}: parameters must be a Tensor or an iterable of Tensors, "
                        f"got {type(parameters).__name__}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{who}: parameter {i} is a {type(p).__name__}, not a Tensor")
    return params


def _norm_type(norm_type, who):
    if isinstance(norm_type, str) and norm_type in ("inf", "+inf"):
        return math.inf
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"{who}: norm_type must be a number or 'inf', got {norm_type!r}")
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"{who}: norm_type must be > 0 or inf, got {norm_type!r}")
    return p


def _number(v, name, who):
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, Tensor)):
        raise TypeError(f"{who}: {name} must be a number, got {v!r}")
    return float(v)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Norm of the norms of tensors (PyTorch's get_total_norm), a 0-d tensor
    of the first tensor's dtype (0. for an empty list). foreach is accepted
    for compatibility and ignored (one C pass either way)."""
    who = "get_total_norm"
    ts = _param_list(tensors, who)
    p = _norm_type(norm_type, who)
    if not ts:
        return tensor(0.0)
    total = _core._total_norm(ts, p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {p} for gradients from `parameters` is "
                           "non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    return tensor(total, dtype=ts[0].dtype, device=ts[0].device)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scales the gradients of parameters in place so that their total
    norm_type-norm is at most max_norm: every gradient is multiplied by
    min(max_norm / (total_norm + 1e-6), 1). Returns the total norm before
    clipping as a 0-d tensor; raises RuntimeError for a NaN/inf total norm
    when error_if_nonfinite. Records a ClipResult (last_clip_result())."""
    who = "clip_grad_norm_"
    params = _param_list(parameters, who)
    max_norm = _number(max_norm, "max_norm", who)
    p = _norm_type(norm_type, who)
    grads = [q.grad for q in params if q.grad is not None]
    if not grads:
        _record(ClipResult("norm", False, 0.0, 0.0, max_norm, p, 1.0), params)
        return tensor(0.0)
    result = ClipResult("norm", PENDING, PENDING, PENDING, max_norm, p, PENDING)
    if error_if_nonfinite:  # needs the norm on the host, as PyTorch's
        total, coef = _core._clip_grad_norm(grads, max_norm, p, True)
        result._set_norm(total, coef)
    else:
        both = _core._clip_grad_norm_tensor(grads, max_norm, p)
        result._take(both)
        if result.pending:  # one device: nothing copied back
            _record(result, params)
            with no_grad():
                return both[0].to(grads[0].dtype, copy=True)
    _record(result, params)
    return tensor(result.total_norm, dtype=grads[0].dtype, device=grads[0].device)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Scales the gradients by min(max_norm / (total_norm + 1e-6), 1) for a
    total_norm computed beforehand (PyTorch's clip_grads_with_norm_)."""
    who = "clip_grads_with_norm_"
    params = _param_list(parameters, who)
    max_norm = _number(max_norm, "max_norm", who)
    total = _number(total_norm, "total_norm", who)
    grads = [q.grad for q in params if q.grad is not None]
    coef = max_norm / (total + 1e-6)
    coef = coef if not coef > 1.0 else 1.0
    if grads and coef != 1.0:
        with no_grad():
            for g in grads:
                g.mul_(coef)
    _record(ClipResult("norm", bool(grads) and coef != 1.0, total, total * coef, max_norm,
                       None, coef), params)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamps every gradient into [-clip_value, clip_value] in place (NaN
    stays NaN). clip_value must be >= 0. Records a ClipResult counting the
    elements changed."""
    who = "clip_grad_value_"
    params = _param_list(parameters, who)
    clip_value = _number(clip_value, "clip_value", who)
    if not clip_value >= 0:
        raise ValueError(f"{who}: clip_value must be >= 0, got {clip_value}")
    grads = [q.grad for q in params if q.grad is not None]
    result = ClipResult("value", PENDING, clip_value=clip_value, n_clipped=PENDING)
    if grads:  # the count stays on a device (no wait for it)
        result._take(_core._clip_grad_value_tensor(grads, clip_value))
    else:
        result._set_count(0)
    result.n_total = sum((g.values() if g.is_sparse else g).numel() for g in grads)
    _record(result, params)


def clip_grad_agc_(parameters, clip_factor=0.01, eps=1e-3):
    """Unit-wise adaptive gradient clipping (Brock et al. 2021, NFNets; the
    formula of timm's adaptive_clip_grad with L2 norms): for each output
    unit (row along dim 0; the whole tensor for 0-d/1-d parameters), when
    ||g|| >= clip_factor * max(||w||, eps) the unit's gradient is scaled to
    that norm. Records a ClipResult counting the units clipped."""
    who = "clip_grad_agc_"
    params = _param_list(parameters, who)
    clip_factor = _number(clip_factor, "clip_factor", who)
    eps = _number(eps, "eps", who)
    if not clip_factor > 0:
        raise ValueError(f"{who}: clip_factor must be > 0, got {clip_factor}")
    if not eps >= 0:
        raise ValueError(f"{who}: eps must be >= 0, got {eps}")
    with_grad = [q for q in params if q.grad is not None]
    grads = []
    for q in with_grad:
        g = q.grad
        if not g.is_sparse and not g.is_contiguous():
            g = g.contiguous()
            q.grad = g
        grads.append(g)
    count, n_units = _core._clip_grad_agc_tensor(with_grad, grads, clip_factor, eps)
    result = ClipResult("agc", PENDING, n_clipped=PENDING, n_total=n_units)
    result._take(count)  # on a device: stays there
    _record(result, params)


adaptive_clip_grad_ = clip_grad_agc_
