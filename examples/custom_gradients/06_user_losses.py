"""Losses a user writes from cgrad ops, with no gradient code at all: the
tape differentiates them. Huber (outlier-robust regression), soft Dice
(segmentation) and multi-class focal (class imbalance) are each checked
against the library's built-in version, values and gradients, and against
central differences."""
import numpy as np

import cgrad
import cgrad.nn.functional as F
from _check import finish, numeric_grad, report, t64


def my_huber(pred, target, delta=1.0):
    """mean of 0.5 d^2 (|d| < delta) or delta (|d| - delta / 2)."""
    d = pred - target
    a = d.abs()
    return cgrad.where(a < delta, 0.5 * d * d, delta * (a - 0.5 * delta)).mean()


def my_dice(logits, labels, smooth=1.0):
    """1 - (2 |P.T| + s) / (|P| + |T| + s) per sample and class, averaged;
    P = softmax over classes, T = one-hot labels."""
    n, c = logits.shape[:2]
    probs = logits.softmax(1).reshape(n, c, -1)
    onehot = (labels.unsqueeze(1) == cgrad.arange(c).reshape(1, c, 1, 1)).to(logits.dtype).reshape(n, c, -1)
    inter = (probs * onehot).sum(2)
    return (1.0 - (2.0 * inter + smooth) / (probs.sum(2) + onehot.sum(2) + smooth)).mean()


def my_focal(logits, labels, gamma=2.0, alpha=None):
    """mean of -alpha[y] (1 - p_y)^gamma log p_y, p = softmax(logits)."""
    logp_y = logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -(1.0 - logp_y.exp()) ** gamma * logp_y
    if alpha is not None:
        loss = loss * alpha.index_select(0, labels)
    return loss.mean()


def compare(name, mine, builtin, arrays):
    """Values, autodiff gradients of both, and central differences of mine."""
    xs = [t64(a, requires_grad=True) for a in arrays]
    ys = [t64(a, requires_grad=True) for a in arrays]
    lm, lb = mine(*xs), builtin(*ys)
    lm.backward()
    lb.backward()
    print(f"{name}: user loss {lm.item():.6f}, built-in {lb.item():.6f}")
    report(f"{name} value vs built-in", lm.item(), lb.item(), atol=1e-12)
    for i, (x, y) in enumerate(zip(xs, ys)):
        report(f"{name} gradient of input {i} vs built-in", x.grad.numpy(), y.grad.numpy(), atol=1e-12)
    for i, (x, num) in enumerate(zip(xs, numeric_grad(mine, list(arrays)))):
        report(f"{name} gradient of input {i} vs central differences", x.grad.numpy(), num, atol=1e-7)


rng = np.random.default_rng(6)

# Huber: regression with two gross outliers; both the prediction and target get gradients
pred, target = rng.standard_normal(8), rng.standard_normal(8)
target[[2, 5]] += [8.0, -6.0]
compare("huber(delta=1.5)", lambda p, t: my_huber(p, t, 1.5),
        lambda p, t: F.huber_loss(p, t, delta=1.5), [pred, target])

# Dice: 2 images of 3x3 pixels, 3 classes
labels = cgrad.tensor(rng.integers(0, 3, (2, 3, 3)))
compare("dice", lambda x: my_dice(x, labels),
        lambda x: F.dice_loss(x, labels, from_logits=True), [rng.standard_normal((2, 3, 3, 3))])

# Focal: 6 samples, 4 classes, per-class alpha
y = cgrad.tensor(rng.integers(0, 4, 6))
alpha = t64([0.25, 1.0, 2.0, 0.5])
compare("focal(gamma=2, alpha)", lambda x: my_focal(x, y, 2.0, alpha),
        lambda x: F.focal_loss(x, y, gamma=2.0, alpha=alpha), [rng.standard_normal((6, 4)) * 2])

# what the focal term does: a confidently right sample is down-weighted far
# more than under cross-entropy, a wrong one hardly at all
easy_hard = t64([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 4.0]])
idx = cgrad.tensor([0, 0])
ce = F.cross_entropy(easy_hard, idx, reduction="none").numpy()
fl = F.focal_loss(easy_hard, idx, reduction="none").numpy()
print(f"easy sample: CE {ce[0]:.4f} -> focal {fl[0]:.6f}; hard sample: CE {ce[1]:.4f} -> focal {fl[1]:.4f}")
report("focal/CE ratio is (1 - p_y)^2", fl / ce, (1 - np.exp(-ce)) ** 2, atol=1e-12)
finish()
