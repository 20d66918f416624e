"""RMSprop (PyTorch's torch.optim.RMSprop: alpha, eps, weight decay,
momentum, centered, maximize), one fused C loop per parameter; the
parameters of a group on a device go to the C core in one call (foreach,
as PyTorch's default on CUDA: one kernel call per device)."""
from cgrad import _core
from cgrad.optim import _checks, _state
from cgrad.optim.adam import _new_step, _undo_steps
from cgrad.optim.optimizer import Optimizer

# the state tensors the update reads, shaped like the parameter
_STATE = ("square_avg", "grad_avg", "momentum_buffer")


class RMSprop(Optimizer):
    """RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
    momentum=0, centered=False, *, maximize=False). State: 'step',
    'square_avg', 'momentum_buffer' (momentum > 0), 'grad_avg' (centered)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, foreach=None, maximize=False, report_grad_norm=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                        momentum=momentum, centered=centered, maximize=maximize,
                        foreach=foreach)
        super().__init__(params, defaults, report_grad_norm=report_grad_norm)

    def _check_group(self, group):
        _checks.learning_rate(group)
        _checks.non_negative(group, "eps", "epsilon")
        _checks.non_negative(group, "momentum")
        _checks.non_negative(group, "weight_decay")
        _checks.non_negative(group, "alpha")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        _checks.check_step(self, "RMSprop", _STATE)
        sink = self._stats_sink  # cgrad.monitor's, or None
        for group in self.param_groups:
            lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
            wd, momentum = float(group["weight_decay"]), float(group["momentum"])
            centered, maximize = bool(group["centered"]), bool(group["maximize"])
            batched = self._batching(group)
            batch = []  # one C call (the update reads no step count)
            for p in group["params"]:
                g = _checks.grad_of(p)
                if g is None:
                    continue
                state = self._state_for(p)
                if len(state) == 0:
                    state["step"] = _new_step()
                    state["square_avg"] = _state.zeros(p)
                if momentum > 0 and "momentum_buffer" not in state:
                    state["momentum_buffer"] = _state.zeros(p)
                if centered and "grad_avg" not in state:
                    state["grad_avg"] = _state.zeros(p)
                state["step"].add_(1)
                ga = state["grad_avg"] if centered else None
                buf = state["momentum_buffer"] if momentum > 0 else None
                if batched is None or not batched(p):
                    try:
                        _core._rmsprop_update(p, g, state["square_avg"], ga, buf, lr, alpha, eps,
                                              wd, momentum, centered, maximize, sink)
                    except BaseException:
                        _undo_steps([state["step"]])
                        raise
                else:
                    batch.append((p, g, state["square_avg"], ga, buf, state["step"]))
            if batch:
                ps, gs, sqs, gas, bufs, steps = (list(c) for c in zip(*batch))
                try:
                    _core._rmsprop_update_multi(ps, gs, sqs, gas if centered else None,
                                                bufs if momentum > 0 else None, lr, alpha, eps,
                                                wd, momentum, centered, maximize)
                except BaseException:
                    _undo_steps(steps)
                    raise
        return loss


RMSprop.step._cgrad_fused_stats = True  # fills _stats_sink (see Optimizer)
