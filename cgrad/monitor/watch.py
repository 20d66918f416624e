"""Watcher: what Run.watch attaches to an optimizer.

A step pre-hook reads the gradients the optimizer is about to apply (after
a GradScaler's unscale_ and after clipping) and the weights before the
update: one C call (cg_tensor_stats_many) gives every gradient's and
weight's sum of squares, max |x| and non-finite count. The update norm
||w_after - w_before|| comes from the optimizer's fused kernel when it is
a built-in one (Optimizer._track_update_sq: measured in the update pass,
no copy); for any other optimizer the pre-hook copies the weights into
buffers kept per parameter and the post-hook subtracts. The post-hook
hands the raw (parameters x 8) block and the update norms to the Run in
the StepRow; the writer thread turns a commit's worth of them into the
per-layer arrays (cgrad.monitor.layers), so the training thread does no
per-layer work. Optimizers with
register_report_hook (cgrad.optim) also report skipped steps, which run no
pre/post hooks. Nothing here talks to SQLite.
"""
import json
import math

import numpy as np

from cgrad import _core
from cgrad.monitor.layers import LayerMap, RawLayers
from cgrad.monitor.writer import StepRow

__all__ = ["Watcher"]

class _NoReport:
    """Stands in for a missing StepReport: every field is None."""

    def __getattr__(self, name):
        return None


_NO_REPORT = _NoReport()
# An lr jump larger than this between consecutive recorded steps is an
# 'lr_change' event (a warm restart, a step decay), not a schedule's drift.
_LR_JUMP = 2.0
_LR_FLOOR = 0.01


def _type_name(x):
    return type(x).__module__ + "." + type(x).__qualname__


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"watch: {name} must be an int, got {type(value).__name__} ({value!r})")
    if value < low:
        raise ValueError(f"watch: {name} must be >= {low}, got {value}")


def _check_args(model, optimizer, scheduler, scaler, every, update_ratio_every):
    from cgrad.nn import Module

    if not isinstance(model, Module):
        raise TypeError(f"watch: model must be a cgrad.nn.Module, got {type(model).__name__} "
                        f"({model!r:.80})")
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise TypeError(f"watch: optimizer must be an optimizer with param_groups (a list of dicts "
                        f"with 'params'), got {type(optimizer).__name__}")
    for name in ("register_step_pre_hook", "register_step_post_hook"):
        if not callable(getattr(optimizer, name, None)):
            raise TypeError(f"watch: optimizer {type(optimizer).__name__} has no {name}(); "
                            f"use a cgrad.optim optimizer")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"watch: scheduler must be an LR scheduler (with step()) or None, got "
                        f"{type(scheduler).__name__}")
    if scaler is not None and not callable(getattr(scaler, "get_scale", None)):
        raise TypeError(f"watch: scaler must be a GradScaler (with get_scale()) or None, got "
                        f"{type(scaler).__name__}")
    _check_int("every", every, 1)
    _check_int("update_ratio_every", update_ratio_every, 0)


def _float_or_none(x):
    if x is None:
        return None
    try:
        return float(x.item() if hasattr(x, "item") else x)
    except (TypeError, ValueError):
        return None


class Watcher:
    """Hooks on one (model, optimizer) pair feeding one Run."""

    def __init__(self, run, model, optimizer, scheduler=None, scaler=None, every=1,
                 update_ratio_every=1):
        _check_args(model, optimizer, scheduler, scaler, every, update_ratio_every)
        self.run = run
        self.model, self.optimizer = model, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.every = every
        # the update ratio costs a copy of the weights and two more passes:
        # measured on every update_ratio_every-th recorded step (0: never)
        self.update_ratio_every = update_ratio_every
        self._n_recorded = 0
        self._params, self._names = [], []
        self._modules = []          # (module name, [param index, ...])
        self._before = []           # per param: weights before the update (buffer reused)
        self._views = []            # per param: (data_ptr, flat NumPy view of the weights)
        self._dtypes = []
        self._index = {}            # id(param) -> index
        self._prev_lrs = None
        self._lr_peak = 0.0
        self._prev_scale = None
        self._bad_layers = set()    # layers whose last recorded gradient was non-finite
        self._anomaly_seen = _core.anomaly_report()
        self._next_step = self._first_step_index(optimizer)
        self._in_step = False
        self._ratio_now = False
        self._row = None            # StepRow being built between pre- and post-hook
        self._capture = None
        self._closure_loss = None
        self._handles = []
        self._build_layers()
        self._lmap = LayerMap(len(self._params), [members for _, members in self._modules])
        # the fused update norms of a built-in optimizer (None: copy path)
        self._upd = None
        if update_ratio_every and callable(getattr(optimizer, "_track_update_sq", None)):
            self._upd = optimizer._track_update_sq(True)  # switched on per measured step
        self._handles.append(optimizer.register_step_pre_hook(self._pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._post_hook))
        if callable(getattr(optimizer, "register_report_hook", None)):
            self._handles.append(optimizer.register_report_hook(self._report_hook))
        run._writer.submit_meta([
            ("n_groups", str(len(optimizer.param_groups))),
            ("every", str(every)),
            ("update_ratio_every", str(update_ratio_every)),
            ("model", _type_name(model)),
            ("optimizer", _type_name(optimizer)),
            ("scheduler", _type_name(scheduler) if scheduler is not None else ""),
            ("scaler", _type_name(scaler) if scaler is not None else ""),
        ])

    @staticmethod
    def _first_step_index(optimizer):
        rep = getattr(optimizer, "last_report", None)
        step = getattr(rep, "step", None)
        return step + 1 if isinstance(step, int) else 0

    # ------------------------------------------------------------ layers
    def _build_layers(self):
        """Parameters in named_parameters order, then the optimizer's
        parameters the model does not hold, then every submodule owning
        some of them (the L2 combination of its parameters)."""
        rows = []
        for name, p in self.model.named_parameters():
            self._add_param(name, p, rows)
        for g, group in enumerate(self.optimizer.param_groups):
            for i, p in enumerate(group["params"]):
                if id(p) not in self._index:
                    self._add_param(f"param_groups.{g}.{i}", p, rows)
        for name, mod in self.model.named_modules():
            if name == "":
                continue  # the whole model: that is the global norm
            members = sorted({self._index[id(p)] for p in mod.parameters() if id(p) in self._index})
            if members:
                layer_id = len(self._params) + len(self._modules)
                self._modules.append((name, members))
                rows.append((layer_id, name, "module", "[]",
                             int(sum(self._params[i].numel() for i in members))))
        self.run._writer.submit_layers(rows)

    def _add_param(self, name, p, rows):
        i = len(self._params)
        self._index[id(p)] = i
        self._params.append(p)
        self._names.append(name)
        self._before.append(None)
        self._views.append(None)
        self._dtypes.append(p.dtype)
        rows.append((i, name, "param", json.dumps(list(p.shape)), int(p.numel())))

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._upd is not None:
            self.optimizer._track_update_sq(False)
            self._upd = None
        self._before = [None] * len(self._params)
        self._views = [None] * len(self._params)

    # ------------------------------------------------------------- hooks
    def _pre_hook(self, optimizer, args, kwargs):
        self._in_step = True
        step = self._next_step
        self.run._step_starting(step)
        self._closure_loss = None
        if step % self.every:
            self._row = None
            return None
        self._row = StepRow(step)
        k = self.update_ratio_every
        self._ratio_now = bool(k) and self._n_recorded % k == 0
        self._n_recorded += 1
        fused = self._upd is not None
        if fused and self._ratio_now:
            optimizer._update_sq = self._upd  # off again in the post-hook
        self._capture = self._measure(copy_weights=self._ratio_now and not fused)
        return self._wrap_closure(args, kwargs)

    def _post_hook(self, optimizer, args, kwargs):
        self._in_step = False
        rep = getattr(optimizer, "last_report", None)
        step = self._next_step
        rep_step = getattr(rep, "step", None)
        if isinstance(rep_step, int) and rep_step >= step - 1:
            step = rep_step  # the optimizer's own numbering when it has one
        self._next_step = step + 1
        row, self._row = self._row, None
        if row is None and getattr(rep, "skipped", False):
            # skipped steps are always recorded; nothing moved, so the
            # gradients and weights can still be read now
            row = StepRow(step)
            self._finish(row, rep, self._measure(copy_weights=False), after_update=False, moved=False)
            return
        if row is None:
            self.run._step_finished(None, self._closure_loss)
            return
        row.step = step
        self._finish(row, rep, self._capture, after_update=self._ratio_now)
        self._capture = None
        if self._upd is not None:
            optimizer._update_sq = None

    def _report_hook(self, optimizer, rep):
        """A skipped step (GradScaler found inf/NaN) runs no pre/post hook;
        record it from here with the gradients that caused it."""
        if self._in_step or not getattr(rep, "skipped", False):
            return
        step = rep.step if isinstance(getattr(rep, "step", None), int) else self._next_step
        self.run._step_starting(step)
        self._next_step = step + 1
        row = StepRow(step)
        self._finish(row, rep, self._measure(copy_weights=False), after_update=False, moved=False)

    def _wrap_closure(self, args, kwargs):
        """Replaces step(closure)'s closure with one that keeps its first
        return value as the step's loss."""
        if args and callable(args[0]):
            closure, where = args[0], "args"
        elif callable(kwargs.get("closure")):
            closure, where = kwargs["closure"], "kwargs"
        else:
            return None

        def closure_recording_loss():
            out = closure()
            if self._closure_loss is None:
                self._closure_loss = _float_or_none(out)
            return out

        if where == "args":
            return (closure_recording_loss,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["closure"] = closure_recording_loss
        return args, kwargs

    # ------------------------------------------------------- measuring
    def _weights(self, i, p):
        """Flat NumPy view of parameter i's weights, cached while its
        storage stays the same (the cached view keeps that storage alive,
        so an equal data_ptr means the same memory)."""
        if p.device != "cpu":  # device memory: a host copy, read afresh each time
            return p.detach().cpu().numpy().reshape(-1)
        ptr = p.data_ptr()
        cached = self._views[i]
        if cached is not None and cached[0] == ptr:
            return cached[1]
        w = p.detach().numpy()
        if not w.flags.c_contiguous:
            return np.ascontiguousarray(w).reshape(-1)  # a strided parameter: read afresh each time
        w = w.reshape(-1)
        self._views[i] = (ptr, w)
        return w

    def _measure(self, copy_weights):
        """(parameters x 8) statistics from one C call: per parameter the
        gradient's (sum_sq, max_abs, nonfinite, numel), then the weights'
        (sum_sq over finite elements, max_abs, nonfinite, numel); no
        gradient gives zeros. The weights are copied (into reused
        buffers) when an update ratio is to follow on the copy path."""
        params = self._params
        tensors = [t for p in params for t in (p.grad, p)]
        out = np.empty((2 * len(params), 4))
        _core._tensor_stats_many(tensors, out)
        if copy_weights:
            for i, p in enumerate(params):
                w = self._weights(i, p)
                buf = self._before[i]
                if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
                    buf = self._before[i] = np.empty_like(w)
                np.copyto(buf, w)
        return out.reshape(len(params), 8)

    def _update_sq(self):
        """||w_after - w_before||^2 per parameter (copy path; NaN where no
        copy was taken); the buffers hold the difference afterwards and
        are refilled at the next step."""
        out = np.full(len(self._params), np.nan)
        dot = np.dot
        for i, p in enumerate(self._params):
            buf = self._before[i]
            w = self._weights(i, p)
            if buf is None or buf.shape != w.shape:
                continue
            np.subtract(w, buf, out=buf, casting="unsafe")
            out[i] = float(dot(buf, buf))
        return out

    def _fused_update_sq(self):
        """The squared update norms the optimizer's kernels measured (a
        parameter it did not update moved by 0)."""
        upd = self._upd
        return np.array([upd.get(id(p), 0.0) for p in self._params], dtype=np.float64)

    # -------------------------------------------------------- the row
    def _finish(self, row, rep, capture, after_update, moved=True):
        """after_update: an update ratio is measured this step (fused or
        copy path); moved=False: nothing was updated (ratio 0). The
        per-layer arrays are made on the writer thread (layers.finish)."""
        st = capture
        if after_update:
            u = self._fused_update_sq() if self._upd is not None else self._update_sq()
        elif moved:
            u = None
        else:
            u = np.zeros(st.shape[0])
        row.layers = RawLayers(self._lmap, st, u)
        total_sq, total_bad = st[:, 0:3:2].sum(axis=0).tolist()  # gradients: sum_sq, nonfinite
        total_bad = int(total_bad)
        events = []
        if total_bad or self._bad_layers:
            bad = self._lmap.nonfinite(st)
            for layer_id in range(bad.shape[0]):
                self._note_nonfinite(layer_id, int(bad[layer_id]), row.step, events)
        row.nonfinite = total_bad
        measured = math.inf if total_bad else math.sqrt(total_sq)
        self._fill_from_report(row, rep, measured)
        self._check_events(row, events)
        self.run._step_finished(row, self._closure_loss, events)

    def _fill_from_report(self, row, rep, measured_norm):
        """Clip numbers, loss scale, skip and lr from the optimizer's
        StepReport when it has them; otherwise what was measured."""
        if rep is None:
            rep = _NO_REPORT

        def field(name):
            return getattr(rep, name, None)

        before, after = _float_or_none(field("grad_norm_before_clip")), \
            _float_or_none(field("grad_norm_after_clip"))
        max_norm = _float_or_none(field("max_norm"))
        row.clip_max_norm = max_norm
        row.clip_coef = _float_or_none(field("clip_coef"))
        if row.clip_coef is None and max_norm is not None:
            row.clip_coef = 1.0
        row.clipped = bool(field("clipped"))
        row.grad_norm = before if before is not None else measured_norm
        if after is not None:
            row.grad_norm_clipped = after
        elif row.clipped and row.clip_coef is not None and before is not None:
            row.grad_norm_clipped = before * row.clip_coef
        else:
            # with no clip numbers the gradients seen are what the step applied
            row.grad_norm_clipped = measured_norm if before is None or not row.clipped else None
        scale = _float_or_none(field("loss_scale"))
        if scale is None and self.scaler is not None:
            try:
                scale = _float_or_none(self.scaler.get_scale())
            except Exception:  # noqa: BLE001 - a disabled/uninitialised scaler has none
                scale = None
        row.loss_scale = scale
        row.skipped = bool(field("skipped"))
        row.skip_reason = field("reason") if row.skipped else None
        if row.skipped and row.skip_reason is None:
            row.skip_reason = "skipped"
        nonfinite = field("nonfinite")
        if isinstance(nonfinite, int) and nonfinite > row.nonfinite:
            row.nonfinite = nonfinite
        row.lrs = [_float_or_none(g.get("lr")) for g in self.optimizer.param_groups]

    def _note_nonfinite(self, layer_id, bad, step, events):
        """A 'nonfinite' event at the first recorded step of each stretch in
        which a layer's gradient holds NaN/Inf."""
        if bad:
            if layer_id not in self._bad_layers:
                self._bad_layers.add(layer_id)
                name = self._layer_name(layer_id)
                events.append((step, "nonfinite", f"{bad} non-finite gradient element(s) in {name}",
                               layer_id, float(bad)))
        else:
            self._bad_layers.discard(layer_id)

    def _layer_name(self, layer_id):
        if layer_id < len(self._names):
            return self._names[layer_id]
        return self._modules[layer_id - len(self._names)][0]

    def _check_events(self, row, events):
        step = row.step
        dtypes = [p.dtype for p in self._params]
        if dtypes != self._dtypes:
            changed = [(a, b) for a, b in zip(self._dtypes, dtypes) if a != b]
            short = lambda d: str(d).rsplit(".", 1)[-1]  # noqa: E731 - 'float32', not 'cgrad.float32'
            pairs = sorted({f"{short(a)} -> {short(b)}" for a, b in changed})
            events.append((step, "precision", f"parameters changed dtype: {', '.join(pairs)} "
                           f"({len(changed)} of {len(dtypes)} parameters)", None, None))
            self._dtypes = dtypes
        report = _core.anomaly_report()
        if report is not None and report != self._anomaly_seen:
            events.append((step, "anomaly", report, None, None))
        self._anomaly_seen = report
        if row.skipped:
            events.append((step, "skipped", row.skip_reason, None, None))
        if row.loss_scale is not None and self._prev_scale is not None \
                and row.loss_scale != self._prev_scale:
            events.append((step, "loss_scale", f"loss scale {self._prev_scale:g} -> {row.loss_scale:g}",
                           None, row.loss_scale))
        if row.loss_scale is not None:
            self._prev_scale = row.loss_scale
        lrs = row.lrs
        peak = self._lr_peak
        for v in lrs:
            if v is not None and v > peak:
                peak = v
        self._lr_peak = peak
        if self._prev_lrs is not None:
            for g, (a, b) in enumerate(zip(self._prev_lrs, lrs)):
                if a is None or b is None:
                    continue
                # A decay near the end of a schedule (a cosine's tail halves a
                # tiny lr every step) is not an event: jumps count while the
                # larger of the two lrs is at least _LR_FLOOR of the run's peak.
                if max(a, b) < _LR_FLOOR * peak:
                    continue
                if (a == 0) != (b == 0) or (a and b and max(a / b, b / a) > _LR_JUMP):
                    events.append((step, "lr_change", f"group {g} lr {a:.6g} -> {b:.6g}", None,
                                   lrs[0] if lrs else b))
                    break
        self._prev_lrs = lrs
