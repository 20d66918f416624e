"""Double backward through a custom Function: its backward is written with
cgrad ops, so with create_graph=True the gradient is itself differentiable.
A Hessian-vector product H u of L(x) = sum(softplus_custom(x) * x) is
checked against central differences of the gradient along u."""
import numpy as np

import cgrad.autograd as ag
from _check import Function, check, finish, report, t64


class Softplus(Function):
    """log(1 + exp(x)), derivative sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x.exp() + 1.0).log()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x.sigmoid()  # cgrad ops: recorded when create_graph=True


def loss_fn(x):
    return (Softplus.apply(x) * x).sum()


def grad_at(a, create_graph=False):
    x = t64(a, requires_grad=True)
    (g,) = ag.grad(loss_fn(x), x, create_graph=create_graph)
    return x, g


rng = np.random.default_rng(4)
a = rng.standard_normal(6)
u = rng.standard_normal(6)

x, g = grad_at(a, create_graph=True)
(hvp,) = ag.grad((g * t64(u)).sum(), x)

sig = 1 / (1 + np.exp(-a))
report("gradient vs formula sigmoid(x)*x + softplus(x)", g.detach().numpy(),
       sig * a + np.log1p(np.exp(a)), atol=1e-12)
eps = 1e-5
num = (grad_at(a + eps * u)[1].numpy() - grad_at(a - eps * u)[1].numpy()) / (2 * eps)
report("Hessian-vector product vs central differences of the gradient", hvp.numpy(), num,
       atol=1e-8, rtol=1e-6)
hess_diag = sig * (1 - sig) * a + 2 * sig  # the Hessian is diagonal here
report("Hessian-vector product vs closed form", hvp.numpy(), hess_diag * u, atol=1e-12)
check("cgrad.autograd.gradgradcheck(Softplus.apply, x) passes",
      ag.gradgradcheck(Softplus.apply, (t64(a, requires_grad=True),), raise_exception=False))
finish()
