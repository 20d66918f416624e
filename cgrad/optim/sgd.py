"""SGD with momentum, dampening, Nesterov, weight decay, maximize (PyTorch's
torch.optim.SGD), one fused C loop per parameter; the dense parameters of a
group on a device go to the C core in one call (foreach, as PyTorch's
default on CUDA: one kernel call per device), those whose momentum buffer
is created this step in a call of their own."""

from cgrad import _core
from cgrad.optim import _checks, _state
from cgrad.optim.optimizer import Optimizer


def _momentum_buffer(group):
    """The state that keeps its gradients' layout (row-sparse or dense), when
    the group uses it."""
    return "momentum_buffer" if float(group["momentum"]) != 0 else None


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
        _checks.check_step(self, "SGD", ("momentum_buffer",), sparse_ok=True,
                           layout_key=_momentum_buffer)
        sink = self._stats_sink  # cgrad.monitor's, or None
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), float(group["momentum"])
            dampening, wd = float(group["dampening"]), float(group["weight_decay"])
            nesterov, maximize = bool(group["nesterov"]), bool(group["maximize"])
            batched = self._batching(group)
            batches = {}  # new buffers or not -> entries: one C call each
            for p in group["params"]:
                g = _checks.grad_of(p)
                if g is None:
                    continue
                state = self._state_for(p)
                if g.is_sparse:
                    buf = state.get("momentum_buffer") if momentum != 0 else None
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
                if batched is None or not batched(p):
                    try:
                        _core._sgd_update(p, g, buf, first, lr, momentum, dampening, wd,
                                          nesterov, maximize, sink)
                    except BaseException:
                        self._forget_new_buffers([p], first)
                        raise
                else:
                    batches.setdefault(first, []).append((p, g, buf))
            for first, entries in batches.items():
                ps, gs, bufs = (list(c) for c in zip(*entries))
                try:
                    _core._sgd_update_multi(ps, gs, bufs if momentum != 0 else None, first, lr,
                                            momentum, dampening, wd, nesterov, maximize)
                except BaseException:
                    self._forget_new_buffers(ps, first)
                    raise
        return loss

    def _forget_new_buffers(self, params, first):
        """A failed update moved nothing (the C calls check before they
        write): the buffers made for it this step are dropped, so the next
        step makes them again from its gradient, as PyTorch's first step."""
        if first:
            for p in params:
                self.state[p].pop("momentum_buffer", None)


SGD.step._cgrad_fused_stats = True  # fills _stats_sink (see Optimizer)
