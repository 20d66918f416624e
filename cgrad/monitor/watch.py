"""Watcher: what Run.watch attaches to an optimizer.

The per-step work is not here: a cgrad._core._MonitorRing (cgrad/_monitor.pxi)
is installed as the optimizer's step pre- and post-hook. With a built-in
optimizer the pre-hook arms a _StatsSink (Optimizer._stats_sink, set at the
first recorded step and disarmed between steps) and the
fused updates measure, in their one pass, the gradients they apply (after
a GradScaler's unscale_ and after clipping), the weights before the update
and the update itself; with any other optimizer the pre-hook measures the
gradients and weights with one C call (cg_tensor_stats_many). Either way
the numbers go straight into a preallocated ring slot; the post-hook adds
the StepReport's clip / lr / loss-scale numbers and publishes the slot.
The writer thread claims the
finished slots of a whole commit at once (Writer sources) and makes the
per-layer arrays from them (cgrad.monitor.layers), so nothing per step or
per layer is built in Python on either thread.

The ring is also the optimizer's report hook, which records a skipped
step (it runs no pre/post hooks). What stays here is rare: the copy path
of the update ratio for an optimizer that is not a built-in one (weights
copied before the step and subtracted after), the closure wrapper of
step(closure), composing event messages (called by the ring only when a
check fired), and spilling the ring when the writer fell behind. Nothing
here talks to SQLite.
"""
import json

import numpy as np

from cgrad import _core
from cgrad.monitor.layers import LayerMap

__all__ = ["Watcher", "ring_capacity"]

# ring memory per watcher: at most about this many bytes (and 64..4096 steps)
_RING_BYTES = 8 << 20


def ring_capacity(n_params, n_groups):
    """Slots of the ring: a power of two holding ~one commit interval of
    fast steps, bounded in memory."""
    per_slot = 8 * (9 * n_params + 12 + n_groups)
    cap = 4096
    while cap > 64 and cap * per_slot > _RING_BYTES:
        cap //= 2
    return cap


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


class _Source:
    """What the writer calls at each commit (see Writer.add_source)."""

    __slots__ = ("watcher",)

    def __init__(self, watcher):
        self.watcher = watcher

    def __call__(self, force):
        return self.watcher._claim(force)

    def writer_failed(self):
        self.watcher._ring.notice = True  # the next post-hook warns (training thread)


class Watcher:
    """Hooks on one (model, optimizer) pair feeding one Run."""

    def __init__(self, run, model, optimizer, scheduler=None, scaler=None, every=1,
                 update_ratio_every=1):
        _check_args(model, optimizer, scheduler, scaler, every, update_ratio_every)
        self.run = run
        self.model, self.optimizer = model, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.every = every
        self.update_ratio_every = update_ratio_every
        self._params, self._names = [], []
        self._modules = []          # (module name, [param index, ...])
        self._before = []           # per param: weights before the update (copy path)
        self._views = []            # per param: (data_ptr, flat NumPy view of the weights)
        self._index = {}            # id(param) -> index
        self._bad_layers = set()    # layers whose last recorded gradient was non-finite
        self._handles = []
        self._build_layers()
        self._lmap = LayerMap(len(self._params), [members for _, members in self._modules])
        # a built-in optimizer's fused updates measure for us (None: the
        # ring measures in its pre-hook, the update ratio by weight copies)
        self._sink = None
        if callable(getattr(optimizer, "_provides_fused_stats", None)) and \
                optimizer._provides_fused_stats():
            self._sink = _core._StatsSink(self._params)
        groups = optimizer.param_groups
        self._ring = _core._MonitorRing(self, self._params, groups,
                                        ring_capacity(len(self._params), len(groups)), every,
                                        update_ratio_every, self._sink,
                                        self._first_step_index(optimizer), scaler)
        self._dtypes = [p.dtype for p in self._params]
        self._handles.append(optimizer.register_step_pre_hook(self._ring.pre_hook))
        self._handles.append(optimizer.register_step_post_hook(self._ring.post_hook))
        if callable(getattr(optimizer, "register_report_hook", None)):
            self._handles.append(optimizer.register_report_hook(self._ring.report_hook))
        run._writer.submit_meta([
            ("n_groups", str(len(groups))),
            ("every", str(every)),
            ("update_ratio_every", str(update_ratio_every)),
            ("model", _type_name(model)),
            ("optimizer", _type_name(optimizer)),
            ("scheduler", _type_name(scheduler) if scheduler is not None else ""),
            ("scaler", _type_name(scaler) if scaler is not None else ""),
        ])
        self._source = _Source(self)
        run._writer.add_source(self._source)

    @staticmethod
    def _first_step_index(optimizer):
        rep = getattr(optimizer, "last_report", None)
        step = getattr(rep, "step", None)
        return step + 1 if isinstance(step, int) else 0

    @property
    def ring(self):
        return self._ring

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
        rows.append((i, name, "param", json.dumps(list(p.shape)), int(p.numel())))

    def remove(self):
        """Detaches the hooks; what the ring still holds goes to the writer."""
        for h in self._handles:
            h.remove()
        self._handles = []
        writer = self.run._writer
        writer.remove_source(self._source)
        chunk = self._claim(force=True)
        if chunk is not None:
            writer.submit_chunk(chunk)
        if self._sink is not None:
            if getattr(self.optimizer, "_stats_sink", None) is self._sink:
                self.optimizer._stats_sink = None  # the ring's pre-hook put it there
            self._sink = None
        self._before = [None] * len(self._params)
        self._views = [None] * len(self._params)

    # ------------------------------------------------- the writer's side
    def _claim(self, force=False):
        """Writer sources: the ring's finished slots as one chunk."""
        from cgrad.monitor.run import HOLD_S

        chunk = self._ring.claim(force, HOLD_S)
        if chunk is not None:
            chunk["layer_map"] = self._lmap
        return chunk

    def _spill(self):
        """The ring is full (the writer fell behind): its slots go to the
        writer's queue now, which bounds what it keeps."""
        chunk = self._claim(force=True)
        if chunk is not None:
            self.run._writer.submit_chunk(chunk)

    # -------------------------------------------------------- rare hooks
    def _notice(self):
        """The ring's post-hook saw ring.notice: warn on this thread."""
        self._ring.notice = None
        self.run._writer.warn_failed(stacklevel=4)

    def _wrap_closure(self, args, kwargs):
        """Replaces step(closure)'s closure with one that keeps its first
        return value as the step's loss."""
        if args and callable(args[0]):
            closure, where = args[0], "args"
        elif callable(kwargs.get("closure")):
            closure, where = kwargs["closure"], "kwargs"
        else:
            return None
        ring = self._ring

        def closure_recording_loss():
            out = closure()
            if ring.closure_loss is None:
                ring.closure_loss = _float_or_none(out)
            return out

        if where == "args":
            return (closure_recording_loss,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["closure"] = closure_recording_loss
        return args, kwargs

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

    def _copy_weights(self):
        """Copy path (an optimizer whose step is not a built-in one): the
        weights before the update, into buffers reused across steps."""
        for i, p in enumerate(self._params):
            w = self._weights(i, p)
            buf = self._before[i]
            if buf is None or buf.shape != w.shape or buf.dtype != w.dtype:
                buf = self._before[i] = np.empty_like(w)
            np.copyto(buf, w)

    def _copy_update_sq(self, out):
        """||w_after - w_before||^2 per parameter into out (copy path; NaN
        where no copy was taken); the buffers hold the difference
        afterwards and are refilled at the next measured step."""
        out[:] = np.nan
        dot = np.dot
        for i, p in enumerate(self._params):
            buf = self._before[i]
            w = self._weights(i, p)
            if buf is None or buf.shape != w.shape:
                continue
            np.subtract(w, buf, out=buf, casting="unsafe")
            out[i] = float(dot(buf, buf))

    # ------------------------------------------------------------ events
    def _events(self, slot, step, any_bad, dtype_changed, anomaly, scale_changed, prev_scale,
                lr_jump):
        """The events of a recorded step; the ring calls this only when one
        of its checks fired (lr_jump: None or (group, old lr, new lr)).
        Returns a list of (step, kind, message, layer_id, value)."""
        ring = self._ring
        events = []
        if any_bad or self._bad_layers:
            bad = self._lmap.nonfinite(ring.raw[slot])
            for layer_id in range(bad.shape[0]):
                self._note_nonfinite(layer_id, int(bad[layer_id]), step, events)
            ring.bad_layers = len(self._bad_layers)
        if dtype_changed:
            dtypes = [p.dtype for p in self._params]
            changed = [(a, b) for a, b in zip(self._dtypes, dtypes) if a != b]
            short = lambda d: str(d).rsplit(".", 1)[-1]  # noqa: E731 - 'float32', not 'cgrad.float32'
            pairs = sorted({f"{short(a)} -> {short(b)}" for a, b in changed})
            events.append((step, "precision", f"parameters changed dtype: {', '.join(pairs)} "
                           f"({len(changed)} of {len(dtypes)} parameters)", None, None))
            self._dtypes = dtypes
        if anomaly:
            report = _core.anomaly_report()
            if report is not None:
                events.append((step, "anomaly", report, None, None))
        f, i = ring.f[slot], ring.i[slot]
        if i[2]:
            events.append((step, "skipped", ring.reasons.get(ring.head, "skipped"), None, None))
        if scale_changed:
            events.append((step, "loss_scale", f"loss scale {prev_scale:g} -> {f[6]:g}", None,
                           float(f[6])))
        if lr_jump is not None:
            g, a, b = lr_jump
            lrs = ring.lr[slot]
            events.append((step, "lr_change", f"group {g} lr {a:.6g} -> {b:.6g}", None,
                           float(lrs[0]) if lrs.shape[0] else b))
        return events

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
