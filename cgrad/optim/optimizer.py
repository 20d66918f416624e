"""Optimizer: the base class of every cgrad optimizer, PyTorch's layout.

param_groups is a list of dicts ("params" plus hyper-parameters), state maps
each parameter tensor (by identity) to a dict of its state, and
state_dict()/load_state_dict() use PyTorch's packed form (state keyed by
integer index, groups holding index lists). A subclass defines __init__
(calling super().__init__(params, defaults)) and step(closure=None); its
step is wrapped automatically so that step pre/post hooks run and a
StepReport is recorded (optimizer.last_report) after every step.
"""
import collections
import functools
import itertools

from cgrad import _core
from cgrad._core import Tensor
from cgrad._grad_mode import enable_grad, no_grad
from cgrad.nn.utils import clip_grad as _clip
from cgrad.optim import _state
from cgrad.optim import report as _report


class _RequiredParameter:
    """Marks a hyper-parameter that has no default (lr of a user optimizer)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class RemovableHandle:
    """Returned by the register_* methods; remove() unregisters the hook."""

    _next_id = itertools.count()

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = next(RemovableHandle._next_id)

    def remove(self):
        self._hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _wrap_step(fn):
    """Runs the step pre-hooks, the step, the report and the post-hooks, once
    per outermost call (a subclass calling super().step() nests)."""
    if getattr(fn, "_cgrad_step_wrapper", False):
        return fn

    @functools.wraps(fn)
    def step(self, *args, **kwargs):
        if self._step_depth:
            return fn(self, *args, **kwargs)
        for hook in list(self._step_pre_hooks.values()):
            res = hook(self, args, kwargs)
            if res is not None:
                if not (isinstance(res, tuple) and len(res) == 2):
                    raise RuntimeError(
                        f"a step pre-hook must return None or (args, kwargs), got {res!r}")
                args, kwargs = res
        self._step_depth += 1
        try:
            out = fn(self, *args, **kwargs)
        finally:
            self._step_depth -= 1
        self._finish_report(skipped=False)
        for hook in list(self._step_post_hooks.values()):
            hook(self, args, kwargs)
        return out

    step._cgrad_step_wrapper = True
    return step


def _every(p):
    return True


def _on_device(p):
    return p.is_cuda


class Optimizer:
    """Base class: Optimizer(params, defaults).

    params: an iterable of Tensors, or of dicts each with a "params" entry
    (one parameter group each, other keys override defaults). defaults: the
    hyper-parameters every group gets unless it sets its own.

    report_grad_norm: when True, every step also measures the gradients
    (one pass each, cg_tensor_stats) so the step report carries their global
    L2 norm and non-finite count even when nothing clipped them. Off by
    default: then the report holds only what clipping or a GradScaler
    already computed, at no extra cost.
    """

    _step_depth = 0
    # cgrad.monitor's per-parameter statistics from the fused updates: None
    # (the default: no cost), or the _core._StatsSink a watcher arms for a
    # recorded step; a built-in step hands it to every update, which then
    # also measures the gradient, the old weights and the update in its one
    # pass (cg_*_update_stats).
    _stats_sink = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _wrap_step(cls.__dict__["step"])

    def __init__(self, params, defaults, report_grad_norm=False):
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        if not isinstance(defaults, dict):
            raise TypeError(f"defaults must be a dict, got {type(defaults).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        self.defaults = defaults
        self.state = collections.defaultdict(dict)
        self.param_groups = []
        self.report_grad_norm = bool(report_grad_norm)
        self.last_report = None
        self._step_pre_hooks = collections.OrderedDict()
        self._step_post_hooks = collections.OrderedDict()
        self._report_hooks = collections.OrderedDict()
        self._step_count = 0
        self._clip_serial_seen = _clip._latest_serial()  # clips before now are not ours
        self._report_extra = {}
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ---------------------------------------------------------- groups
    def add_param_group(self, param_group):
        """Adds a group (dict with "params"); missing hyper-parameters come
        from defaults. A parameter may appear in one group only."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError("param_group must have a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            params = list(params)
        seen = set()
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but parameter "
                                f"{i} of the group is a {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (parameter {i} of the group, "
                                 f"produced by {p.grad_fn.name()!r})")
            if id(p) in seen:
                raise ValueError(f"parameter {i} of the group appears twice in it "
                                 f"(shape {tuple(p.shape)})")
            seen.add(id(p))
        group = dict(param_group)
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in existing:
                raise ValueError("some parameters appear in more than one parameter group "
                                 f"(parameter {i} of the new group, shape {tuple(p.shape)})")
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validates a group's hyper-parameters (built-ins override it)."""

    # -------------------------------------------------------- gradients
    def zero_grad(self, set_to_none=True):
        """Drops (set_to_none=True) or zeroes every parameter's gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    with no_grad():
                        g.zero_()

    def step(self, closure=None):
        """Performs one update; subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def _batching(self, group):
        """Which of the group's parameters a step batches into one C call
        (PyTorch's foreach: one kernel call per device): a predicate on a
        parameter, or None for none of them (foreach=False, or the
        monitor's sink, which measures each update on its own). By default
        the parameters on a device, PyTorch's default too (on the host the
        loop per parameter is as fast); foreach=True all of them."""
        foreach = group.get("foreach")
        if self._stats_sink is not None or foreach is False:
            return None
        return _every if foreach else _on_device

    def _run_closure(self, closure):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ------------------------------------------------------------ state
    def _state_for(self, p):
        """The state dict of p, with its floating tensors cast to p's dtype
        and moved to p's device when the parameter changed precision or
        device since they were made ('step' keeps its own dtype and stays
        on the cpu, as PyTorch's)."""
        state = self.state[p]
        dt, on_cuda = p.dtype, p.is_cuda  # is_cuda: a cheap test (one device index)
        for key, value in state.items():
            if key != "step" and isinstance(value, Tensor) and value.is_floating_point() and \
                    (value.dtype != dt or value.is_cuda != on_cuda):
                if tuple(value.shape) != tuple(p.shape):
                    raise RuntimeError(f"optimizer state {key!r} has shape {tuple(value.shape)} "
                                       f"but its parameter has shape {tuple(p.shape)}")
                state[key] = _state.follow(value, p)
        return state

    def state_dict(self):
        """{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}.
        Tensors are the live state (as PyTorch); load_state_dict copies."""
        mapping = {}
        groups = []
        index = 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                if id(p) not in mapping:
                    mapping[id(p)] = index
                    index += 1
                ids.append(mapping[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            key = mapping.get(id(p)) if isinstance(p, Tensor) else p
            if key is not None:
                state[key] = s
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restores state and hyper-parameters saved by state_dict() (of this
        optimizer or one built the same way over other tensors). State
        tensors are copied and cast to the parameter's dtype."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or \
                "param_groups" not in state_dict:
            raise ValueError("load_state_dict expects a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)} vs {len(self.param_groups)})")
        for i, (g, s) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict contains a parameter group ({i}) that "
                                 f"doesn't match the size of optimizer's group "
                                 f"({len(s['params'])} vs {len(g['params'])})")
        id_map = {}
        for g, s in zip(self.param_groups, saved_groups):
            for index, p in zip(s["params"], g["params"]):
                id_map[index] = p
        state = collections.defaultdict(dict)
        for key, value in state_dict["state"].items():
            p = id_map.get(key)
            if p is None:
                state[key] = value
                continue
            entry = {}
            for k, v in value.items():
                if isinstance(v, Tensor):
                    if k != "step" and v.is_floating_point() and p.is_floating_point():
                        v = _state.follow(v, p)  # PyTorch: the parameter's dtype and device
                    v = v.clone()
                entry[k] = v
            state[p] = entry
        groups = []
        for g, s in zip(self.param_groups, saved_groups):
            new = {k: v for k, v in s.items() if k != "params"}
            new["params"] = g["params"]
            self._check_group(new)
            groups.append(new)
        self.state = state
        self.param_groups = groups

    # ------------------------------------------------------------ hooks
    def register_step_pre_hook(self, hook):
        """hook(optimizer, args, kwargs) -> None or (args, kwargs), before
        every step. Returns a handle with remove()."""
        handle = RemovableHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook):
        """hook(optimizer, args, kwargs) after every (not skipped) step."""
        handle = RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    def register_report_hook(self, hook):
        """hook(optimizer, report) after every step, skipped ones included."""
        handle = RemovableHandle(self._report_hooks)
        self._report_hooks[handle.id] = hook
        return handle

    # ----------------------------------------------------------- report
    def _params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _finish_report(self, skipped, reason=None):
        """Builds the StepReport of the step that just ran (or was skipped)
        from what clipping / a GradScaler left, measuring the gradients
        only when report_grad_norm is set."""
        rep = _report.StepReport(step=self._step_count, skipped=skipped, reason=reason,
                                 lr=[float(g["lr"]) if "lr" in g else None
                                     for g in self.param_groups])
        self._step_count += 1
        params = None
        clip = None
        latest = _clip._latest_serial()
        if latest != self._clip_serial_seen:  # some clip ran since the last step
            params = self._params()
            clip = _clip._take_result_for(params, self._clip_serial_seen)
            self._clip_serial_seen = latest
        if clip is not None:
            rep._take_clip(clip)  # pending while the clip's numbers are on the device
        if self._report_extra:
            extra, self._report_extra = self._report_extra, {}
            rep.loss_scale = extra.get("loss_scale")
            rep.nonfinite = extra.get("nonfinite")
            norm_clip = rep.clip is not None and rep.clip.kind == "norm"
            if not norm_clip and extra.get("grad_norm") is not None:
                # measured by someone else this step (an UpdateGuard), no clip by norm ran
                rep.grad_norm_before_clip = rep.grad_norm_after_clip = float(extra["grad_norm"])
        if self.report_grad_norm:
            rep._resolve()  # measuring copies back anyway
            sum_sq, bad = 0.0, 0
            for p in params if params is not None else self._params():
                g = p.grad
                if g is not None:
                    s, _, n_bad, _ = _core._tensor_stats(g)
                    sum_sq += s
                    bad += n_bad
            norm = float("inf") if bad else sum_sq ** 0.5
            rep.nonfinite = bad if rep.nonfinite is None else rep.nonfinite
            rep.grad_norm_after_clip = norm
            if rep.grad_norm_before_clip is None:
                rep.grad_norm_before_clip = norm
        self.last_report = rep
        if self._report_hooks:
            for hook in list(self._report_hooks.values()):
                hook(self, rep)
        return rep

    def _skip_step(self, reason, **extra):
        """Records a step that did not run (GradScaler on inf/NaN)."""
        self._report_extra.update(extra)
        return self._finish_report(skipped=True, reason=reason)

    # ------------------------------------------- fused statistics (monitor)
    def _provides_fused_stats(self):
        """True when this optimizer's step is a built-in one whose fused
        updates fill _stats_sink (a subclass overriding step() is not: it
        may move the weights in ways the updates do not see)."""
        return bool(getattr(type(self).step, "_cgrad_fused_stats", False))

    # ------------------------------------------------------------ misc
    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
