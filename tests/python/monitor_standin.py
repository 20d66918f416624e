"""A stand-in for cgrad.optim's optimizer API that cgrad.monitor hooks into
(param_groups, step pre/post hooks with removable handles, last_report as a
StepReport) with a plain SGD update, plus helpers the monitor tests share.
The tests against the real cgrad.optim are the lead's."""
import dataclasses
import itertools
import math
from collections import OrderedDict
from typing import List, Optional

import numpy as np

import cgrad
from cgrad import nn


@dataclasses.dataclass
class StepReport:
    step: int
    skipped: bool = False
    reason: Optional[str] = None
    grad_norm_before_clip: Optional[float] = None
    grad_norm_after_clip: Optional[float] = None
    max_norm: Optional[float] = None
    clip_coef: Optional[float] = None
    clipped: bool = False
    lrs: List[float] = dataclasses.field(default_factory=list)
    loss_scale: Optional[float] = None
    nonfinite: Optional[int] = None


class _Handle:
    _ids = itertools.count()

    def __init__(self, hooks):
        self._hooks = hooks
        self.id = next(self._ids)

    def remove(self):
        self._hooks.pop(self.id, None)


class StandInSGD:
    """SGD (p -= lr * g under no_grad) with the hook / report API."""

    def __init__(self, params, lr=0.1):
        params = list(params)
        if params and isinstance(params[0], dict):
            self.param_groups = [dict(g, lr=g.get("lr", lr)) for g in params]
            for g in self.param_groups:
                g["params"] = list(g["params"])
        else:
            self.param_groups = [{"params": params, "lr": lr}]
        self._pre, self._post = OrderedDict(), OrderedDict()
        self._count = 0
        self._clip = None
        self.skip_next = None       # reason: the next step() does not update
        self.loss_scale = None
        self.last_report = None

    def register_step_pre_hook(self, hook):
        h = _Handle(self._pre)
        self._pre[h.id] = hook
        return h

    def register_step_post_hook(self, hook):
        h = _Handle(self._post)
        self._post[h.id] = hook
        return h

    def zero_grad(self):
        for g in self.param_groups:
            for p in g["params"]:
                p.grad = None

    def clip_grad_norm_(self, max_norm):
        """Global-norm clipping (PyTorch's formula) whose numbers the next
        step reports."""
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        total = math.sqrt(sum(float(np.sum(gr.numpy().astype(np.float64) ** 2)) for gr in grads))
        coef = max_norm / (total + 1e-6)
        clipped = coef < 1.0
        if clipped:
            with cgrad.no_grad():
                for gr in grads:
                    gr.mul_(coef)
        self._clip = (total, total * min(coef, 1.0), float(max_norm), min(coef, 1.0), clipped)
        return total

    def step(self, closure=None):
        args, kwargs = ((closure,) if closure is not None else ()), {}
        for hook in list(self._pre.values()):
            res = hook(self, args, kwargs)
            if res is not None:
                args, kwargs = res
        closure = args[0] if args else kwargs.get("closure")
        loss = None
        if closure is not None:
            with cgrad.enable_grad():
                loss = closure()
        rep = StepReport(step=self._count, lrs=[g["lr"] for g in self.param_groups],
                         loss_scale=self.loss_scale)
        if self._clip is not None:
            (rep.grad_norm_before_clip, rep.grad_norm_after_clip, rep.max_norm,
             rep.clip_coef, rep.clipped) = self._clip
            self._clip = None
        if self.skip_next is not None:
            rep.skipped, rep.reason = True, self.skip_next
            self.skip_next = None
        else:
            with cgrad.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        if p.grad is not None:
                            p.sub_(p.grad * g["lr"])
        self._count += 1
        self.last_report = rep
        for hook in list(self._post.values()):
            hook(self, args, kwargs)
        return loss


def mlp(sizes=(4, 8, 3), seed=0):
    cgrad.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def batch(n=16, d_in=4, n_cls=3, seed=1):
    rng = np.random.default_rng(seed)
    x = cgrad.from_numpy(rng.standard_normal((n, d_in)).astype(np.float32))
    y = cgrad.from_numpy(rng.integers(0, n_cls, n).astype(np.int64))
    return x, y


def loss_of(model, x, y):
    out = model(x.to(next(model.parameters()).dtype))
    return nn.functional.cross_entropy(out, y)


def train_steps(model, opt, run, n, x, y):
    """n watched training steps (zero_grad, forward, backward, step,
    run.log_loss); returns the losses."""
    losses = []
    for _ in range(n):
        opt.zero_grad()
        loss = loss_of(model, x, y)
        loss.backward()
        opt.step()
        run.log_loss(loss)
        losses.append(float(loss.item()))
    return losses
