"""A weighted squared-error loss, L = sum(w * (y - yhat)^2) / N, whose
gradient dL/dyhat = -2 w (y - yhat) / N is supplied by hand, compared with
the autodiff gradient of the same loss written with cgrad ops."""
import numpy as np

from _check import Function, finish, numeric_grad, report, t64


class WeightedMSE(Function):
    @staticmethod
    def forward(ctx, yhat, y, w):
        n = yhat.numel()
        diff = y - yhat
        ctx.save_for_backward(diff, w)
        ctx.n = n
        return (w * diff * diff).sum() / n

    @staticmethod
    def backward(ctx, g):
        diff, w = ctx.saved_tensors
        grad_yhat = -2.0 * w * diff / ctx.n * g
        grad_y = -grad_yhat if ctx.needs_input_grad[1] else None
        return grad_yhat, grad_y, None  # no gradient for the weights


rng = np.random.default_rng(3)
ya, yta = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
wa = rng.uniform(0.1, 2.0, (4, 3))

yhat = t64(ya, requires_grad=True)
y = t64(yta, requires_grad=True)
loss = WeightedMSE.apply(yhat, y, t64(wa))
loss.backward()

yhat2, y2 = t64(ya, requires_grad=True), t64(yta, requires_grad=True)
loss2 = (t64(wa) * (y2 - yhat2) ** 2).sum() / yhat2.numel()
loss2.backward()

report("loss value vs the same loss in cgrad ops", loss.item(), loss2.item(), atol=1e-14)
report("hand gradient dL/dyhat vs autodiff", yhat.grad.numpy(), yhat2.grad.numpy(), atol=1e-14)
report("hand gradient dL/dy vs autodiff", y.grad.numpy(), y2.grad.numpy(), atol=1e-14)
report("hand gradient dL/dyhat vs formula -2 w (y - yhat) / N", yhat.grad.numpy(),
       -2 * wa * (yta - ya) / ya.size, atol=1e-14)
(num,) = numeric_grad(lambda t: WeightedMSE.apply(t, t64(yta), t64(wa)), [ya])
report("hand gradient vs central differences", yhat.grad.numpy(), num)
finish()
