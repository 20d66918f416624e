"""gradcheck / gradgradcheck: analytical Jacobians from the tape against
float64 central differences (PyTorch's names and defaults)."""
import numpy as np

from cgrad._core import Tensor, autograd_grad, float64, tensor
from cgrad._grad_mode import enable_grad, no_grad

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]


class GradcheckError(RuntimeError):
    """A gradient disagrees with finite differences (names input and element)."""


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(fn, inputs):
    outs = _as_tuple(fn(*inputs))
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: output {i} of the function is {type(o).__name__}, not a Tensor")
    return outs


def _host(t):
    """t's values as a new NumPy array, whatever its device."""
    return t.detach().cpu().numpy().copy()  # cpu() is t itself on the host


def _diff_inputs(inputs):
    picked = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            if x.dtype is not float64:
                raise ValueError(f"gradcheck: input {i} requires grad but is {x.dtype!r}; "
                                 "finite differences need float64 inputs")
            if not x.is_leaf:
                raise ValueError(f"gradcheck: input {i} must be a leaf tensor (use .detach().requires_grad_())")
            picked.append(i)
    if not picked:
        raise ValueError("gradcheck: no input requires grad")
    return picked


def _numerical_jacobians(fn, inputs, picked, eps):
    """jac[i][o] has shape (numel(output o), numel(input i)). Straight-through
    ops (cgrad.ste) move with their declared surrogate here (see
    ste.surrogate_mode), so their deliberate forward/backward mismatch is
    checked against what they claim."""
    from cgrad.ste import surrogate_mode

    with no_grad(), surrogate_mode() as surrogates:
        base = _outputs(fn, inputs)
        surrogates.start_pass()
        jac = {}
        for i in picked:
            x = inputs[i]
            on_host = x.device == "cpu"
            # Host inputs are perturbed in place through a shared NumPy view;
            # device inputs through a host copy written back with copy_.
            arr = x.detach().numpy() if on_host else _host(x)
            flat = arr.reshape(-1) if arr.flags.c_contiguous else None
            if flat is None:
                raise ValueError(f"gradcheck: input {i} must be contiguous")

            def put(e, value, x=x, flat=flat, on_host=on_host):
                flat[e] = value
                if not on_host:
                    x.detach().copy_(tensor(flat.reshape(x.shape), dtype=float64))

            cols = {o: np.zeros((base[o].numel(), flat.size)) for o in range(len(base))}
            for e in range(flat.size):
                orig = flat[e]
                put(e, orig + eps)
                surrogates.start_pass()
                plus = [_host(o).astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
                put(e, orig - eps)
                surrogates.start_pass()
                minus = [_host(o).astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
                put(e, orig)
                for o in range(len(base)):
                    cols[o][:, e] = (plus[o] - minus[o]) / (2 * eps)
            jac[i] = cols
    return jac


def _analytical_jacobians(fn, inputs, picked):
    outs = _outputs(fn, inputs)
    diff = [inputs[i] for i in picked]
    jac = {i: {} for i in picked}
    for o, out in enumerate(outs):
        n_out = out.numel()
        for i in picked:
            jac[i][o] = np.zeros((n_out, inputs[i].numel()))
        if not out.requires_grad:
            continue
        for r in range(n_out):
            seed = np.zeros(n_out)
            seed[r] = 1.0
            gout = tensor(seed.reshape(out.shape), dtype=out.dtype, device=out.device)
            grads = autograd_grad(out, diff, gout, retain_graph=True, allow_unused=True)
            for i, g in zip(picked, grads):
                if g is not None:
                    g = g.to_dense() if g.is_sparse else g
                    jac[i][o][r, :] = _host(g).astype(np.float64).reshape(-1)
    return jac


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """True when the tape's Jacobian of fn matches central differences for
    every float64 input that requires grad. On a mismatch raises
    GradcheckError naming the output, the input, the element and both values
    (or returns False with raise_exception=False)."""
    inputs = _as_tuple(inputs)
    picked = _diff_inputs(inputs)
    numerical = _numerical_jacobians(fn, inputs, picked, eps)
    analytical = _analytical_jacobians(fn, inputs, picked)
    for i in picked:
        shape = inputs[i].shape
        for o, num in numerical[i].items():
            ana = analytical[i][o]
            bad = ~(np.abs(ana - num) <= atol + rtol * np.abs(num))
            if bad.any():
                r, e = (int(v) for v in np.argwhere(bad)[0])
                index = np.unravel_index(e, shape) if shape else ()
                msg = (f"Jacobian mismatch for output {o} (flat element {r}) with respect to input {i}, "
                       f"element {tuple(int(v) for v in index)}: analytical {float(ana[r, e])!r}, "
                       f"numerical {float(num[r, e])!r}")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, seed=0):
    """gradcheck of the vector-Jacobian product of fn: checks second
    derivatives (the backward of fn's backward). grad_outputs default to
    random float64 tensors that require grad."""
    inputs = _as_tuple(inputs)
    picked = _diff_inputs(inputs)
    outs = _outputs(fn, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(seed)
        grad_outputs = tuple(tensor(rng.standard_normal(o.shape), dtype=float64, requires_grad=True,
                                    device=o.device) for o in outs)
    grad_outputs = _as_tuple(grad_outputs)
    if len(grad_outputs) != len(outs):
        raise ValueError(f"gradgradcheck: {len(grad_outputs)} grad_outputs for {len(outs)} outputs")
    n_in = len(inputs)

    def vjp(*args):
        xs, gos = args[:n_in], args[n_in:]
        with enable_grad():  # also inside the no-grad finite differences
            ys = _outputs(fn, xs)
            diff = [xs[i] for i in picked]
            grads = autograd_grad(list(ys), diff, list(gos), create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(vjp, inputs + grad_outputs, eps, atol, rtol, raise_exception)
