"""Precision as a schedule: float64 for the first steps, float32 after.

    python examples/precision_schedule.py

The digits MLP of train_digits.py (64 -> 128 -> 10, Adam) starts in
float64 and switches to float32 after SWITCH_AT optimizer steps.
PrecisionSchedule does the switch in a step post-hook: parameters and
their gradients (model.to(dtype), same Parameter objects) and Adam's
moments go to float32 together, and the switch is recorded as an event
(printed by the on_switch callback). The loop's only concession is
sched.cast(xb): inputs follow the current dtype. A run in float32 from the
start, with the same initial weights and batches, is the reference.
"""
import time

import cgrad
from cgrad import nn
from cgrad.nn import functional as F
from cgrad.optim import PrecisionSchedule
from cgrad.utils.data import DataLoader
from train_digits import load_data

SEED = 0
EPOCHS = 15
SWITCH_AT = 100  # optimizer steps in float64 (22 steps per epoch)


def accuracy(model, sched, x, y):
    with cgrad.no_grad():
        predicted = model(sched.cast(cgrad.from_numpy(x))).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def train(milestones, data, on_switch=None):
    x_train, x_test, y_train, y_test = data
    cgrad.manual_seed(SEED)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = cgrad.optim.Adam(model.parameters(), lr=1e-3)
    sched = PrecisionSchedule(model, opt, PrecisionSchedule.steps(milestones), on_switch=on_switch)
    loader = DataLoader((x_train, y_train), batch_size=64, shuffle=True, seed=SEED)
    for _ in range(EPOCHS):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(sched.cast(xb)), yb).backward()
            opt.step()
    return model, opt, sched, accuracy(model, sched, x_test, y_test)


def show(event):
    print(f"switch after step {event.step}: {event.old_dtype} -> {event.new_dtype} "
          f"({event.reason}; {event.n_params} parameters, {event.n_state} optimizer state tensors)")


def main():
    start = time.perf_counter()
    data = load_data()
    model, opt, sched, acc = train({0: cgrad.float64, SWITCH_AT: cgrad.float32}, data, show)
    w = model[0].weight
    print(f"after training: weight {w.dtype}, grad {w.grad.dtype}, "
          f"exp_avg {opt.state[w]['exp_avg'].dtype}; {sched.steps} steps, {len(sched.events)} event(s)")
    print(f"float64 -> float32 test accuracy {acc:.4f}")
    *_, ref = train({0: cgrad.float32}, data)
    print(f"float32 throughout test accuracy {ref:.4f}")
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
