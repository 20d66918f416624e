"""SGD with momentum, dampening, Nesterov, weight decay, maximize (PyTorch's
torch.optim.SGD), one fused C loop per parameter."""

from cgrad import _core
from cgrad.optim import _checks, _state
from cgrad.optim.optimizer import Optimizer


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
    nesterov=False, *, maximize=False). State: 'momentum_buffer' (only when
    momentum != 0), initialised with the first gradient as in PyTorch.

    Row-sparse gradients (Embedding(sparse=True)) are updated by a C loop
    over their rows only, with torch.optim.SGD's semantics: the momentum
    buffer is then row-sparse too (m * buf + (1 - dampening) * g over the
    rows seen so far; rows never touched have no state), so momentum is
    exact. Weight decay on a sparse gradient is lazy (added on the
    gradient's rows only); PyTorch refuses that combination."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, maximize=False, foreach=None, fused=None,
                 report_grad_norm=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, fused=fused)
        super().__init__(params, defaults, report_grad_norm=report_grad_norm)

    def _check_group(self, group):
        _checks.learning_rate(group)
        momentum = _checks.non_negative(group, "momentum")
        _checks.non_negative(group, "weight_decay")
        dampening = _checks.number(group, "dampening")
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening "
                             f"(momentum={momentum}, dampening={dampening})")

    def step(self, closure=None):
        loss = self._run_closure(closure)
        sink = self._stats_sink  # cgrad.monitor's, or None
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), float(group["momentum"])
            dampening, wd = float(group["dampening"]), float(group["weight_decay"])
            nesterov, maximize = bool(group["nesterov"]), bool(group["maximize"])
            for p in group["params"]:
                g = _checks.grad_of(p, "SGD", sparse_ok=True)
                if g is None:
                    continue
                state = self._state_for(p)
                if g.is_sparse:
                    buf = state.get("momentum_buffer") if momentum != 0 else None
                    if buf is not None and not buf.is_sparse:
                        raise RuntimeError("SGD: this parameter's momentum buffer is dense but its "
                                           "gradient is row-sparse; keep one gradient layout per "
                                           "parameter")
                    new_buf = _core._sgd_sparse_update(p, g, buf, lr, momentum, dampening, wd,
                                                       nesterov, maximize)
                    if new_buf is not None:
                        state["momentum_buffer"] = new_buf
                    continue
                buf, first = None, False
                if momentum != 0:
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = _state.zeros(p)
                        state["momentum_buffer"] = buf
                        first = True
                _core._sgd_update(p, g, buf, first, lr, momentum, dampening, wd, nesterov,
                                  maximize, sink)
        return loss


SGD.step._cgrad_fused_stats = True  # fills _stats_sink (see Optimizer)
