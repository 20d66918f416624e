"""A custom optimizer by subclassing cgrad.optim.Optimizer: Lion.

    python examples/custom_optimizer.py

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")
keeps one momentum buffer and moves every weight by exactly lr per step in
the direction of the sign of an interpolated momentum:

    c = beta1 m + (1 - beta1) g
    p = p (1 - lr wd) - lr sign(c)
    m = beta2 m + (1 - beta2) g

Defining __init__ (defaults go to the param groups) and step() is all it
takes: the base class supplies param groups, state, state_dict, zero_grad,
step hooks and a StepReport for every step. The class trains the digits
MLP of train_digits.py; the first update is checked against the formula in
NumPy.
"""
import time

import numpy as np

import cgrad
from cgrad import nn
from cgrad.nn import functional as F
from cgrad.utils.data import DataLoader
from train_digits import load_data

SEED = 0
EPOCHS = 15
LR, WEIGHT_DECAY = 1e-3, 1e-2  # Lion wants a smaller lr than Adam (every step moves lr)


class Lion(cgrad.optim.Optimizer):
    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        if not lr > 0:
            raise ValueError(f"Lion: lr must be positive, got {lr!r}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lion: betas must be in [0, 1), got {betas!r}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @cgrad.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else cgrad.enable_grad()(closure)()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = cgrad.zeros_like(p)
                m = state["exp_avg"]
                c = m * beta1 + p.grad * (1 - beta1)
                p.mul_(1 - lr * wd)
                p.add_(c.sign(), alpha=-lr)
                m.mul_(beta2)
                m.add_(p.grad, alpha=1 - beta2)
        return loss


def accuracy(model, x, y):
    with cgrad.no_grad():
        return float((model(cgrad.from_numpy(x)).argmax(dim=1).numpy() == y).mean())


def main():
    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load_data()
    cgrad.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = Lion(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    loader = DataLoader((x_train, y_train), batch_size=64, shuffle=True, seed=SEED)
    for epoch in range(1, EPOCHS + 1):
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            if opt.last_report is None:  # the very first step: check it against NumPy
                w, g = model[0].weight.detach().numpy().copy(), model[0].weight.grad.numpy().copy()
            opt.step()
            if opt.last_report.step == 0:
                expected = w * np.float32(1 - LR * WEIGHT_DECAY) - np.float32(LR) * np.sign(g)
                err = np.abs(model[0].weight.detach().numpy() - expected).max()
                print(f"first update vs the formula in NumPy: max difference {err:.1e}")
        if epoch % 5 == 0:
            print(f"epoch {epoch:2d}  loss {loss.item():.4f}  test accuracy "
                  f"{accuracy(model, x_test, y_test):.4f}")
    state = opt.state_dict()
    print(f"{opt.last_report.step + 1} steps; state_dict holds {len(state['state'])} momentum "
          f"buffers; lr in the last report {opt.last_report.lr}")
    print(f"final test accuracy {accuracy(model, x_test, y_test):.4f} "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
