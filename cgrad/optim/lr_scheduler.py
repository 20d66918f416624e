"""Learning-rate schedulers with PyTorch's names, signatures and behaviour.

    sched = CosineAnnealingLR(optimizer, T_max=100)
    for epoch in range(100):
        train(...); optimizer.step()
        sched.step()

Any object with ``param_groups`` (a list of dicts holding ``"lr"``, and
``"momentum"`` or ``"betas"`` where OneCycleLR cycles them) can be scheduled.

Schedules that have a closed form are evaluated by the C library
(``cg_lr_*`` in include/cgrad.h, pure functions of the step), so a run
resumed from ``state_dict()`` continues with exactly the values of an
uninterrupted run and ``lr_at(step)`` evaluates any step. The chainable ones
(StepLR, MultiStepLR, ConstantLR, LinearLR, ExponentialLR, CosineAnnealingLR,
PolynomialLR) use the closed form for a group while its lr is exactly the
schedule's value at the previous step; when something else changed it
(another scheduler stepping the same optimizer, a hand edit), they apply
PyTorch's recursive update to the current lr instead, so schedulers compose
as in PyTorch. OneCycleLR, CosineAnnealingWarmRestarts and WarmupCosineLR
(cgrad's warmup + cosine in one object) always set the closed-form value.
"""
import math
import numbers
import operator
import types
import warnings
from bisect import bisect_right
from collections import Counter
from functools import wraps
from weakref import ref

from cgrad import _core

__all__ = [
    "LRScheduler", "LambdaLR", "MultiplicativeLR", "StepLR", "MultiStepLR", "ConstantLR",
    "LinearLR", "ExponentialLR", "SequentialLR", "CosineAnnealingLR", "ChainedScheduler",
    "ReduceLROnPlateau", "CosineAnnealingWarmRestarts", "OneCycleLR", "PolynomialLR",
    "WarmupCosineLR",
]

_INT64_MAX = 2**63 - 1


# ------------------------------------------------------------------ argument checks
def _as_int(name, value, minimum=None):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if abs(value) > _INT64_MAX:
        raise ValueError(f"{name} must fit in 64 bits, got {value}")
    return value


def _as_real(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def _check_optimizer(optimizer):
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups:
        raise TypeError(
            f"{type(optimizer).__name__} is not an optimizer: it needs param_groups, a non-empty "
            f"list of dicts, got {groups!r}")
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or "lr" not in group:
            raise ValueError(f"optimizer.param_groups[{i}] must be a dict with an 'lr', got {group!r}")
        _as_real(f"param_groups[{i}]['lr']", group["lr"])


def _format_param(name, optimizer, param):
    """One value per param group (a list/tuple must match their number)."""
    if isinstance(param, (list, tuple)):
        if len(param) != len(optimizer.param_groups):
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. {name} has "
                f"{len(param)} values, param_groups has {len(optimizer.param_groups)}.")
        return list(param)
    return [param] * len(optimizer.param_groups)


def _group_values(optimizer, key):
    return [group[key] for group in optimizer.param_groups]


def _warn_get_lr_called_within_step(scheduler):
    if not scheduler._get_lr_called_within_step:
        warnings.warn("To get the last learning rate computed by the scheduler, please use "
                      "`get_last_lr()`.", UserWarning, stacklevel=3)


class _Flag:
    """Sets one boolean attribute of a scheduler for the duration of a block."""

    def __init__(self, obj, attr):
        self.obj, self.attr = obj, attr

    def __enter__(self):
        setattr(self.obj, self.attr, True)

    def __exit__(self, *exc):
        setattr(self.obj, self.attr, False)


def _track_optimizer_step(optimizer):
    """Wrap optimizer.step so the scheduler can warn when it steps first."""
    step = getattr(optimizer, "step", None)
    if step is None or hasattr(step, "_wrapped_by_lr_sched") or not hasattr(step, "__func__"):
        return
    try:
        opt_ref = ref(optimizer)
    except TypeError:  # no weakref support: skip the order check
        return
    func = step.__func__

    @wraps(func)
    def wrapper(*args, **kwargs):
        opt = opt_ref()
        opt._opt_called = True
        return func.__get__(opt, opt.__class__)(*args, **kwargs)

    wrapper._wrapped_by_lr_sched = True
    try:
        optimizer.step = wrapper
    except AttributeError:
        pass


# ------------------------------------------------------------------ base class
class LRScheduler:
    """Base class: subclasses implement get_lr() (the lr of every group at
    last_epoch). Construction records each group's lr as ``initial_lr``
    (``base_lrs``) and performs the first step (last_epoch 0)."""

    _get_lr_called_within_step = False
    _is_initial = False

    def __init__(self, optimizer, last_epoch=-1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        last_epoch = _as_int("last_epoch", last_epoch, -1)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise ValueError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                        f"a scheduler with last_epoch={last_epoch} (load the optimizer state first)")
        self.base_lrs = _group_values(optimizer, "initial_lr")
        for i, base_lr in enumerate(self.base_lrs):
            _as_real(f"param_groups[{i}]['initial_lr']", base_lr)
        self.last_epoch = last_epoch
        _track_optimizer_step(optimizer)
        self._initial_step()

    def _initial_step(self):
        self._step_count = 0
        with _Flag(self, "_is_initial"):
            self.step()

    def state_dict(self):
        """Every attribute except the optimizer."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)

    def get_last_lr(self):
        """The lrs the last step() set, one per param group."""
        return self._last_lr

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_lr()")

    def step(self, epoch=None):
        """Advance one step (or, with epoch, jump to that step in closed form)."""
        if self._step_count == 1 and hasattr(self.optimizer, "step"):
            if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
                warnings.warn(
                    "Seems like `optimizer.step()` has been overridden after learning rate "
                    "scheduler initialization. Please, make sure to call `optimizer.step()` "
                    "before `lr_scheduler.step()`.", UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(
                    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. Call "
                    "them in the opposite order: `optimizer.step()` before "
                    "`lr_scheduler.step()`, or the first value of the schedule is skipped.",
                    UserWarning, stacklevel=2)
        self._step_count += 1
        self._update_lr(epoch)

    def _update_lr(self, epoch=None):
        with _Flag(self, "_get_lr_called_within_step"):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = _as_int("epoch", epoch, 0)
                closed = getattr(self, "_get_closed_form_lr", None)
                values = closed() if closed is not None else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class _ClosedForm(LRScheduler):
    """A schedule with a closed form in C: subclasses give _closed(base_lr,
    step); the lr is that function of the step (get_lr), evaluable anywhere
    (lr_at)."""

    def lr_at(self, step):
        """The closed-form lr of every group at step (no state changes)."""
        step = _as_int("step", step, 0)
        return [self._closed(base_lr, step) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.lr_at(self.last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return self.lr_at(self.last_epoch)


class _ClosedFormLR(_ClosedForm):
    """A chainable schedule with a closed form in C (see the module docstring).
    Subclasses also give _chained(group, base_lr), PyTorch's recursive get_lr
    for one group, used when another scheduler or a hand edit moved the lr."""

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        t = self.last_epoch
        lrs = []
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            if self._is_initial:
                on_track = t == 0 and group["lr"] == base_lr
            else:
                on_track = t >= 1 and group["lr"] == self._closed(base_lr, t - 1)
            lrs.append(self._closed(base_lr, t) if on_track else self._chained(group, base_lr))
        return lrs


# ------------------------------------------------------------------ lambda-driven
def _lambdas(optimizer, lr_lambda):
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != len(optimizer.param_groups):
            raise ValueError(
                f"Expected {len(optimizer.param_groups)} lr_lambdas, but got {len(lr_lambda)}")
        fns = list(lr_lambda)
    else:
        fns = [lr_lambda] * len(optimizer.param_groups)
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    return fns


class _LambdaState:
    """state_dict of the lambda schedulers: functions and lambdas are not
    saved, callable objects save their __dict__ (as PyTorch)."""

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else fn.__dict__.copy()
                               for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        lr_lambdas = state.pop("lr_lambdas")
        self.__dict__.update(state)
        for fn, saved in zip(self.lr_lambdas, lr_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class LambdaLR(_LambdaState, LRScheduler):
    """lr = initial_lr * lr_lambda(step); one function or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step):
        step = _as_int("step", step, 0)
        return [base_lr * fn(step) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return [base_lr * fn(self.last_epoch)
                for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]


class MultiplicativeLR(_LambdaState, LRScheduler):
    """lr *= lr_lambda(step) at every step after the first."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * fn(self.last_epoch)
                for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups)]


# ------------------------------------------------------------------ closed forms in C
class StepLR(_ClosedFormLR):
    """lr = initial_lr * gamma ** (step // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _as_int("step_size", step_size)
        self.gamma = _as_real("gamma", gamma)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_step(base_lr, step, self.step_size, self.gamma)

    def _chained(self, group, base_lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return group["lr"]
        return group["lr"] * self.gamma


class MultiStepLR(_ClosedFormLR):
    """lr = initial_lr * gamma ** (number of milestones <= step); a milestone
    given twice applies gamma twice."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        try:
            given = list(milestones)
        except TypeError:
            raise TypeError(f"milestones must be an iterable of integers, got {milestones!r}") from None
        self.milestones = Counter(_as_int(f"milestones[{i}]", m, 0) for i, m in enumerate(given))
        self.gamma = _as_real("gamma", gamma)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_multistep(base_lr, step, sorted(self.milestones.elements()), self.gamma)

    def _chained(self, group, base_lr):
        if self.last_epoch not in self.milestones:
            return group["lr"]
        return group["lr"] * self.gamma ** self.milestones[self.last_epoch]


class ConstantLR(_ClosedFormLR):
    """lr = initial_lr * factor until step total_iters, initial_lr after."""

    def __init__(self, optimizer, factor=1.0 / 3, total_iters=5, last_epoch=-1):
        self.factor = _as_real("factor", factor)
        self.total_iters = _as_int("total_iters", total_iters)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_constant(base_lr, step, self.factor, self.total_iters)

    def _chained(self, group, base_lr):
        if self.last_epoch == 0:
            return group["lr"] * self.factor
        if self.last_epoch != self.total_iters:
            return group["lr"]
        if self.factor == 0:  # nothing to divide out: restore the schedule's own value
            return self._closed(base_lr, self.last_epoch)
        return group["lr"] * (1.0 / self.factor)


class LinearLR(_ClosedFormLR):
    """Factor moving linearly from start_factor to end_factor over total_iters steps."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor = _as_real("start_factor", start_factor)
        self.end_factor = _as_real("end_factor", end_factor)
        self.total_iters = _as_int("total_iters", total_iters)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_linear(base_lr, step, self.start_factor, self.end_factor, self.total_iters)

    def _chained(self, group, base_lr):
        t = self.last_epoch
        if t == 0:
            return group["lr"] * self.start_factor
        if self._is_initial or t > self.total_iters:
            return group["lr"]
        delta = self.end_factor - self.start_factor
        return group["lr"] * (1.0 + delta / (self.total_iters * self.start_factor + (t - 1) * delta))


class ExponentialLR(_ClosedFormLR):
    """lr = initial_lr * gamma ** step."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _as_real("gamma", gamma)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_exponential(base_lr, step, self.gamma)

    def _chained(self, group, base_lr):
        if self._is_initial:
            return group["lr"]
        return group["lr"] * self.gamma


class CosineAnnealingLR(_ClosedFormLR):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * step / T_max)) / 2
    (periodic past T_max, as PyTorch's)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _as_int("T_max", T_max)
        self.eta_min = _as_real("eta_min", eta_min)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_cosine(base_lr, step, self.T_max, self.eta_min)

    def _chained(self, group, base_lr):
        t, T, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return group["lr"]
        if self._step_count == 1 and t > 0:
            return self._closed(base_lr, t)
        if (t - 1 - T) % (2 * T) == 0:  # leaving the trough, where the ratio below is 0/0
            return group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / T)) / 2
        return ((1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
                * (group["lr"] - eta_min) + eta_min)


class PolynomialLR(_ClosedFormLR):
    """lr = initial_lr * (1 - min(step, total_iters) / total_iters) ** power."""

    def __init__(self, optimizer, total_iters=5, power=1.0, last_epoch=-1):
        self.total_iters = _as_int("total_iters", total_iters)
        self.power = _as_real("power", power)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_polynomial(base_lr, step, self.total_iters, self.power)

    def _chained(self, group, base_lr):
        t, T = self.last_epoch, self.total_iters
        if self._is_initial or t > T:
            return group["lr"]
        return group["lr"] * ((1.0 - t / T) / (1.0 - (t - 1) / T)) ** self.power


class WarmupCosineLR(_ClosedForm):
    """cgrad's warmup + cosine in one schedule (not chainable: it sets the
    closed-form value). Linear from initial_lr * warmup_start_factor at step 0
    to initial_lr at step warmup_steps, cosine down to eta_min at step
    total_steps, eta_min after."""

    def __init__(self, optimizer, warmup_steps, total_steps, warmup_start_factor=0.0, eta_min=0.0,
                 last_epoch=-1):
        self.warmup_steps = _as_int("warmup_steps", warmup_steps)
        self.total_steps = _as_int("total_steps", total_steps)
        self.warmup_start_factor = _as_real("warmup_start_factor", warmup_start_factor)
        self.eta_min = _as_real("eta_min", eta_min)
        self._closed(0.0, 0)
        super().__init__(optimizer, last_epoch)

    def _closed(self, base_lr, step):
        return _core._lr_warmup_cosine(base_lr, step, self.warmup_steps, self.total_steps,
                                       self.warmup_start_factor, self.eta_min)


class CosineAnnealingWarmRestarts(LRScheduler):
    """SGDR: cosine from initial_lr to eta_min over cycles of T_0, T_0*T_mult,
    ... steps. step(epoch) accepts fractional epochs (e.g. epoch + i / iters);
    T_cur and T_i are the position in and length of the current cycle."""

    def __init__(self, optimizer, T_0, T_mult=1, eta_min=0.0, last_epoch=-1):
        if isinstance(T_0, bool) or not isinstance(T_0, numbers.Integral) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0!r}")
        if isinstance(T_mult, bool) or not isinstance(T_mult, numbers.Integral) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult!r}")
        if isinstance(eta_min, bool) or not isinstance(eta_min, numbers.Real):
            raise ValueError(f"Expected float or int eta_min, but got {eta_min!r} of type "
                             f"{type(eta_min).__name__}")
        self.T_0 = _as_int("T_0", T_0)
        self.T_i = self.T_0
        self.T_mult = _as_int("T_mult", T_mult)
        self.eta_min = float(eta_min)
        self._eval(0.0, 0)  # value checks (eta_min) before anything changes
        self.T_cur = _as_int("last_epoch", last_epoch, -1)
        self._epoch = self.T_cur  # position on the schedule, fractional after step(epoch)
        super().__init__(optimizer, last_epoch)

    def _eval(self, base_lr, epoch):
        return _core._lr_cosine_warm_restarts(base_lr, epoch, self.T_0, self.T_mult, self.eta_min)

    def lr_at(self, epoch):
        """The lr of every group at a (possibly fractional) epoch."""
        epoch = _as_real("epoch", epoch)
        return [self._eval(base_lr, epoch)[0] for base_lr in self.base_lrs]

    def _move_to(self, epoch):
        _, t_cur, t_i = self._eval(0.0, epoch)
        integral = isinstance(epoch, numbers.Integral)
        self._epoch = epoch
        self.T_cur = int(t_cur) if integral else t_cur
        self.T_i = int(t_i) if math.isfinite(t_i) else t_i

    def get_lr(self):
        _warn_get_lr_called_within_step(self)
        return self.lr_at(self._epoch)

    def _get_closed_form_lr(self):  # _update_lr(epoch), e.g. SequentialLR at a milestone
        self._move_to(self.last_epoch)
        return self.lr_at(self._epoch)

    def step(self, epoch=None):
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            position, last_epoch = self._epoch + 1, self.last_epoch + 1
        else:
            if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real):
                raise TypeError(f"epoch must be a real number, got {epoch!r} ({type(epoch).__name__})")
            if not (epoch >= 0 and math.isfinite(epoch)):
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            position = epoch if isinstance(epoch, numbers.Integral) else float(epoch)
            last_epoch = math.floor(epoch)
        self._move_to(position)
        self.last_epoch = last_epoch
        self._step_count += 1
        with _Flag(self, "_get_lr_called_within_step"):
            values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class OneCycleLR(LRScheduler):
    """The 1cycle policy (PyTorch's OneCycleLR): lr from max_lr / div_factor
    up to max_lr, then down to max_lr / div_factor / final_div_factor
    (three_phase: back to max_lr / div_factor first). With cycle_momentum the
    groups' 'momentum' (or betas[0]) moves the other way between max_momentum
    and base_momentum. Not chainable: it sets the closed-form value."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        if total_steps is not None:
            if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) \
                    or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps!r}")
            self.total_steps = int(total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            for name, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                    raise ValueError(f"Expected positive integer {name}, but got {v!r}")
            self.total_steps = int(epochs) * int(steps_per_epoch)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        self.pct_start = _as_real("pct_start", pct_start)
        if not 0.0 <= self.pct_start <= 1.0:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy!r}")
        self._anneal_func_type = anneal_strategy
        self.div_factor = _as_real("div_factor", div_factor)
        self.final_div_factor = _as_real("final_div_factor", final_div_factor)
        self.three_phase = bool(three_phase)
        max_lrs = [_as_real("max_lr", v) for v in _format_param("max_lr", optimizer, max_lr)]
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            defaults = getattr(optimizer, "defaults", None)
            keys = defaults if isinstance(defaults, dict) else optimizer.param_groups[0]
            if "momentum" not in keys and "betas" not in keys:
                raise ValueError(
                    "optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
            self.use_beta1 = "betas" in keys
            max_ms = [_as_real("max_momentum", v)
                      for v in _format_param("max_momentum", optimizer, max_momentum)]
            base_ms = [_as_real("base_momentum", v)
                       for v in _format_param("base_momentum", optimizer, base_momentum)]
        else:
            max_ms = base_ms = [0.0] * len(max_lrs)
        for m_lr, b_m, m_m in zip(max_lrs, base_ms, max_ms):  # value checks, nothing changed yet
            self._eval(m_lr, 0, b_m, m_m)
        if last_epoch == -1:
            for m_lr, group in zip(max_lrs, optimizer.param_groups):
                group["initial_lr"] = m_lr / self.div_factor
                group["max_lr"] = m_lr
                group["min_lr"] = group["initial_lr"] / self.final_div_factor
            if self.cycle_momentum:
                for m_m, b_m, group in zip(max_ms, base_ms, optimizer.param_groups):
                    if self.use_beta1:
                        group["betas"] = (m_m, *group["betas"][1:])
                    else:
                        group["momentum"] = m_m
                    group["max_momentum"] = m_m
                    group["base_momentum"] = b_m
        super().__init__(optimizer, last_epoch)

    def _eval(self, max_lr, step, base_momentum, max_momentum):
        return _core._lr_one_cycle(max_lr, step, self.total_steps, self.pct_start,
                                   self._anneal_func_type, self.div_factor, self.final_div_factor,
                                   self.three_phase, base_momentum, max_momentum)

    def _group_at(self, group, step):
        if self.cycle_momentum:
            return self._eval(group["max_lr"], step, group["base_momentum"], group["max_momentum"])
        return self._eval(group["max_lr"], step, 0.0, 0.0)

    def lr_at(self, step):
        step = _as_int("step", step, 0)
        return [self._group_at(group, step)[0] for group in self.optimizer.param_groups]

    def get_lr(self):
        """The lrs at last_epoch; with cycle_momentum, sets the groups' momentum."""
        _warn_get_lr_called_within_step(self)
        lrs = []
        for group in self.optimizer.param_groups:
            lr, momentum = self._group_at(group, self.last_epoch)
            lrs.append(lr)
            if self.cycle_momentum:
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        return lrs


# ------------------------------------------------------------------ metric-driven
class ReduceLROnPlateau(LRScheduler):
    """Multiply the lrs by factor when a metric has not improved for more than
    patience steps (PyTorch's ReduceLROnPlateau)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        _check_optimizer(optimizer)
        factor = _as_real("factor", factor)
        if factor >= 1.0 or factor < 0.0:
            raise ValueError(f"Factor should be in [0, 1), got {factor}")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = [self._check_min_lr(v) for v in min_lr]
        else:
            self.default_min_lr = self._check_min_lr(min_lr)
            self.min_lrs = [self.default_min_lr] * len(optimizer.param_groups)
        self.patience = _as_int("patience", patience, 0)
        self.cooldown = _as_int("cooldown", cooldown, 0)
        self.eps = _as_real("eps", eps)
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.last_epoch = 0
        self._last_lr = _group_values(optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    @staticmethod
    def _check_min_lr(value):
        value = _as_real("min_lr", value)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"min_lr must be finite and >= 0, got {value}")
        return value

    def _reset(self):
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics, epoch=None):
        """One observation of the metric (a float or a one-element tensor)."""
        try:
            current = float(metrics)
        except (TypeError, ValueError):
            raise TypeError(f"metrics must be convertible to float, got {metrics!r}") from None
        self.last_epoch = self.last_epoch + 1 if epoch is None else _as_int("epoch", epoch)
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self):
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the optimizer ({len(self.optimizer.param_groups)}) "
                    f"differs from when ReduceLROnPlateau was initialized ({len(self.min_lrs)}); "
                    "set min_lrs to one value per group.")
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown! (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown! (expected 'rel' or 'abs')")
        threshold = _as_real("threshold", threshold)
        if not (threshold >= 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be finite and >= 0, got {threshold}")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        self._init_is_better(mode=self.mode, threshold=self.threshold,
                             threshold_mode=self.threshold_mode)


# ------------------------------------------------------------------ composition
def _check_schedulers(owner, schedulers, optimizer):
    for i, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {i} should have `optimizer` as its attribute, "
                            f"got {type(scheduler).__name__}")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it requires additional "
                f"kwargs to be specified when calling `step`, but got one at index {i} in the "
                "given schedulers sequence.")
        if scheduler.optimizer is not optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got "
                f"scheduler {type(scheduler).__name__} at index {i} with a different one.")


class _CompositeState:
    """state_dict of a composite: its own attributes plus each child's state."""

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        children = state.pop("_schedulers")
        self.__dict__.update(state)
        for scheduler, child in zip(self._schedulers, children):
            scheduler.load_state_dict(child)


class SequentialLR(_CompositeState, LRScheduler):
    """schedulers[i] drives the lr from milestones[i-1] on; each starts from its
    own step 0 at its milestone."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer(optimizer)
        if len(schedulers) < 1:
            raise ValueError(f"{type(self).__name__} expects at least one scheduler, but got no scheduler.")
        _check_schedulers(type(self).__name__, schedulers, optimizer)
        milestones = [_as_int(f"milestones[{i}]", m, 0) for i, m in enumerate(milestones)]
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more than "
                f"the number of milestone points, but got number of schedulers {len(schedulers)} "
                f"and the number of milestones to be equal to {len(milestones)}")
        if any(b < a for a, b in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be non-decreasing, got {milestones}")
        self._schedulers = list(schedulers)
        self._milestones = milestones
        self.last_epoch = _as_int("last_epoch", last_epoch, -1) + 1
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()
        self._last_lr = self._schedulers[idx].get_last_lr()

    def recursive_undo(self, sched=None):
        """Undo the first step every child took at construction."""
        scheds = self if sched is None else sched
        if hasattr(scheds, "_schedulers"):
            for s in scheds._schedulers:
                self.recursive_undo(s)
        elif hasattr(scheds, "last_epoch"):
            scheds.last_epoch -= 1

    def step(self):
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_CompositeState, LRScheduler):
    """Steps every scheduler in order at each step(); their effects compose."""

    def __init__(self, schedulers, optimizer=None):
        if len(schedulers) < 1:
            raise ValueError(
                f"{type(self).__name__} expects at least one scheduler to be chained, but got no scheduler.")
        optimizer = optimizer if optimizer is not None else getattr(schedulers[0], "optimizer", None)
        _check_schedulers(type(self).__name__, schedulers, optimizer)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self):
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")
