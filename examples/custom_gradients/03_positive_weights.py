"""A linear layer whose effective weight is relu(W): weights that are not
positive contribute nothing, and the custom backward lets the weight
gradient through only where W > 0 (the masked weights do not learn).

Checked: the weight gradient is exactly zero where W <= 0, equals the
autodiff gradient of x @ relu(W) elsewhere, matches central differences,
and a few gradient steps reduce the loss while masked weights stay put."""
import numpy as np

import cgrad
from _check import Function, check, finish, numeric_grad, report, t64


class PositiveLinear(Function):
    @staticmethod
    def forward(ctx, x, w):
        w_pos = w.relu()
        ctx.save_for_backward(x, w, w_pos)
        return x @ w_pos

    @staticmethod
    def backward(ctx, g):
        x, w, w_pos = ctx.saved_tensors
        gx = g @ w_pos.T if ctx.needs_input_grad[0] else None
        mask = (w > 0).to(w.dtype)  # only positive weights receive gradient
        gw = (x.T @ g) * mask if ctx.needs_input_grad[1] else None
        return gx, gw


rng = np.random.default_rng(1)
xa = rng.standard_normal((5, 3))
wa = rng.standard_normal((3, 2))
wa[np.abs(wa) < 0.1] = 0.5  # keep clear of the kink at 0 for central differences
target = rng.standard_normal((5, 2))


def loss_fn(x, w):
    return ((PositiveLinear.apply(x, w) - t64(target)) ** 2).mean()


x = t64(xa, requires_grad=True)
w = t64(wa, requires_grad=True)
loss_fn(x, w).backward()
gw = w.grad.numpy()
check("weight gradient is exactly 0 where W <= 0", np.all(gw[wa <= 0] == 0.0))

x2, w2 = t64(xa, requires_grad=True), t64(wa, requires_grad=True)
((x2 @ w2.relu() - t64(target)) ** 2).mean().backward()
report("custom backward vs autodiff of x @ relu(W)  (weight)", gw, w2.grad.numpy(), atol=1e-12)
report("custom backward vs autodiff of x @ relu(W)  (input)", x.grad.numpy(), x2.grad.numpy(), atol=1e-12)
nx, nw = numeric_grad(loss_fn, [xa, wa])
report("custom backward vs central differences (weight)", gw, nw)
report("custom backward vs central differences (input)", x.grad.numpy(), nx)

# train W only: the loss goes down, the non-positive weights never move
w = t64(wa, requires_grad=True)
xin = t64(xa)
first = None
for step in range(50):
    loss = loss_fn(xin, w)
    loss.backward()
    with cgrad.no_grad():
        w -= 0.1 * w.grad
    w.grad = None
    first = loss.item() if first is None else first
print(f"loss {first:.4f} -> {loss.item():.4f} after 50 steps")
check("training reduces the loss", loss.item() < first)
report("non-positive weights did not move", w.detach().numpy()[wa <= 0], wa[wa <= 0], atol=0, rtol=0)
finish()
