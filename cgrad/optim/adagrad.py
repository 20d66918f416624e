"""Adagrad (PyTorch's torch.optim.Adagrad: lr_decay, weight decay,
initial_accumulator_value, eps, maximize), one fused C loop per parameter;
the dense parameters of a group that share a device and a step count go to
the C core in one call (foreach, as PyTorch's default on CUDA: one kernel
call per device)."""
from cgrad import _core
from cgrad.optim import _checks, _state
from cgrad.optim.adam import _new_step, _undo_steps
from cgrad.optim.optimizer import Optimizer


class Adagrad(Optimizer):
    """Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0,
    initial_accumulator_value=0, eps=1e-10, *, maximize=False). State
    ('step', 'sum') is created for every parameter at construction, as in
    PyTorch. Row-sparse gradients update only their rows (PyTorch's sparse
    Adagrad); weight decay on them is lazy (their rows only), where PyTorch
    refuses it."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, foreach=None, *, maximize=False,
                 fused=None, report_grad_norm=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize,
                        foreach=foreach, fused=fused)
        super().__init__(params, defaults, report_grad_norm=report_grad_norm)
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, group)

    def _init_state(self, p, group):
        state = self.state[p]
        if len(state) == 0 and p.is_floating_point():
            state["step"] = _new_step()
            state["sum"] = _state.full(p, float(group["initial_accumulator_value"]))

    def _check_group(self, group):
        _checks.learning_rate(group)
        _checks.non_negative(group, "lr_decay")
        _checks.non_negative(group, "weight_decay")
        _checks.non_negative(group, "initial_accumulator_value")
        _checks.non_negative(group, "eps", "epsilon")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        _checks.check_step(self, "Adagrad", ("sum",), sparse_ok=True)
        sink = self._stats_sink  # cgrad.monitor's, or None
        for group in self.param_groups:
            lr, lr_decay = float(group["lr"]), float(group["lr_decay"])
            wd, eps = float(group["weight_decay"]), float(group["eps"])
            init, maximize = float(group["initial_accumulator_value"]), bool(group["maximize"])
            batched = self._batching(group)
            batches = {}  # step count -> dense entries: one C call each
            for p in group["params"]:
                g = _checks.grad_of(p)
                if g is None:
                    continue
                self._init_state(p, group)  # a group added after construction
                state = self._state_for(p)
                step_t = state["step"]
                step_t.add_(1)
                step = int(step_t.item())
                if g.is_sparse:  # its rows only; no fused update norm
                    try:
                        _core._adagrad_sparse_update(p, g, state["sum"], step, lr, lr_decay, wd,
                                                     eps, init, maximize)
                    except BaseException:
                        _undo_steps([step_t])
                        raise
                elif batched is None or not batched(p):
                    try:
                        _core._adagrad_update(p, g, state["sum"], step, lr, lr_decay, wd, eps,
                                              init, maximize, sink)
                    except BaseException:
                        _undo_steps([step_t])
                        raise
                else:
                    batches.setdefault(step, []).append((p, g, state["sum"], step_t))
            for step, entries in batches.items():
                ps, gs, sums, steps = (list(c) for c in zip(*entries))
                try:
                    _core._adagrad_update_multi(ps, gs, sums, step, lr, lr_decay, wd, eps, init,
                                                maximize)
                except BaseException:
                    _undo_steps(steps)
                    raise
        return loss


Adagrad.step._cgrad_fused_stats = True  # fills _stats_sink (see Optimizer)
