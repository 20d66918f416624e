"""GradScaler: dynamic loss scaling (PyTorch's torch.amp.GradScaler).

    scaler = GradScaler()
    loss = model(x)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)                 # optional: clip unscaled gradients
    clip_grad_norm_(params, 1.0)
    scaler.step(opt)                     # skipped when a gradient is inf/NaN
    scaler.update()                      # back off on inf, grow after growth_interval

The scale is a float32 value as in PyTorch. A skipped step still leaves a
StepReport (skipped=True, the reason, the loss scale and the non-finite
count) in optimizer.last_report.
"""
import collections
import math
import numbers

import numpy as np

from cgrad import _core
from cgrad._core import Tensor

_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


def _fresh_state():
    return {"stage": _READY, "found_inf": 0, "nonfinite": 0}


def _f32(x):
    """x rounded to float32 (inf past float32's range, as the scale tensor)."""
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _check_device(device):
    """'cpu' or 'cuda' (the device the gradients live on; the scale itself
    is a host float32 either way: step() must read the inf check on the
    host to decide whether to skip). RuntimeError saying why when 'cuda'
    is unavailable."""
    spec = str(device)
    kind, _, index = spec.partition(":")
    if kind not in ("cpu", "cuda") or index not in ("", "0"):
        raise ValueError(f"GradScaler: device must be 'cpu' or 'cuda', got {device!r}")
    if kind == "cuda":
        from cgrad import cuda
        cuda._init()  # raises with the reason CUDA is unavailable
    return kind


class GradScaler:
    """GradScaler(init_scale=2.**16, growth_factor=2.0, backoff_factor=0.5,
    growth_interval=2000, enabled=True, device="cpu"). device: "cpu" or
    "cuda"; gradients on either device are unscaled and checked where they
    live."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True, device="cpu"):
        self._device = _check_device(device) if enabled else str(device)
        self._enabled = bool(enabled)
        if self._enabled:
            for name, v in (("init_scale", init_scale), ("growth_factor", growth_factor),
                            ("backoff_factor", backoff_factor)):
                if isinstance(v, bool) or not isinstance(v, numbers.Real):
                    raise TypeError(f"GradScaler: {name} must be a number, got {v!r}")
            if not (init_scale > 0 and math.isfinite(init_scale)):
                raise ValueError(f"GradScaler: init_scale must be positive and finite, "
                                 f"got {init_scale}")
            if not growth_factor > 1.0:
                raise ValueError(f"GradScaler: the growth factor must be > 1.0, got {growth_factor}")
            if not 0.0 < backoff_factor < 1.0:
                raise ValueError(f"GradScaler: the backoff factor must be in (0, 1), "
                                 f"got {backoff_factor}")
            if isinstance(growth_interval, bool) or not isinstance(growth_interval, numbers.Integral) \
                    or growth_interval < 1:
                raise ValueError(f"GradScaler: growth_interval must be a positive integer, "
                                 f"got {growth_interval!r}")
        self._init_scale = float(init_scale)
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._init_growth_tracker = 0
        self._scale = None            # float32 value once scale() was called
        self._growth_tracker = None
        self._per_optimizer_states = collections.defaultdict(_fresh_state)

    def is_enabled(self):
        return self._enabled

    def _lazy_init(self):
        if self._scale is None:
            self._scale = _f32(self._init_scale)
            self._growth_tracker = self._init_growth_tracker

    def _check_scale(self, who):
        if self._scale is None:
            raise RuntimeError(f"Attempted {who} but the scale is not set. This may indicate "
                               "your script did not use scaler.scale(loss or outputs) earlier "
                               "in the iteration.")

    # ------------------------------------------------------------ scale
    def scale(self, outputs):
        """outputs (a Tensor, or nested lists/tuples of them) times the scale."""
        if not self._enabled:
            return outputs
        self._lazy_init()
        if isinstance(outputs, Tensor):
            return outputs * self._scale
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: outputs must be a Tensor or an iterable of Tensors, "
                        f"got {type(outputs).__name__}")

    # ---------------------------------------------------------- unscale
    def _grads(self, optimizer):
        prepare = getattr(optimizer, "_prepare_grads", None)  # MasterWeights: float32 copies first
        if prepare is not None:
            prepare()
        seen, out = set(), []
        for group in optimizer.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None and id(g) not in seen:
                    seen.add(id(g))
                    out.append(g)
        return out

    def unscale_(self, optimizer):
        """Divides the optimizer's gradients by the scale in place and
        records whether any was inf/NaN. Once per optimizer per update()."""
        if not self._enabled:
            return
        self._check_scale("unscale_")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] == _UNSCALED:
            raise RuntimeError("unscale_() has already been called on this optimizer since "
                               "the last update().")
        if state["stage"] == _STEPPED:
            raise RuntimeError("unscale_() is being called after step().")
        inv_scale = _f32(1.0 / self._scale)
        grads = self._grads(optimizer)
        # One fused pass per gradient, NaN/inf counted before scaling (as
        # PyTorch's _amp_foreach_non_finite_check_and_unscale_): one kernel
        # and one copy back of the counts per device; row-sparse gradients
        # over their stored rows. Not recorded on the tape.
        nonfinite = _core._amp_unscale_(grads, inv_scale)
        state["found_inf"] = 1 if nonfinite else 0
        state["nonfinite"] = nonfinite
        state["stage"] = _UNSCALED

    # ------------------------------------------------------------- step
    def step(self, optimizer, *args, **kwargs):
        """Unscales (unless unscale_ ran), then optimizer.step(*args,
        **kwargs) unless a gradient was inf/NaN; returns step's result, or
        None when skipped (the optimizer's StepReport says so)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._check_scale("step")
        state = self._per_optimizer_states[id(optimizer)]
        if state["stage"] == _STEPPED:
            raise RuntimeError("step() has already been called since the last update().")
        if state["stage"] == _READY:
            self.unscale_(optimizer)
        extra = {"loss_scale": self._scale, "nonfinite": state["nonfinite"]}
        retval = None
        if not state["found_inf"]:
            if hasattr(optimizer, "_report_extra"):
                optimizer._report_extra.update(extra)
            retval = optimizer.step(*args, **kwargs)
        elif hasattr(optimizer, "_skip_step"):
            optimizer._skip_step(f"{state['nonfinite']} non-finite gradient element(s) after "
                                 f"unscaling (loss scale {self._scale:g})", **extra)
        state["stage"] = _STEPPED
        return retval

    # ----------------------------------------------------------- update
    def update(self, new_scale=None):
        """Backs the scale off after a step with inf/NaN gradients, grows it
        after growth_interval clean steps in a row; new_scale sets it."""
        if not self._enabled:
            return
        self._check_scale("update")
        if new_scale is not None:
            if isinstance(new_scale, Tensor):
                if new_scale.numel() != 1 or new_scale.requires_grad:
                    raise ValueError("new_scale should be a float or a 1-element Tensor with "
                                     "requires_grad=False.")
                new_scale = new_scale.item()
            if isinstance(new_scale, bool) or not isinstance(new_scale, numbers.Real):
                raise TypeError(f"new_scale must be a float or a 1-element Tensor, got {new_scale!r}")
            self._scale = _f32(new_scale)
        else:
            states = [s for s in self._per_optimizer_states.values() if s["stage"] != _READY]
            if not states:
                raise RuntimeError("No inf checks were recorded prior to update.")
            if sum(s["found_inf"] for s in states):
                self._scale = _f32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                successful = self._growth_tracker + 1
                if successful == self._growth_interval:
                    grown = _f32(self._scale * self._growth_factor)
                    if math.isfinite(grown):
                        self._scale = grown
                    self._growth_tracker = 0
                else:
                    self._growth_tracker = successful
        self._per_optimizer_states = collections.defaultdict(_fresh_state)

    # ---------------------------------------------------------- getters
    def get_scale(self):
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

    def get_growth_factor(self):
        return self._growth_factor

    def set_growth_factor(self, new_factor):
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self):
        return self._backoff_factor

    def set_backoff_factor(self, new_factor):
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self):
        return self._growth_interval

    def set_growth_interval(self, new_interval):
        self._growth_interval = int(new_interval)

    def _get_growth_tracker(self):
        if not self._enabled:
            return 0
        return self._init_growth_tracker if self._growth_tracker is None else self._growth_tracker

    # ------------------------------------------------------------ state
    def state_dict(self):
        """PyTorch's keys; {} when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._get_growth_tracker()}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        self._init_scale = float(state_dict["scale"])
        if self._scale is not None:
            self._scale = _f32(self._init_scale)
        self._growth_factor = float(state_dict["growth_factor"])
        self._backoff_factor = float(state_dict["backoff_factor"])
        self._growth_interval = int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._growth_tracker is not None:
            self._growth_tracker = self._init_growth_tracker
