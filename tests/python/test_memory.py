"""Memory does not grow over long training loops.

Resident set size (from /proc/self/statm) is sampled after a warm-up, so
allocator pools and lazily created caches are already in place, and again
after thousands of steps. A leak of one activation per step (a few KB)
over 5,000 steps would show as tens of MB; the slack allows for allocator
noise only.
"""
import gc
import os

import numpy as np
import pytest

import cgrad
from cgrad.nn import functional as F

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="needs /proc/self/statm (Linux)")

STEPS = 5000
WARMUP = 500
SLACK_BYTES = 8 * 1024 * 1024


def rss_bytes():
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def make_mlp(sizes=(64, 32, 10)):
    cgrad.manual_seed(0)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = cgrad.randn(fan_in, fan_out) * (2.0 / fan_in) ** 0.5
        params += [w.detach().requires_grad_(), cgrad.zeros(fan_out, requires_grad=True)]
    return params


def forward(params, x):
    w1, b1, w2, b2 = params
    return F.relu(x @ w1 + b1) @ w2 + b2


def make_batches(n=8, batch=32):
    rng = np.random.default_rng(0)
    xs = [cgrad.tensor(rng.standard_normal((batch, 64)).astype(np.float32)) for _ in range(n)]
    ys = [cgrad.tensor(rng.integers(0, 10, batch)) for _ in range(n)]
    return xs, ys


def growth_over(steps, step_fn):
    for i in range(WARMUP):
        step_fn(i)
    gc.collect()
    before = rss_bytes()
    for i in range(steps):
        step_fn(i)
    gc.collect()
    return rss_bytes() - before


def test_training_loop_rss_is_flat():
    params = make_mlp()
    xs, ys = make_batches()
    losses = []

    def train_step(i):
        loss = F.cross_entropy(forward(params, xs[i % 8]), ys[i % 8])
        loss.backward()
        with cgrad.no_grad():
            for p in params:
                p -= 0.05 * p.grad
                p.grad = None
        if i % 1000 == 0:
            losses.append(loss.item())

    growth = growth_over(STEPS, train_step)
    assert growth < SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MB over {STEPS} steps"
    assert losses[-1] < losses[0], losses  # it did train


def test_forward_graphs_without_backward_are_released():
    params = make_mlp()
    xs, ys = make_batches()

    def forward_only(i):
        # Each graph saves its activations; dropping the loss must free them.
        loss = F.cross_entropy(forward(params, xs[i % 8]), ys[i % 8])
        assert loss.requires_grad

    growth = growth_over(STEPS, forward_only)
    assert growth < SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MB over {STEPS} graphs"


def test_retained_graph_backward_then_drop_is_released():
    params = make_mlp()
    xs, ys = make_batches()

    def step(i):
        loss = F.cross_entropy(forward(params, xs[i % 8]), ys[i % 8])
        loss.backward(retain_graph=True)
        loss.backward()
        for p in params:
            p.grad = None

    growth = growth_over(STEPS // 2, step)
    assert growth < SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MB"


def test_create_graph_double_backward_is_released():
    params = make_mlp()
    xs, ys = make_batches()

    def step(i):
        loss = F.cross_entropy(forward(params, xs[i % 8]), ys[i % 8])
        grads = cgrad.autograd.grad(loss, params, create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        penalty.backward()
        for p in params:
            p.grad = None

    growth = growth_over(STEPS // 2, step)
    assert growth < SLACK_BYTES, f"RSS grew by {growth / 2**20:.1f} MB"
