"""Train an MLP on scikit-learn's bundled 8x8 digits with cgrad alone.

    python examples/train_digits.py

64 -> 128 -> 10 with ReLU, cross-entropy, SGD with momentum written out by
hand under cgrad.no_grad(). The data ships with scikit-learn (no download);
the split and the initial weights are fixed, so every run prints the same
numbers. Reaches about 97% test accuracy in a few seconds.
"""
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import cgrad
from cgrad.nn import functional as F

SEED = 0
HIDDEN = 128
EPOCHS = 20
BATCH = 64
LR = 0.05
MOMENTUM = 0.9


def load_data():
    """Standardised float32 features (fitted on the training split) and int64 labels."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.astype(np.float32), digits.target.astype(np.int64),
        test_size=0.25, random_state=SEED, stratify=digits.target)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0) + 1e-6  # a few border pixels are always 0
    return (x_train - mean) / std, (x_test - mean) / std, y_train, y_test


def init_params(sizes):
    """He-initialised weights (in, out) and zero biases, all leaves requiring grad."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = cgrad.randn(fan_in, fan_out) * (2.0 / fan_in) ** 0.5
        params += [w.detach().requires_grad_(), cgrad.zeros(fan_out, requires_grad=True)]
    return params


def forward(params, x):
    w1, b1, w2, b2 = params
    return F.relu(x @ w1 + b1) @ w2 + b2


def accuracy(params, x, y):
    with cgrad.no_grad():
        predicted = forward(params, cgrad.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def main():
    start = time.perf_counter()
    cgrad.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    x_train, x_test, y_train, y_test = load_data()
    params = init_params([x_train.shape[1], HIDDEN, 10])
    velocity = [cgrad.zeros_like(p) for p in params]

    for epoch in range(1, EPOCHS + 1):
        order = rng.permutation(len(x_train))
        total, seen = 0.0, 0
        for first in range(0, len(order), BATCH):
            rows = order[first:first + BATCH]
            xb, yb = cgrad.from_numpy(x_train[rows]), cgrad.from_numpy(y_train[rows])
            loss = F.cross_entropy(forward(params, xb), yb)
            loss.backward()
            with cgrad.no_grad():
                for p, v in zip(params, velocity):
                    v.mul_(MOMENTUM)
                    v.add_(p.grad)
                    p -= LR * v
                    p.grad = None
            total += loss.item() * len(rows)
            seen += len(rows)
        print(f"epoch {epoch:2d}  train loss {total / seen:.4f}  "
              f"test accuracy {accuracy(params, x_test, y_test):.4f}")

    test_accuracy = accuracy(params, x_test, y_test)
    print(f"final test accuracy {test_accuracy:.4f} ({len(y_test)} digits, "
          f"{time.perf_counter() - start:.1f} s)")
    return test_accuracy


if __name__ == "__main__":
    main()
