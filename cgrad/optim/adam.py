"""Adam (PyTorch's torch.optim.Adam: amsgrad, maximize, L2 weight decay
added to the gradient, or decoupled as AdamW), one fused C loop per
parameter; the parameters of a group that share a device and a step count
go to the C core in one call (foreach, as PyTorch's default on CUDA: one
kernel call on a device)."""
from cgrad import _core
from cgrad._core import float32, tensor
from cgrad.optim import _checks, _state
from cgrad.optim.optimizer import Optimizer

# the state tensors the update reads, shaped like the parameter
_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _new_step():
    # PyTorch keeps the step count as a float32 0-d tensor.
    return tensor(0.0, dtype=float32)


def _undo_steps(steps):
    """An update call that failed moved nothing (the C calls check every
    entry before they write): the step counts added for it go back. (A
    try/except at each call, not a context manager: on the per-parameter
    path that doubled a small step's time.)"""
    for t in steps:
        t.sub_(1)


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
    amsgrad=False, *, maximize=False, decoupled_weight_decay=False).
    State: 'step', 'exp_avg', 'exp_avg_sq' and, with amsgrad,
    'max_exp_avg_sq'."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, foreach=None, maximize=False, fused=None,
                 decoupled_weight_decay=False, report_grad_norm=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay, foreach=foreach,
                        fused=fused)
        super().__init__(params, defaults, report_grad_norm=report_grad_norm)

    def _check_group(self, group):
        _checks.learning_rate(group)
        _checks.non_negative(group, "eps", "epsilon")
        _checks.betas(group)
        _checks.non_negative(group, "weight_decay")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        _checks.check_step(self, type(self).__name__, _STATE)
        sink = self._stats_sink  # cgrad.monitor's, or None
        for group in self.param_groups:
            lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
            beta1, beta2 = (float(b) for b in group["betas"])
            amsgrad, maximize = bool(group["amsgrad"]), bool(group["maximize"])
            decoupled = bool(group.get("decoupled_weight_decay", False))
            batched = self._batching(group)
            batches = {}  # step count -> entries: one C call each
            for p in group["params"]:
                g = _checks.grad_of(p)
                if g is None:
                    continue
                state = self._state_for(p)
                if len(state) == 0:
                    state["step"] = _new_step()
                    state["exp_avg"] = _state.zeros(p)
                    state["exp_avg_sq"] = _state.zeros(p)
                    if amsgrad:
                        state["max_exp_avg_sq"] = _state.zeros(p)
                elif amsgrad and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = _state.zeros(p)
                step_t = state["step"]
                step_t.add_(1)
                step = int(step_t.item())
                vmax = state.get("max_exp_avg_sq") if amsgrad else None
                if batched is None or not batched(p):
                    try:
                        _core._adam_update(p, g, state["exp_avg"], state["exp_avg_sq"], vmax, step,
                                           lr, beta1, beta2, eps, wd, decoupled, amsgrad, maximize,
                                           sink)
                    except BaseException:
                        _undo_steps([step_t])
                        raise
                    continue
                batches.setdefault(step, []).append(
                    (p, g, state["exp_avg"], state["exp_avg_sq"], vmax, step_t))
            for step, entries in batches.items():
                ps, gs, ms, vs, vmaxs, steps = (list(c) for c in zip(*entries))
                try:
                    _core._adam_update_multi(ps, gs, ms, vs, vmaxs if amsgrad else None, step, lr,
                                             beta1, beta2, eps, wd, decoupled, amsgrad, maximize)
                except BaseException:
                    _undo_steps(steps)
                    raise
        return loss


Adam.step._cgrad_fused_stats = True  # fills _stats_sink (see Optimizer)
