"""SparseAdam (PyTorch's torch.optim.SparseAdam): Adam with lazy moments for
row-sparse gradients, one fused C loop over the gradient's rows."""
import numbers

from cgrad import _core
from cgrad._core import Tensor
from cgrad.optim import _checks, _state
from cgrad.optim.optimizer import Optimizer


class SparseAdam(Optimizer):
    """SparseAdam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False).

    Only the rows present in a parameter's (row-sparse) gradient are updated:
    their exp_avg / exp_avg_sq move as in Adam, every other row of the
    parameter and of its moments is left bit for bit unchanged (the
    "masked" Adam of PyTorch). State per parameter: 'step' (an int counting
    the steps that had a gradient), 'exp_avg', 'exp_avg_sq' (dense, the
    parameter's shape, zeros at the start as in PyTorch). Dense gradients
    raise RuntimeError, as PyTorch's."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False,
                 report_grad_norm=False):
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        for name, v in (("lr", lr), ("eps", eps)):
            if isinstance(v, bool) or not isinstance(v, (numbers.Real, Tensor)):
                raise TypeError(f"SparseAdam: {name} must be a number, got {v!r}")
        if not 0.0 < float(lr):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < float(eps):
            raise ValueError(f"Invalid epsilon value: {eps}")
        _checks.betas({"betas": betas})
        defaults = dict(lr=lr, betas=betas, eps=eps, maximize=maximize)
        super().__init__(params, defaults, report_grad_norm=report_grad_norm)
        sparse_params = [[gi, pi] for gi, g in enumerate(self.param_groups)
                         for pi, p in enumerate(g["params"]) if p.is_sparse]
        if sparse_params:
            raise ValueError(f"Sparse params at indices {sparse_params}: SparseAdam requires "
                             "dense parameter tensors")

    def _check_group(self, group):
        _checks.learning_rate(group)
        _checks.non_negative(group, "eps", "epsilon")
        _checks.betas(group)

    def step(self, closure=None):
        loss = self._run_closure(closure)
        _checks.check_step(self, "SparseAdam", ("exp_avg", "exp_avg_sq"), sparse_ok=True,
                           dense_ok=False)
        for group in self.param_groups:
            lr, eps = float(group["lr"]), float(group["eps"])
            beta1, beta2 = (float(b) for b in group["betas"])
            maximize = bool(group.get("maximize", False))
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                state = self._state_for(p)
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = _state.zeros(p)
                    state["exp_avg_sq"] = _state.zeros(p)
                state["step"] += 1
                try:
                    _core._sparse_adam_update(p, g, state["exp_avg"], state["exp_avg_sq"],
                                              int(state["step"]), lr, beta1, beta2, eps, maximize)
                except BaseException:
                    state["step"] -= 1   # this parameter did not move
                    raise
        return loss
