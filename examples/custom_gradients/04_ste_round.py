"""Rounding with a straight-through estimator: forward rounds, backward
passes the gradient through unchanged (a derivative of ones), so a
quantized parameter can still be trained.

Checked: forward equals round(x); the gradient is exactly the incoming
gradient (plain autodiff of round gives zeros); training a weight through
the quantizer reduces the loss."""
import numpy as np

import cgrad
from _check import Function, check, finish, report, t64


class RoundSTE(Function):
    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, g):
        return g  # straight through: d round(x)/dx treated as 1


rng = np.random.default_rng(2)
a = rng.uniform(-3, 3, size=8)
v = rng.standard_normal(8)

x = t64(a, requires_grad=True)
y = RoundSTE.apply(x)
(y * t64(v)).sum().backward()
report("forward equals np.round (half to even)", y.detach().numpy(), np.round(a), atol=0, rtol=0)
report("gradient is the incoming gradient (ones * v)", x.grad.numpy(), v, atol=0, rtol=0)

x2 = t64(a, requires_grad=True)
(x2.round() * t64(v)).sum().backward()
report("plain autodiff of round gives zeros (why STE is needed)", x2.grad.numpy(), np.zeros(8), atol=0, rtol=0)

# fit a weight quantized to steps of 1/4
w = t64(rng.standard_normal(4), requires_grad=True)
target = t64([0.25, -0.5, 1.0, 0.75])
first = None
for step in range(100):
    wq = RoundSTE.apply(w * 4.0) / 4.0
    loss = ((wq - target) ** 2).sum()
    loss.backward()
    with cgrad.no_grad():
        w -= 0.05 * w.grad
    w.grad = None
    first = loss.item() if first is None else first
print(f"loss {first:.4f} -> {loss.item():.4f}; quantized w = {wq.detach().numpy()}")
check("training through the quantizer reaches the target", loss.item() < 1e-12 < first)
finish()
