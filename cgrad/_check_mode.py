"""Check mode: custom gradients validated the first time they are used.

    cgrad.autograd.set_check_mode(True)      # every Function class
    class MyFn(cgrad.autograd.Function):
        check_mode = True                     # or just this one

The first ``apply`` of each Function class (per process) is followed by:
- a float64 finite-difference check of its backward along random directions
  (cost: two forwards and one backward per input and direction, whatever the
  size), and when one fails on an input of at most ``_FULL_LIMIT`` elements,
  a full gradcheck that names the element; straight-through Functions
  (cgrad.ste) are checked against the surrogate they declare;
- with ``double_backward=True``, the same check of the backward's own
  derivative (the Hessian-vector product);
- a RuntimeWarning when forward kept a Tensor on ``ctx`` outside
  ``save_for_backward`` (no version check protects it).

A failure raises GradcheckError naming the Function, the input and the
values; the Function is checked again on its next apply."""
import warnings

import numpy as np

from cgrad import _core
from cgrad._core import Tensor, float64
from cgrad._grad_mode import enable_grad, no_grad
from cgrad._gradcheck import GradcheckError, _host, gradcheck

__all__ = ["set_check_mode", "is_check_mode_enabled", "check_function"]

_FULL_LIMIT = 256
_DIRECTIONS = 2
_options = {"double_backward": False, "eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}


def set_check_mode(enabled=True, double_backward=False, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Turns check mode on or off for every custom Function (a Function's
    own ``check_mode`` attribute, True or False, wins). Returns the previous
    setting."""
    for name, v in (("eps", eps), ("atol", atol), ("rtol", rtol)):
        if not (isinstance(v, (int, float)) and v >= 0) or (name == "eps" and v == 0):
            raise ValueError(f"set_check_mode: {name} must be a positive number, got {v!r}")
    _options.update(double_backward=bool(double_backward), eps=float(eps), atol=float(atol),
                    rtol=float(rtol))
    return _core._set_check_mode_flag(bool(enabled))


def is_check_mode_enabled():
    return bool(_core._check_mode_on)


def _float64_inputs(args, kwargs):
    """float64 leaf copies of the floating tensor arguments, and a function
    rebuilding (args, kwargs) from replacements."""
    slots = []  # (where, key) of each tensor that requires grad
    xs = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.requires_grad and a.is_floating_point():
            slots.append((0, i))
            xs.append(a.detach().to(float64).clone().requires_grad_())
    for k, a in kwargs.items():
        if isinstance(a, Tensor) and a.requires_grad and a.is_floating_point():
            slots.append((1, k))
            xs.append(a.detach().to(float64).clone().requires_grad_())

    def rebuild(new):
        a2, k2 = list(args), dict(kwargs)
        for (where, key), x in zip(slots, new):
            if where == 0:
                a2[key] = x
            else:
                k2[key] = x
        return a2, k2

    return xs, slots, rebuild


def _tensor_outputs(out):
    outs = out if isinstance(out, tuple) else (out,)
    return [o for o in outs if isinstance(o, Tensor) and o.is_floating_point()]


def _runner(cls, rebuild):
    call = getattr(cls, "call", None)  # straight-through Functions: surrogate-aware entry
    apply = call if call is not None and getattr(cls, "deliberate_mismatch", False) else cls.apply

    def f(*xs):
        a, k = rebuild(xs)
        return _tensor_outputs(apply(*a, **k))

    return f


def _dot(outs, vs):
    total = None
    for o, v in zip(outs, vs):
        term = (o * v).sum()
        total = term if total is None else total + term
    return total


def _setter(x):
    """(values, set(new_values)) for perturbing x in place: through a shared
    NumPy view on the host, through copy_ on a device."""
    if x.device == "cpu":
        arr = x.detach().numpy()

        def put(v):
            arr[...] = v
        return arr.copy(), put

    def put(v):
        with no_grad():
            x.detach().copy_(_core.tensor(np.asarray(v), dtype=x.dtype))
    return _host(x), put


def _numeric_directional(f, xs, i, u, vs, eps):
    from cgrad.ste import surrogate_mode

    base, put = _setter(xs[i])
    with no_grad(), surrogate_mode() as sm:
        f(*xs)  # base point for straight-through surrogates
        vals = []
        for sign in (1.0, -1.0):
            put(base + sign * eps * u)
            sm.start_pass()
            outs = f(*xs)
            vals.append(sum(float((_host(o).astype(np.float64) * v).sum())
                            for o, v in zip(outs, vs)))
        put(base)
    return (vals[0] - vals[1]) / (2 * eps)


def _first_order(cls, f, xs, rng):
    with enable_grad():
        outs = f(*xs)
    if not outs:
        return
    vs = [rng.standard_normal(o.shape) for o in outs]
    with enable_grad():
        total = _dot(outs, [_core.tensor(v, dtype=o.dtype, device=o.device) for o, v in zip(outs, vs)])
        grads = _core.autograd_grad([total], xs, allow_unused=True)
    for i, x in enumerate(xs):
        g = np.zeros(x.shape) if grads[i] is None else _host(grads[i]).astype(np.float64)
        for _ in range(_DIRECTIONS):
            u = rng.standard_normal(x.shape)
            analytical = float((g * u).sum())
            numerical = _numeric_directional(f, xs, i, u, vs, _options["eps"])
            if abs(analytical - numerical) > _options["atol"] + _options["rtol"] * abs(numerical):
                detail = ""
                if x.numel() <= _FULL_LIMIT:
                    try:
                        gradcheck(f, xs, eps=_options["eps"], atol=_options["atol"], rtol=_options["rtol"])
                    except GradcheckError as e:
                        detail = f"; full gradcheck: {e}"
                raise GradcheckError(
                    f"check mode: {cls.__name__}.backward disagrees with finite differences for "
                    f"differentiable input {i} (shape {x.shape}): directional derivative "
                    f"analytical={analytical:.8g} numerical={numerical:.8g}{detail}")


def _second_order(cls, f, xs, rng):
    with enable_grad():
        outs = f(*xs)
        if not outs:
            return
        vs = [_core.tensor(rng.standard_normal(o.shape), dtype=o.dtype, device=o.device) for o in outs]
        ws = [_core.tensor(rng.standard_normal(x.shape), dtype=x.dtype, device=x.device) for x in xs]
        grads = _core.autograd_grad([_dot(outs, vs)], xs, create_graph=True, allow_unused=True)
        pairs = [(g, w) for g, w in zip(grads, ws) if g is not None and g.requires_grad]
        if pairs:
            inner = _dot([g for g, _ in pairs], [w for _, w in pairs])
            hv = _core.autograd_grad([inner], xs, allow_unused=True)
        else:  # the gradient does not depend on x on the tape: zero second derivative
            hv = [None] * len(xs)
    eps = _options["eps"]
    for i, x in enumerate(xs):
        u = rng.standard_normal(x.shape)
        h = np.zeros(x.shape) if hv[i] is None else _host(hv[i])
        analytical = float((h * u).sum())
        base, put = _setter(x)
        vals = []
        for sign in (1.0, -1.0):
            put(base + sign * eps * u)
            with enable_grad():
                o2 = f(*xs)
                g2 = _core.autograd_grad([_dot(o2, vs)], xs, allow_unused=True)
            vals.append(sum(float((_host(g) * _host(w)).sum()) for g, w in zip(g2, ws) if g is not None))
        put(base)
        numerical = (vals[0] - vals[1]) / (2 * eps)
        if abs(analytical - numerical) > _options["atol"] * 10 + _options["rtol"] * 10 * abs(numerical):
            raise GradcheckError(
                f"check mode: the derivative of {cls.__name__}.backward (double backward) disagrees "
                f"with finite differences for differentiable input {i}: analytical={analytical:.8g} "
                f"numerical={numerical:.8g}")


def check_function(cls, args, kwargs):
    """Checks cls's backward at (float64 copies of) these arguments; raises
    GradcheckError naming the Function and the input on disagreement."""
    xs, _, rebuild = _float64_inputs(args, kwargs)
    if not xs:
        return  # nothing differentiable: nothing to check
    f = _runner(cls, rebuild)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        # The check re-applies cls: its warnings were already given once.
        warnings.simplefilter("ignore", RuntimeWarning)
        _first_order(cls, f, xs, rng)
        if _options["double_backward"] and not getattr(cls.backward, "_cg_once_differentiable", False):
            _second_order(cls, f, xs, rng)
