"""oracle.py -- one-line op checks for cgrad (value, gradient, second derivative).

    check_op([(3, 4), (4,)], lambda x, y: x * y)

builds the same seeded random float64 inputs as cgrad tensors (and as PyTorch
tensors when torch is importable), then checks, in this order:

 1. the forward value (shape, dtype, numbers) against PyTorch, or against
    ``np_fn`` when given;
 2. the gradient of sum(out * v), v a fixed random tensor, computed by
    ``out.backward(v)``, against float64 central differences of the cgrad
    forward (run under ``cgrad.no_grad()`` on perturbed numpy inputs) --
    the oracle that needs nothing but cgrad itself -- and against PyTorch.
    Inputs above ``max_elems`` elements get a random subset of elements plus
    two random directional derivatives (keeps conv tests fast);
 3. (``gradgrad=True``) the second derivative: g = autograd.grad(out, xs, v,
    create_graph=True), then h = d<g, u>/dxs (u random).  h is the
    Hessian-vector product H u, which equals the directional derivative of
    the first gradient along u, so it is checked against
    (g(x + eps*u) - g(x - eps*u)) / (2*eps) -- two gradient evaluations
    instead of one per element -- and against PyTorch;
 4. (``f32=True``) the same inputs rounded to float32: forward value and
    gradients against the float64 results with loose tolerances.

Argument specs (the first argument of check_op), one per positional argument:
    (3, 4)            random float input in [low, high) that requires grad
    Arg((3, 4), ...)  the same with its own range / requires_grad
    Const(array)      a tensor that does not require grad (index tensors,
                      bool masks, targets); float arrays follow the run dtype
    anything else     passed through unchanged (ints, floats, lists, None)

The callable receives cgrad tensors in one run and torch tensors in the
other; write it with methods both libraries share (``x.sum(1)``), or reach
the library through ``lib(x)`` / ``F(x)`` (``lambda x, w: F(x).conv2d(x, w)``),
or pass a separate ``torch_fn``.

Every mismatch raises AssertionError naming the check, the input index, the
element, and both values.
"""
import numpy as np

import cgrad
import cgrad.nn.functional as cF

try:  # PyTorch is an optional test extra: a second oracle when present.
    import torch
    import torch.nn.functional as tF
except ImportError:  # pragma: no cover - exercised on torch-less installs
    torch = None
    tF = None

HAVE_TORCH = torch is not None

__all__ = ["Arg", "Const", "check_op", "check_third_derivative", "lib", "F", "to_numpy", "assert_close",
           "HAVE_TORCH", "torch"]


class Arg:
    """A float input with its own range and grad flag."""

    def __init__(self, shape, low=None, high=None, requires_grad=True):
        self.shape = tuple(shape)
        self.low = low
        self.high = high
        self.requires_grad = requires_grad


class Const:
    """An argument passed as a tensor that does not require grad."""

    def __init__(self, array):
        self.array = np.asarray(array)


def _is_torch(t):
    return torch is not None and isinstance(t, torch.Tensor)


def lib(t):
    """The library module (cgrad or torch) that tensor t belongs to."""
    return torch if _is_torch(t) else cgrad


def F(t):
    """The nn.functional module matching tensor t."""
    return tF if _is_torch(t) else cF


def to_numpy(t):
    """Copy of a tensor's values as a numpy array (either library)."""
    if _is_torch(t):
        return t.detach().cpu().numpy(force=True).copy()
    return np.array(t.detach().numpy(), copy=True)


def _fmt_index(shape, flat):
    if len(shape) == 0:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def assert_close(what, actual, expected, atol, rtol, names=("cgrad", "expected")):
    """Elementwise |a - e| <= atol + rtol * |e|; NaNs must match positions."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} ({names[0]}) != "
                             f"{expected.shape} ({names[1]})")
    if actual.size == 0:
        return
    a = actual.astype(np.float64).ravel()
    e = expected.astype(np.float64).ravel()
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if not np.array_equal(nan_a, nan_e):
        i = int(np.flatnonzero(nan_a != nan_e)[0])
        raise AssertionError(f"{what}: NaN mismatch at element {_fmt_index(actual.shape, i)}: "
                             f"{names[0]}={a[i]!r}, {names[1]}={e[i]!r}")
    ok = ~nan_a
    same_inf = np.isinf(e) & (a == e)
    with np.errstate(invalid="ignore"):
        diff = np.where(same_inf, 0.0, np.abs(a - e))
        tol = atol + rtol * np.abs(np.where(np.isinf(e), 0.0, e))
        bad = ok & ~(diff <= tol)
    if bad.any():
        excess = np.where(bad, diff - tol, -np.inf)
        i = int(np.argmax(excess))
        raise AssertionError(
            f"{what}: mismatch at element {_fmt_index(actual.shape, i)}: "
            f"{names[0]}={a[i]!r}, {names[1]}={e[i]!r} (|diff|={diff[i]:.3g} > "
            f"tol={tol[i]:.3g}; {int(bad.sum())} of {a.size} elements differ)")


# ------------------------------------------------------------------ inputs
def _make_inputs(specs, rng, low, high):
    """numpy values for every spec; None for pass-through arguments."""
    values = []
    for spec in specs:
        if isinstance(spec, tuple):
            spec = Arg(spec)
        if isinstance(spec, Arg):
            lo = low if spec.low is None else spec.low
            hi = high if spec.high is None else spec.high
            values.append(rng.uniform(lo, hi, size=spec.shape).astype(np.float64))
        elif isinstance(spec, Const):
            values.append(spec.array)
        else:
            values.append(None)
    return values


def _needs_grad(spec):
    if isinstance(spec, tuple):
        return True
    return isinstance(spec, Arg) and spec.requires_grad


def _build(module, specs, values, float_dtype, with_grad):
    """Library tensors for the specs: (args, [(position, tensor)] that need grad)."""
    args, diff = [], []
    for i, (spec, value) in enumerate(zip(specs, values)):
        if value is None:
            args.append(spec)
            continue
        if isinstance(spec, Const):
            if value.dtype == np.bool_:
                dtype = module.bool
            elif np.issubdtype(value.dtype, np.integer):
                dtype = module.int64
            else:
                dtype = float_dtype
            args.append(module.tensor(value, dtype=dtype))
            continue
        rg = with_grad and _needs_grad(spec)
        t = module.tensor(value, dtype=float_dtype, requires_grad=rg)
        args.append(t)
        if rg:
            diff.append((i, t))
    return args, diff


def _is_float(t):
    return t.dtype in ((cgrad.float32, cgrad.float64) if not _is_torch(t)
                       else (torch.float32, torch.float64))


def _grads_backward(out, diff, v, module):
    """Gradient of sum(out * v) through .backward(), zeros where unused."""
    vt = module.tensor(v, dtype=out.dtype)
    out.backward(vt)
    grads = []
    for _, t in diff:
        g = t.grad
        grads.append(np.zeros(tuple(t.shape)) if g is None else to_numpy(g))
    return grads


def _grads_functional(module, out, tensors, v, create_graph):
    vt = module.tensor(v, dtype=out.dtype)
    gs = module.autograd.grad(out, tensors, grad_outputs=vt,
                              create_graph=create_graph, allow_unused=True)
    return list(gs)


# -------------------------------------------------------------- the check
def check_op(specs, fn, torch_fn=None, *, np_fn=None, low=-2.0, high=2.0, positive=False,
             grad=True, gradgrad=True, f32=True, keeps_dtype=True, compare_torch=True, seed=0,
             eps=1e-6, atol=1e-6, rtol=1e-5, fwd_atol=1e-9, fwd_rtol=1e-7, max_elems=64,
             gg_eps=1e-5, gg_atol=1e-5, gg_rtol=1e-4, f32_atol=1e-4, f32_rtol=1e-3):
    """Check one op; see the module docstring. Returns the float64 cgrad output."""
    if positive:
        low, high = 0.5, 2.0
    specs = list(specs)
    rng = np.random.default_rng(seed)
    values = _make_inputs(specs, rng, low, high)
    originals = [None if v is None else v.copy() for v in values]

    # ---- forward, float64
    args, diff = _build(cgrad, specs, values, cgrad.float64, with_grad=True)
    out = fn(*args)
    out_np = to_numpy(out)
    differentiable = grad and _is_float(out) and len(diff) > 0 and out.requires_grad
    if grad and _is_float(out) and diff and not out.requires_grad:
        raise AssertionError(f"output does not require grad although inputs "
                             f"{[i for i, _ in diff]} do (grad_fn={out.grad_fn})")

    use_torch = HAVE_TORCH and compare_torch
    if use_torch:
        targs, tdiff = _build(torch, specs, values, torch.float64, with_grad=True)
        tout = (torch_fn or fn)(*targs)
        tout_np = to_numpy(tout)
        if out_np.dtype != tout_np.dtype:
            raise AssertionError(f"forward dtype: cgrad {out_np.dtype}, torch {tout_np.dtype}")
        assert_close("forward value vs torch", out_np, tout_np, fwd_atol, fwd_rtol,
                     ("cgrad", "torch"))
    if np_fn is not None:
        ref = np.asarray(np_fn(*[v if v is not None else s for v, s in zip(values, specs)]))
        assert_close("forward value vs numpy", out_np, ref, fwd_atol, fwd_rtol,
                     ("cgrad", "numpy"))

    if not differentiable:
        _check_unchanged(args, originals)
        return out

    v = rng.standard_normal(out_np.shape)
    grads = _grads_backward(out, diff, v, cgrad)
    for (i, t), g in zip(diff, grads):
        if g.shape != tuple(t.shape):
            raise AssertionError(f"gradient of input {i}: shape {g.shape}, input {tuple(t.shape)}")
        if t.grad is not None and t.grad.dtype != t.dtype:
            raise AssertionError(f"gradient of input {i}: dtype {t.grad.dtype}, input {t.dtype}")
    _check_unchanged(args, originals)

    # ---- central differences of f(x) = sum(out(x) * v), float64
    def f_at(vals):
        with cgrad.no_grad():
            a, _ = _build(cgrad, specs, vals, cgrad.float64, with_grad=False)
            return to_numpy(fn(*a))

    for (i, _), g in zip(diff, grads):
        base = values[i]
        # Every element of small inputs; for large ones a random subset (the
        # first and last included) plus directional derivatives over all
        # elements, which catch a wrong element outside the subset.
        if base.size <= max_elems:
            elems = np.arange(base.size)
        else:
            pick = rng.choice(np.arange(1, base.size - 1), max_elems - 2, replace=False)
            elems = np.concatenate([[0], np.sort(pick), [base.size - 1]])
        num = np.zeros(len(elems))
        for n, k in enumerate(elems):
            old = base.flat[k]
            base.flat[k] = old + eps
            fp = f_at(values)
            base.flat[k] = old - eps
            fm = f_at(values)
            base.flat[k] = old
            # difference elementwise before the dot with v: outputs that do
            # not depend on this element cancel exactly, large ones included
            num[n] = np.sum((fp - fm) * v) / (2 * eps)
        if base.size <= max_elems:
            assert_close(f"gradient of input {i} vs central differences", g,
                         num.reshape(base.shape), atol, rtol, ("cgrad", "numeric"))
            continue
        picked = g.reshape(-1)[elems]
        try:
            assert_close(f"gradient of input {i} vs central differences", picked, num,
                         atol, rtol, ("cgrad", "numeric"))
        except AssertionError as e:  # name the element in the input's shape
            bad = int(np.argmax(np.abs(picked - num) - atol - rtol * np.abs(num)))
            raise AssertionError(f"{e} [input element {_fmt_index(base.shape, elems[bad])}]")
        for _ in range(2):
            d = rng.standard_normal(base.shape)
            values[i] = base + eps * d
            fp = f_at(values)
            values[i] = base - eps * d
            fm = f_at(values)
            values[i] = base
            dnum = np.sum((fp - fm) * v) / (2 * eps)
            dana = float(np.sum(g * d))
            scale = np.sqrt(base.size)
            if not abs(dana - dnum) <= atol * scale + rtol * scale * abs(dnum):
                raise AssertionError(
                    f"gradient of input {i} vs central differences along a random "
                    f"direction: cgrad={dana!r}, numeric={dnum!r}")

    if use_torch:
        tg = _grads_functional(torch, tout, [t for _, t in tdiff], v, False)
        for (i, _), g, gt in zip(diff, grads, tg):
            gt = np.zeros(g.shape) if gt is None else to_numpy(gt)
            assert_close(f"gradient of input {i} vs torch", g, gt, 1e-8, 1e-6,
                         ("cgrad", "torch"))

    # ---- second derivative: H u against the directional derivative of g
    if gradgrad:
        u = [rng.standard_normal(values[i].shape) for i, _ in diff]
        hu = _hvp(cgrad, specs, values, fn, v, u, cgrad.float64)
        for (i, _), g, g1 in zip(diff, grads, hu[1]):
            assert_close(f"create_graph gradient of input {i} vs plain backward", g1, g,
                         1e-10, 1e-8, ("create_graph", "backward"))

        def grads_at(sign):
            vals = list(values)
            for (i, _), ui in zip(diff, u):
                vals[i] = values[i] + sign * gg_eps * ui
            a, d = _build(cgrad, specs, vals, cgrad.float64, with_grad=True)
            o = fn(*a)
            gs = _grads_functional(cgrad, o, [t for _, t in d], v, False)
            return [np.zeros(vals[i].shape) if g is None else to_numpy(g)
                    for (i, _), g in zip(diff, gs)]

        gp, gm = grads_at(+1.0), grads_at(-1.0)
        for (i, _), h, a, b in zip(diff, hu[0], gp, gm):
            assert_close(f"second derivative (H u) of input {i} vs differences of the gradient",
                         h, (a - b) / (2 * gg_eps), gg_atol, gg_rtol, ("cgrad", "numeric"))
        if use_torch:
            thu = _hvp(torch, specs, values, torch_fn or fn, v, u, torch.float64)
            for (i, _), h, ht in zip(diff, hu[0], thu[0]):
                assert_close(f"second derivative (H u) of input {i} vs torch", h, ht,
                             1e-8, 1e-6, ("cgrad", "torch"))

    # ---- float32: same (rounded) inputs, loose tolerance against float64
    if f32:
        a32, d32 = _build(cgrad, specs, values, cgrad.float32, with_grad=True)
        o32 = fn(*a32)
        if keeps_dtype and _is_float(out) and o32.dtype != cgrad.float32:
            raise AssertionError(f"float32 inputs gave a {o32.dtype} output")
        assert_close("float32 forward vs float64", to_numpy(o32), out_np,
                     f32_atol, f32_rtol, ("float32", "float64"))
        g32 = _grads_backward(o32, d32, v, cgrad)
        for (i, t), g, g64 in zip(d32, g32, grads):
            if t.grad is not None and t.grad.dtype != cgrad.float32:
                raise AssertionError(f"float32 gradient of input {i} has dtype {t.grad.dtype}")
            assert_close(f"float32 gradient of input {i} vs float64", g, g64,
                         f32_atol * 10, f32_rtol * 10, ("float32", "float64"))
    return out


def check_third_derivative(second, x0, u, eps=1e-5, rtol=1e-5, atol=1e-7):
    """Third derivatives against central differences of the second (float64).

    second(x_array, create_graph) -> (x, g2): a leaf x made from x_array and
    a second-order gradient g2 of it (recorded when create_graph); u a
    cgrad tensor of x's shape. d<g2, u>/dx from the tape is compared with
    the central differences of <g2, u> at x0 +- eps per element."""
    x, g2 = second(x0, True)
    (g3,) = cgrad.autograd.grad((g2 * u).sum(), [x])
    fd = np.zeros_like(x0)
    un = to_numpy(u)
    for k in np.ndindex(x0.shape):
        d = np.zeros_like(x0)
        d[k] = eps
        hi = (to_numpy(second(x0 + d, False)[1]) * un).sum()
        lo = (to_numpy(second(x0 - d, False)[1]) * un).sum()
        fd[k] = (hi - lo) / (2 * eps)
    np.testing.assert_allclose(to_numpy(g3), fd, rtol=rtol, atol=atol)


def _hvp(module, specs, values, fn, v, u, float_dtype):
    """(H u per input, first gradients) with create_graph through module."""
    args, diff = _build(module, specs, values, float_dtype, with_grad=True)
    tensors = [t for _, t in diff]
    out = fn(*args)
    gs = _grads_functional(module, out, tensors, v, True)
    first = [np.zeros(tuple(t.shape)) if g is None else to_numpy(g)
             for t, g in zip(tensors, gs)]
    terms = [(g * module.tensor(ui, dtype=float_dtype)).sum()
             for g, ui in zip(gs, u) if g is not None and g.requires_grad]
    if not terms:  # the gradient does not depend on the inputs: H = 0
        return [np.zeros(tuple(t.shape)) for t in tensors], first
    s = terms[0]
    for t in terms[1:]:
        s = s + t
    hs = module.autograd.grad(s, tensors, allow_unused=True)
    return [np.zeros(tuple(t.shape)) if h is None else to_numpy(h)
            for t, h in zip(tensors, hs)], first


def _check_unchanged(args, originals):
    """The op must not have written into its inputs."""
    for i, (a, orig) in enumerate(zip(args, originals)):
        if orig is None or not hasattr(a, "detach"):
            continue
        now = to_numpy(a)
        if now.shape != orig.shape:
            raise AssertionError(f"input {i}: tensor built from a {orig.shape} array has "
                                 f"shape {now.shape}")
        if not np.array_equal(now.astype(np.float64), orig.astype(np.float64), equal_nan=True):
            raise AssertionError(f"input {i} was modified by the op")
