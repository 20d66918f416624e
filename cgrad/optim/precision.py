"""Precision as a schedule (cgrad's own feature): train in float64 first,
then in float32, converting parameters, gradients and optimizer state
together and recording the switch as an event.

    sched = PrecisionSchedule(model, opt, PrecisionSchedule.steps({0: cgrad.float64, 500: cgrad.float32}))
    for xb, yb in loader:
        loss = loss_fn(model(sched.cast(xb)), yb)   # inputs follow sched.dtype
        opt.zero_grad(); loss.backward(); opt.step()  # the switch happens in a post-hook

The schedule is asked for the dtype after every optimizer step that ran
(skipped steps - GradScaler, UpdateGuard - are not counted): ``steps`` is
the number of applied updates so far, so with {0: float64, 500: float32}
updates 0..499 run in float64 and the switch happens right after update
499. A switch calls model.to(dtype) (Parameter objects stay the same, their
.grad is converted), converts any other optimizer parameter the model does
not hold, and casts the optimizer's floating state tensors (Adam's moments,
momentum buffers; 'step' keeps its dtype) to the new dtype at once - the
same values the optimizers' lazy cast would produce at the next step, so a
checkpoint written right after a switch is consistent.
"""
import bisect
import collections
import dataclasses
import numbers
from typing import Optional

import numpy as np

from cgrad import _core
from cgrad._core import Tensor
from cgrad._grad_mode import no_grad
from cgrad.optim.optimizer import RemovableHandle

__all__ = ["PrecisionSchedule", "PrecisionEvent", "StepPrecision", "UntilPrecision"]

_FLOATS = (_core.float32, _core.float64)
_BY_NAME = {"float32": _core.float32, "float64": _core.float64}


def _check_dtype(dt, what):
    if not isinstance(dt, _core.dtype) or dt not in _FLOATS:
        raise TypeError(f"{what} must be cgrad.float32 or cgrad.float64, got {dt!r}")
    return dt


@dataclasses.dataclass
class PrecisionEvent:
    """One precision switch."""
    step: int                # applied optimizer updates before the switch
    report_step: Optional[int]  # StepReport.step of the update that triggered it
    old_dtype: object
    new_dtype: object
    reason: str
    n_params: int            # parameters converted
    n_state: int             # optimizer state tensors converted


class StepPrecision:
    """The dtype as a piecewise-constant function of the number of applied
    updates: {0: float64, 500: float32} means float64 for updates 0..499."""

    def __init__(self, milestones):
        if not isinstance(milestones, dict) or not milestones:
            raise TypeError(f"PrecisionSchedule.steps expects a non-empty dict "
                            f"{{step: dtype}}, got {milestones!r}")
        for k, v in milestones.items():
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
                raise ValueError(f"PrecisionSchedule.steps: step keys must be integers >= 0, got {k!r}")
            _check_dtype(v, f"PrecisionSchedule.steps: the dtype at step {k}")
        if 0 not in milestones:
            raise ValueError(f"PrecisionSchedule.steps: the milestones must include step 0 "
                             f"(the starting dtype), got steps {sorted(milestones)}")
        self.milestones = dict(sorted((int(k), v) for k, v in milestones.items()))
        self._keys = list(self.milestones)

    def __call__(self, step, report=None, loss=None):
        return self.milestones[self._keys[bisect.bisect_right(self._keys, step) - 1]]

    def reason(self, step):
        return f"milestone at step {step}"

    def __repr__(self):
        items = ", ".join(f"{k}: {v}" for k, v in self.milestones.items())
        return f"PrecisionSchedule.steps({{{items}}})"


class UntilPrecision:
    """`first` until condition(step, report, loss) is true once, `then` for
    good (a condition never switches back)."""

    def __init__(self, condition, first, then):
        if not callable(condition):
            raise TypeError(f"PrecisionSchedule.until: condition must be callable, "
                            f"got {type(condition).__name__}")
        self.condition = condition
        self.first = _check_dtype(first, "PrecisionSchedule.until: first")
        self.then = _check_dtype(then, "PrecisionSchedule.until: then")
        self.met_at = None  # the step at which the condition held

    def __call__(self, step, report=None, loss=None):
        if self.met_at is None and step > 0 and self.condition(step, report, loss):
            self.met_at = step
        return self.first if self.met_at is None else self.then

    def reason(self, step):
        name = getattr(self.condition, "__name__", type(self.condition).__name__)
        return f"condition {name} met at step {step}"

    def state_dict(self):
        return {"met_at": self.met_at}

    def load_state_dict(self, state):
        self.met_at = state.get("met_at")


class PrecisionSchedule:
    """PrecisionSchedule(model, optimizer, schedule, on_switch=None).

    schedule: PrecisionSchedule.steps({step: dtype, ...}) (a plain dict is
      taken as that), PrecisionSchedule.until(condition, first, then), or any
      callable fn(step, report, loss) -> cgrad.float32 / cgrad.float64 where
      step counts the applied updates, report is optimizer.last_report and
      loss the latest value given to observe_loss() or returned by a closure
      (None when neither happened).
    on_switch: fn(event) called after each switch (more with
      register_switch_hook); schedule.events lists every PrecisionEvent.

    The model is converted to the schedule's dtype at step 0 right away.
    Use .dtype / .cast(x) to feed inputs of the current dtype; remove()
    detaches the hooks.
    """

    def __init__(self, model, optimizer, schedule, on_switch=None):
        if not hasattr(model, "to") or not hasattr(model, "parameters"):
            raise TypeError(f"PrecisionSchedule: model must be a cgrad.nn.Module, "
                            f"got {type(model).__name__}")
        if not hasattr(optimizer, "param_groups") or not hasattr(optimizer, "register_step_post_hook"):
            raise TypeError(f"PrecisionSchedule: optimizer must be a cgrad.optim.Optimizer, "
                            f"got {type(optimizer).__name__}")
        if isinstance(schedule, dict):
            schedule = StepPrecision(schedule)
        if not callable(schedule):
            raise TypeError(f"PrecisionSchedule: schedule must be a dict, "
                            f"PrecisionSchedule.steps(...), .until(...) or a callable "
                            f"(step, report, loss) -> dtype, got {type(schedule).__name__}")
        if on_switch is not None and not callable(on_switch):
            raise TypeError(f"PrecisionSchedule: on_switch must be callable, "
                            f"got {type(on_switch).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.events = []
        self.steps = 0          # applied updates seen
        self.last_loss = None
        self._switch_hooks = collections.OrderedDict()
        if on_switch is not None:
            self.register_switch_hook(on_switch)
        self.dtype = self._ask(0, None)
        self._convert(self.dtype)
        self._handles = [optimizer.register_step_pre_hook(self._pre_hook),
                         optimizer.register_step_post_hook(self._post_hook)]

    # ---------------------------------------------------------- builders
    @staticmethod
    def steps(milestones):
        """{step: dtype} milestones (must include 0): see StepPrecision."""
        return StepPrecision(milestones)

    @staticmethod
    def until(condition, first=_core.float64, then=_core.float32):
        """first until condition(step, report, loss) holds, then `then`."""
        return UntilPrecision(condition, first, then)

    # ------------------------------------------------------------- input
    def cast(self, x):
        """x in the current dtype: floating tensors and NumPy arrays are
        converted (NumPy arrays become tensors), integer ones and other
        objects are returned as they are; lists/tuples/dicts recursively."""
        if isinstance(x, Tensor):
            return x.to(self.dtype) if x.is_floating_point() and x.dtype != self.dtype else x
        if isinstance(x, np.ndarray):
            if x.dtype.kind != "f":
                return x
            arr = np.ascontiguousarray(x, dtype=str(self.dtype).split(".")[-1])
            return _core.from_numpy(arr if arr.flags.writeable else arr.copy())
        if isinstance(x, tuple) and hasattr(x, "_fields"):  # a namedtuple
            return type(x)(*(self.cast(v) for v in x))
        if isinstance(x, (list, tuple)):
            return type(x)(self.cast(v) for v in x)
        if isinstance(x, dict):
            return {k: self.cast(v) for k, v in x.items()}
        return x

    def observe_loss(self, loss):
        """Remembers the loss for a condition callable (a Tensor or number)."""
        self.last_loss = float(loss.item() if isinstance(loss, Tensor) else loss)

    # ------------------------------------------------------------- hooks
    def register_switch_hook(self, fn):
        """fn(event) after every switch; returns a handle with remove()."""
        if not callable(fn):
            raise TypeError(f"register_switch_hook: fn must be callable, got {type(fn).__name__}")
        handle = RemovableHandle(self._switch_hooks)
        self._switch_hooks[handle.id] = fn
        return handle

    def remove(self):
        """Detaches from the optimizer (the current dtype stays)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def _pre_hook(self, optimizer, args, kwargs):
        # a closure's loss is what a condition sees, as observe_loss(loss)
        closure = kwargs.get("closure", args[0] if args else None)
        if closure is None:
            return None

        def watched():
            loss = closure()
            if loss is not None:
                self.observe_loss(loss)
            return loss
        if "closure" in kwargs:
            return args, dict(kwargs, closure=watched)
        return (watched,) + tuple(args[1:]), kwargs

    def _post_hook(self, optimizer, args, kwargs):
        self.steps += 1
        new = self._ask(self.steps, optimizer.last_report)
        if new != self.dtype:
            self.switch(new, reason=self._reason())

    def _ask(self, step, report):
        dt = self.schedule(step, report, self.last_loss)
        return _check_dtype(dt, f"PrecisionSchedule: the schedule's dtype at step {step}")

    def _reason(self):
        why = getattr(self.schedule, "reason", None)
        return why(self.steps) if callable(why) else f"schedule at step {self.steps}"

    # ------------------------------------------------------------ switch
    def switch(self, dtype, reason="manual"):
        """Converts model, gradients and optimizer state to dtype now and
        records a PrecisionEvent (no event when dtype is already current)."""
        dtype = _check_dtype(dtype, "PrecisionSchedule.switch: dtype")
        old = self.dtype
        if dtype == old:
            return None
        n_params, n_state = self._convert(dtype)
        self.dtype = dtype
        rep = getattr(self.optimizer, "last_report", None)
        event = PrecisionEvent(step=self.steps, report_step=None if rep is None else rep.step,
                               old_dtype=old, new_dtype=dtype, reason=reason,
                               n_params=n_params, n_state=n_state)
        self.events.append(event)
        for fn in list(self._switch_hooks.values()):
            fn(event)
        return event

    def _convert(self, dtype):
        before = {id(p): p.dtype for g in self.optimizer.param_groups for p in g["params"]}
        self.model.to(dtype)
        n_state = 0
        with no_grad():
            for group in self.optimizer.param_groups:
                for p in group["params"]:
                    if p.is_floating_point() and p.dtype != dtype:  # not in the model
                        g = p.grad
                        p.data = p.data.to(dtype)
                        if g is not None:
                            p.grad = g.to(dtype)
                    state = self.optimizer.state.get(p)
                    if not state:
                        continue
                    for key, value in state.items():
                        if key != "step" and isinstance(value, Tensor) and \
                                value.is_floating_point() and value.dtype != dtype:
                            state[key] = value.to(dtype)
                            n_state += 1
        n_params = sum(1 for g in self.optimizer.param_groups for p in g["params"]
                       if before[id(p)] != p.dtype)
        return n_params, n_state

    # ------------------------------------------------------------- state
    def state_dict(self):
        """Where the schedule stands (for a checkpoint): steps, dtype name,
        last loss and the schedule's own state when it has one."""
        sd = {"steps": self.steps, "dtype": str(self.dtype).split(".")[-1],
              "last_loss": self.last_loss}
        inner = getattr(self.schedule, "state_dict", None)
        if callable(inner):
            sd["schedule"] = inner()
        return sd

    def load_state_dict(self, state):
        """Restores steps and dtype (converting the model if needed)."""
        if not isinstance(state, dict) or "steps" not in state or "dtype" not in state:
            raise ValueError(f"PrecisionSchedule.load_state_dict: expected a dict with 'steps' "
                             f"and 'dtype', got {state!r}")
        if state["dtype"] not in _BY_NAME:
            raise ValueError(f"PrecisionSchedule.load_state_dict: unknown dtype {state['dtype']!r}")
        self.steps = int(state["steps"])
        self.last_loss = state.get("last_loss")
        inner = getattr(self.schedule, "load_state_dict", None)
        if callable(inner) and "schedule" in state:
            inner(state["schedule"])
        dtype = _BY_NAME[state["dtype"]]
        self._convert(dtype)
        self.dtype = dtype

    def __repr__(self):
        return f"PrecisionSchedule(dtype={self.dtype}, steps={self.steps}, schedule={self.schedule!r})"
