"""LeakyReLU (slope 0.2) with a hand-written gradient in TensorFlow's
@custom_gradient form: the function returns (output, grad_fn).

Checked: the custom gradient equals float64 central differences away from
the kink and equals autodiff of the same expression; the slope passed as a
keyword argument is honoured (TensorFlow would silently drop the custom
gradient there)."""
import numpy as np

import cgrad
from _check import finish, numeric_grad, report, t64

SLOPE = 0.2


@cgrad.custom_gradient
def leaky_relu(x, slope=SLOPE):
    positive = x > 0
    y = cgrad.where(positive, x, x * slope)

    def grad_fn(dy):
        return cgrad.where(positive, dy, dy * slope), None  # one per argument: x, slope

    return y, grad_fn


rng = np.random.default_rng(1)
a = rng.uniform(0.1, 2.0, size=(3, 4)) * rng.choice([-1.0, 1.0], size=(3, 4))  # away from 0
v = rng.standard_normal((3, 4))

x = t64(a, requires_grad=True)
(leaky_relu(x) * t64(v)).sum().backward()
(numeric,) = numeric_grad(lambda t: (leaky_relu(t) * t64(v)).sum(), [a])
report("custom gradient vs central differences", x.grad.numpy(), numeric)

x2 = t64(a, requires_grad=True)
(x2.leaky_relu(SLOPE) * t64(v)).sum().backward()
report("custom gradient vs autodiff of leaky_relu", x.grad.numpy(), x2.grad.numpy())

x3 = t64(a, requires_grad=True)
(leaky_relu(x3, slope=0.5) * t64(v)).sum().backward()
report("keyword slope=0.5 is used by forward and gradient", x3.grad.numpy(),
       np.where(a > 0, 1.0, 0.5) * v)
finish()
