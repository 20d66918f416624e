"""A squaring op with a hand-written backward (d/dx x^2 = 2x), checked
against float64 central differences and against cgrad's own autodiff."""
import numpy as np

import cgrad.autograd as ag
from _check import Function, check, finish, numeric_grad, report, t64


class Square(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)  # what backward needs
        return x * x

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_out  # chain rule: dL/dx = dL/dy * 2x


rng = np.random.default_rng(0)
a = rng.standard_normal((3, 4))
v = rng.standard_normal((3, 4))  # a random cotangent: checks every element

x = t64(a, requires_grad=True)
y = Square.apply(x)
print(f"y.grad_fn = {y.grad_fn}")
(y * t64(v)).sum().backward()

report("forward value equals x*x", y.detach().numpy(), a * a, atol=0, rtol=0)
(num,) = numeric_grad(lambda t: (Square.apply(t) * t64(v)).sum(), [a])
report("hand-written backward vs central differences", x.grad.numpy(), num)

x2 = t64(a, requires_grad=True)
((x2 * x2) * t64(v)).sum().backward()
report("hand-written backward vs autodiff of x*x", x.grad.numpy(), x2.grad.numpy(), atol=1e-12)
check("cgrad.autograd.gradcheck(Square.apply, x) passes",
      ag.gradcheck(Square.apply, (t64(a, requires_grad=True),), raise_exception=False))
finish()
