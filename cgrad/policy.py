"""Gradient policies: rules on parameters, applied to their gradients after
backward and before the optimizer steps.

    pol = cgrad.policy.GradientPolicies(model)
    pol.tag(model.encoder, "encoder")
    pol.mask("encoder", lambda p: p > 0)      # only weights now positive learn
    pol.freeze("embed.*")                     # glob over parameter names
    pol.scale(model.head.weight, 0.1)
    pol.noise("*", std=1e-3, seed=0)
    pol.clip_norm("decoder", max_norm=1.0)    # a clip for this group only
    pol.attach(optimizer)                     # runs before every step()
    print("\\n".join(pol.explain(model.head.weight)))

A target is a tensor, a module (its parameters), a tag given with tag(), a
glob over the names of the model's named_parameters() ("*" is every
parameter), or a list of these; it is resolved again at every apply, so
modules built later are covered. Rules run in the order they were added;
freeze drops the gradient (grad = None), so the optimizer skips the
parameter entirely (no momentum, no weight decay) and later rules see no
gradient. Nothing is hidden: explain(param) lists every rule that reaches a
parameter and through which target, and apply() returns what each rule did.
"""
import fnmatch
import math

import numpy as np

from cgrad import _core
from cgrad._core import Tensor
from cgrad._grad_mode import no_grad

__all__ = ["GradientPolicies", "PolicyReport"]


class PolicyReport:
    """What one apply() did: per rule, how many parameters it touched, and
    for clip_norm rules the group norm and whether it clipped. A clip_norm
    rule over gradients on one device leaves its norm there (no wait for
    the GPU): reading rules copies the numbers back."""

    def __init__(self):
        self._rules = []
        self._pending = []  # (entry, float64 [2] (total_norm, clip_coef) on a device)

    @property
    def rules(self):
        while self._pending:
            entry, both = self._pending.pop(0)
            entry.update(_clip_entry(*both.tolist()))
        return self._rules

    def __repr__(self):
        return "PolicyReport(" + ", ".join(f"{r['rule']}: {r['params']}" for r in self.rules) + ")"


def _clip_entry(total, coef):
    return {"total_norm": total, "clipped": coef != 1.0, "clip_coef": coef}


class _Rule:
    def __init__(self, kind, target, describe, **options):
        self.kind = kind
        self.target = target
        self.describe = describe
        self.options = options
        self.rng = None
        if options.get("seed") is not None:
            self.rng = np.random.default_rng(options["seed"])


def _dense(p, rule):
    if p.grad.is_sparse:
        raise NotImplementedError(f"GradientPolicies: {rule.describe} needs a dense gradient; a parameter of "
                                  f"shape {tuple(p.shape)} has a row-sparse one (Embedding(sparse=True))")


def _fn_name(fn):
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return name if name != "<lambda>" else "a lambda"


class GradientPolicies:
    def __init__(self, model=None):
        if model is not None and not hasattr(model, "named_parameters"):
            raise TypeError(f"GradientPolicies: model must have named_parameters() (a Module), got "
                            f"{type(model).__name__}")
        self.model = model
        self._tags = {}    # tag -> list of targets
        self._rules = []
        self.last_report = None  # of the last apply() run by attach()

    # ------------------------------------------------------------ targets
    def _names(self):
        if self.model is None:
            return {}
        return {id(p): n for n, p in self.model.named_parameters()}

    def _resolve(self, target, seen_tags=()):
        """Parameters (unique, in a stable order) that target stands for."""
        out, ids = [], set()

        def add(p):
            if id(p) not in ids:
                ids.add(id(p))
                out.append(p)

        if isinstance(target, Tensor):
            add(target)
        elif isinstance(target, str):
            if target in self._tags:
                if target in seen_tags:
                    raise ValueError(f"GradientPolicies: tag {target!r} refers to itself")
                for t in self._tags[target]:
                    for p in self._resolve(t, seen_tags + (target,)):
                        add(p)
            else:
                if self.model is None:
                    raise ValueError(f"GradientPolicies: {target!r} is not a tag, and name patterns need a "
                                     f"model (GradientPolicies(model))")
                for n, p in self.model.named_parameters():
                    if fnmatch.fnmatchcase(n, target):
                        add(p)
        elif hasattr(target, "named_parameters"):
            for _, p in target.named_parameters():
                add(p)
        elif isinstance(target, (list, tuple, set, frozenset)):
            for t in target:
                for p in self._resolve(t, seen_tags):
                    add(p)
        else:
            raise TypeError(f"GradientPolicies: a target is a Tensor, a Module, a tag or name pattern, "
                            f"or a list of them; got {type(target).__name__}")
        return out

    @staticmethod
    def _target_str(target):
        if isinstance(target, Tensor):
            return f"a tensor of shape {tuple(target.shape)}"
        if isinstance(target, str):
            return repr(target)
        if hasattr(target, "named_parameters"):
            return f"module {type(target).__name__}"
        return "[" + ", ".join(GradientPolicies._target_str(t) for t in target) + "]"

    def tag(self, target, *tags):
        """Give target's parameters these tags (strings), usable as targets."""
        if not tags:
            raise ValueError("tag: give at least one tag name")
        self._resolve(target)  # validates now
        for t in tags:
            if not isinstance(t, str) or not t:
                raise TypeError(f"tag: tag names are non-empty strings, got {t!r}")
            self._tags.setdefault(t, []).append(target)
        return self

    # ------------------------------------------------------------- rules
    def _add(self, kind, target, describe, **options):
        self._resolve(target)  # a bad target fails here, not at the first step
        self._rules.append(_Rule(kind, target, describe, **options))
        return self

    def mask(self, target, fn):
        """grad *= fn(param): fn gets the parameter's current value (detached)
        and returns a bool or float tensor of its shape, e.g. lambda p: p > 0."""
        if not callable(fn):
            raise TypeError(f"mask: fn must be callable, got {type(fn).__name__}")
        return self._add("mask", target, f"mask by {_fn_name(fn)}", fn=fn)

    def freeze(self, target):
        """Drop the gradient (grad = None): the optimizer leaves the parameter alone."""
        return self._add("freeze", target, "freeze (gradient dropped)")

    def scale(self, target, factor):
        """grad *= factor."""
        if not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise ValueError(f"scale: factor must be a finite number, got {factor!r}")
        return self._add("scale", target, f"scale by {factor:g}", factor=float(factor))

    def noise(self, target, std, seed=None):
        """grad += N(0, std^2), drawn from cgrad's generator, or from a
        generator of this rule's own when seed is given."""
        if not isinstance(std, (int, float)) or not (std >= 0 and math.isfinite(std)):
            raise ValueError(f"noise: std must be a finite number >= 0, got {std!r}")
        return self._add("noise", target, f"add Gaussian noise (std {std:g}" +
                         (f", seed {seed})" if seed is not None else ")"), std=float(std), seed=seed)

    def clip_norm(self, target, max_norm, norm_type=2.0):
        """Scale the target's gradients together so their norm is at most
        max_norm (a clip for this group only)."""
        if not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(f"clip_norm: max_norm must be > 0, got {max_norm!r}")
        p = float(norm_type)
        if not (p == math.inf or p > 0):
            raise ValueError(f"clip_norm: norm_type must be > 0 or inf, got {norm_type!r}")
        return self._add("clip_norm", target, f"clip group {p:g}-norm to {max_norm:g}",
                         max_norm=float(max_norm), norm_type=p)

    # ------------------------------------------------------------ applying
    def apply(self):
        """Apply every rule, in order, to the current gradients."""
        report = PolicyReport()
        with no_grad():
            for rule in self._rules:
                params = [p for p in self._resolve(rule.target) if p.grad is not None]
                entry = {"rule": rule.describe, "target": self._target_str(rule.target), "params": len(params)}
                if rule.kind == "freeze":
                    for p in params:
                        p.grad = None
                elif rule.kind == "scale":
                    for p in params:
                        p.grad.mul_(rule.options["factor"])
                elif rule.kind == "mask":
                    for p in params:
                        _dense(p, rule)
                        m = rule.options["fn"](p.detach())
                        if not isinstance(m, Tensor):
                            m = _core.tensor(np.asarray(m), device=p.grad.device)
                        if tuple(m.shape) != tuple(p.shape):
                            raise ValueError(f"mask: {_fn_name(rule.options['fn'])} returned shape "
                                             f"{tuple(m.shape)} for a parameter of shape {tuple(p.shape)}")
                        p.grad.mul_(m.to(p.grad.dtype))
                elif rule.kind == "noise":
                    for p in params:
                        _dense(p, rule)
                        std = rule.options["std"]
                        if rule.rng is not None:
                            z = _core.tensor(rule.rng.standard_normal(tuple(p.shape)), dtype=p.grad.dtype,
                                             device=p.grad.device)
                        else:
                            z = _core.randn(*p.shape, dtype=p.grad.dtype, device=p.grad.device)
                        p.grad.add_(z, alpha=std)
                elif rule.kind == "clip_norm":
                    self._clip(report, entry, params, rule.options["max_norm"],
                               rule.options["norm_type"])
                report._rules.append(entry)
        return report

    @staticmethod
    def _clip(report, entry, params, max_norm, norm_type):
        """The group's clip by norm, clip_grad_norm_'s arithmetic (the
        C core's cg_clip_grad_norm_tensor): its numbers go into entry, or
        stay on the device until report.rules is read."""
        if not params:
            entry.update(_clip_entry(0.0, 1.0))
            return
        both = _core._clip_grad_norm_tensor([p.grad for p in params], max_norm, norm_type)
        if both.device.type != "cpu":
            report._pending.append((entry, both))
        else:
            entry.update(_clip_entry(*both.tolist()))

    def attach(self, optimizer):
        """Run apply() before every optimizer.step() (a step pre-hook).
        Returns the hook's removable handle."""
        if not hasattr(optimizer, "register_step_pre_hook"):
            raise TypeError(f"attach: {type(optimizer).__name__} has no register_step_pre_hook")

        def pre_step(opt, args, kwargs):
            self.last_report = self.apply()

        return optimizer.register_step_pre_hook(pre_step)

    def explain(self, param):
        """Lines saying which rules reach param, in the order they apply."""
        if not isinstance(param, Tensor):
            raise TypeError(f"explain: expected a parameter tensor, got {type(param).__name__}")
        name = self._names().get(id(param))
        head = f"parameter {name!r}" if name else f"parameter of shape {tuple(param.shape)}"
        tags = [t for t in self._tags if any(p is param for p in self._resolve(t))]
        lines = [head + (f" (tags: {', '.join(tags)})" if tags else "")]
        k = 0
        for rule in self._rules:
            if any(p is param for p in self._resolve(rule.target)):
                k += 1
                lines.append(f"  {k}. {rule.describe}  [via {self._target_str(rule.target)}]")
        if k == 0:
            lines.append("  no rule applies: its gradient reaches the optimizer unchanged")
        return lines
