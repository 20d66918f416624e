"""Hooks on gradients in flight: one records per-tensor gradient statistics,
one clips a single tensor's gradient (by L2 norm) before it flows on.

Checked: the recorded norms equal the norms of the gradients the tape
delivered; the clipped hidden-activation gradient has norm <= the limit and
the weight gradient equals the one computed by hand from the clipped
gradient; removing the hook restores the unclipped gradient."""
import numpy as np

import cgrad
from _check import check, finish, report, t64

rng = np.random.default_rng(7)
X = rng.standard_normal((16, 5))
W1 = t64(rng.standard_normal((5, 8)) * 3, requires_grad=True)
W2 = t64(rng.standard_normal((8, 1)) * 3, requires_grad=True)
MAX_NORM = 0.5

stats = {}


def record(name):
    def hook(g):
        stats[name] = float(np.linalg.norm(g.detach().numpy()))  # inspect only: returns None
    return hook


def clip_to(max_norm):
    def hook(g):
        norm = float(np.linalg.norm(g.detach().numpy()))
        return g * (max_norm / norm) if norm > max_norm else None  # replace the gradient
    return hook


W1.register_hook(record("W1"))
W2.register_hook(record("W2"))
x = t64(X)
h = (x @ W1).tanh()
handle = h.register_hook(clip_to(MAX_NORM))
seen_h = []
h.register_hook(lambda g: seen_h.append(g.detach().numpy().copy()))  # runs after the clip
loss = ((h @ W2) ** 2).mean()
loss.backward()

report("recorded norm of W1's gradient", stats["W1"], np.linalg.norm(W1.grad.numpy()))
report("recorded norm of W2's gradient", stats["W2"], np.linalg.norm(W2.grad.numpy()))
check("hidden gradient clipped to the limit", np.linalg.norm(seen_h[0]) <= MAX_NORM * (1 + 1e-9))
hv = h.detach().numpy()
report("W1 gradient computed from the clipped gradient", W1.grad.numpy(), X.T @ (seen_h[0] * (1 - hv ** 2)))

handle.remove()
W1.grad = None
h2 = (x @ W1).tanh()
((h2 @ W2) ** 2).mean().backward()
y = (hv @ W2.detach().numpy())
g_h = (2 * y / y.size) @ W2.detach().numpy().T
check("the unclipped hidden gradient was above the limit", np.linalg.norm(g_h) > MAX_NORM)
report("without the clip: the plain gradient", W1.grad.numpy(), X.T @ (g_h * (1 - hv ** 2)))
finish()
