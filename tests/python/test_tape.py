"""Tape semantics: one test per rule of the autograd tape.

Accumulation, retain_graph, create_graph, autograd.grad, grad mode, detach,
the GAN pattern, in-place checks, very deep graphs, .grad assignment and the
NumPy bridge. The float64 oracles are closed forms or central differences;
nothing here needs PyTorch.
"""
import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import cgrad
from cgrad.nn import functional as F

CGRAD_PARENT = Path(cgrad.__file__).resolve().parent.parent  # the cgrad under test


def leaf(values, dtype=cgrad.float64):
    return cgrad.tensor(values, dtype=dtype, requires_grad=True)


def as_np(t):
    return np.asarray(t.detach().numpy())


def run_python(code, timeout=300):
    """Runs code in a fresh interpreter (a crash there cannot take pytest down)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=CGRAD_PARENT, env=dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )


# ------------------------------------------------------------ accumulation

def test_leaf_grads_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [2.0, 4.0, 6.0])
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [5.0, 7.0, 9.0])


def test_leaf_used_twice_in_one_graph_sums_both_paths():
    x = leaf([2.0])
    (x * x + x).sum().backward()  # d/dx (x^2 + x) = 2x + 1
    np.testing.assert_allclose(as_np(x.grad), [5.0])


def test_non_leaf_gets_no_grad_and_leaf_flags():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    assert x.is_leaf and x.grad_fn is None
    assert not y.is_leaf and y.grad_fn is not None and y.requires_grad
    y.sum().backward()
    assert y.grad is None
    np.testing.assert_allclose(as_np(x.grad), [2.0, 2.0])


# ----------------------------------------------------------- retain_graph

def test_retain_graph_allows_second_backward():
    x = leaf([1.0, -2.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(as_np(x.grad), [4.0, -8.0])


def test_second_backward_without_retain_graph_raises_naming_the_op():
    x = leaf(3.0)
    loss = x * x  # the root is a mul entry that saves both inputs
    loss.backward()
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    message = str(info.value).lower()
    assert "mul" in message, message
    assert "second time" in message or "retain_graph" in message, message
    # The first backward's result is intact.
    np.testing.assert_allclose(as_np(x.grad), 6.0)


# ----------------------------------------------------------- create_graph

def test_create_graph_second_derivative_of_cube():
    x = leaf([-1.5, 0.5, 2.0])
    (x ** 3).sum().backward(create_graph=True)
    dx = x.grad
    assert dx.requires_grad
    np.testing.assert_allclose(as_np(dx), 3 * np.array([-1.5, 0.5, 2.0]) ** 2)
    (d2,) = cgrad.autograd.grad(dx.sum(), [x])
    np.testing.assert_allclose(as_np(d2), 6 * np.array([-1.5, 0.5, 2.0]))


def test_autograd_grad_create_graph_third_derivative():
    x = leaf([0.3, 1.7])
    (g1,) = cgrad.autograd.grad((x ** 3).sum(), [x], create_graph=True)
    (g2,) = cgrad.autograd.grad(g1.sum(), [x], create_graph=True)
    (g3,) = cgrad.autograd.grad(g2.sum(), [x])
    np.testing.assert_allclose(as_np(g2), [1.8, 10.2])
    np.testing.assert_allclose(as_np(g3), [6.0, 6.0])


def _mlp_params(rng):
    shapes = [(5, 7), (7,), (7, 3), (3,)]
    return [rng.standard_normal(s) * 0.7 for s in shapes]


def _mlp_loss(params, x, target):
    w1, b1, w2, b2 = params
    h = cgrad.tanh(x @ w1 + b1)
    out = h @ w2 + b2
    return F.mse_loss(out, target)


def _mlp_grads(param_arrays, x, target, create_graph=False):
    params = [leaf(p) for p in param_arrays]
    grads = cgrad.autograd.grad(_mlp_loss(params, x, target), params,
                                create_graph=create_graph)
    return params, grads


def test_hessian_vector_product_of_mlp_matches_finite_differences():
    rng = np.random.default_rng(0)
    param_arrays = _mlp_params(rng)
    x = cgrad.tensor(rng.standard_normal((4, 5)), dtype=cgrad.float64)
    target = cgrad.tensor(rng.standard_normal((4, 3)), dtype=cgrad.float64)
    v_arrays = [rng.standard_normal(p.shape) for p in param_arrays]

    params, grads = _mlp_grads(param_arrays, x, target, create_graph=True)
    g_dot_v = sum((g * cgrad.tensor(v)).sum() for g, v in zip(grads, v_arrays))
    hvp = cgrad.autograd.grad(g_dot_v, params)

    eps = 1e-5
    _, g_plus = _mlp_grads([p + eps * v for p, v in zip(param_arrays, v_arrays)], x, target)
    _, g_minus = _mlp_grads([p - eps * v for p, v in zip(param_arrays, v_arrays)], x, target)
    for h, gp, gm in zip(hvp, g_plus, g_minus):
        numeric = (as_np(gp) - as_np(gm)) / (2 * eps)
        np.testing.assert_allclose(as_np(h), numeric, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------- autograd.grad

def test_autograd_grad_does_not_touch_dot_grad():
    x = leaf([1.0, 2.0])
    (g,) = cgrad.autograd.grad((x * x).sum(), [x])
    np.testing.assert_allclose(as_np(g), [2.0, 4.0])
    assert x.grad is None


def test_autograd_grad_several_outputs_inputs_and_grad_outputs():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, -1.0])
    y1 = x * w            # dy1/dx = w, dy1/dw = x
    y2 = (x * x).sum()    # dy2/dx = 2x
    v1 = cgrad.tensor([10.0, 100.0], dtype=cgrad.float64)
    v2 = cgrad.tensor(0.5, dtype=cgrad.float64)
    gx, gw = cgrad.autograd.grad([y1, y2], [x, w], grad_outputs=[v1, v2])
    np.testing.assert_allclose(as_np(gx), [10 * 3.0 + 0.5 * 2, 100 * -1.0 + 0.5 * 4])
    np.testing.assert_allclose(as_np(gw), [10 * 1.0, 100 * 2.0])
    assert x.grad is None and w.grad is None


def test_autograd_grad_allow_unused_gives_none_and_otherwise_raises():
    x = leaf([1.0])
    unused = leaf([2.0])
    y = (x * 2.0).sum()
    gx, gu = cgrad.autograd.grad(y, [x, unused], retain_graph=True, allow_unused=True)
    np.testing.assert_allclose(as_np(gx), [2.0])
    assert gu is None
    with pytest.raises(RuntimeError):
        cgrad.autograd.grad(y, [x, unused])


def test_autograd_grad_non_scalar_output_needs_grad_outputs():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError):
        cgrad.autograd.grad(x * 2.0, [x])


# -------------------------------------------------------------- grad mode

def test_no_grad_and_enable_grad_nest():
    x = leaf([1.0])
    assert cgrad.is_grad_enabled()
    with cgrad.no_grad():
        assert not cgrad.is_grad_enabled()
        y = x * 2.0
        with cgrad.enable_grad():
            assert cgrad.is_grad_enabled()
            z = x * 2.0
            with cgrad.no_grad():
                w = x * 2.0
            assert cgrad.is_grad_enabled()
        assert not cgrad.is_grad_enabled()
    assert cgrad.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and z.grad_fn is not None
    assert not w.requires_grad and w.grad_fn is None
    z.sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [2.0])


def test_grad_mode_restored_after_exception():
    with pytest.raises(KeyError):
        with cgrad.no_grad():
            raise KeyError("boom")
    assert cgrad.is_grad_enabled()


# ----------------------------------------------------------------- detach

def test_detach_shares_storage_and_cuts_the_graph():
    x = leaf([1.0, 2.0])
    y = x * 3.0
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d.add_(cgrad.tensor([100.0, 100.0], dtype=cgrad.float64))  # d needs no grad: allowed
    np.testing.assert_allclose(as_np(y), [103.0, 106.0])      # same storage
    (d * x).sum().backward()                                   # d is a constant here
    np.testing.assert_allclose(as_np(x.grad), [103.0, 106.0])


# -------------------------------------------------------------------- GAN

def test_gan_pattern_backward_through_generator_after_discriminator_step():
    rng = np.random.default_rng(1)
    g_w = leaf(rng.standard_normal((3, 4)))
    d_w = leaf(rng.standard_normal((4, 1)))
    z = cgrad.tensor(rng.standard_normal((5, 3)), dtype=cgrad.float64)

    def generator():
        return cgrad.tanh(z @ g_w)

    def discriminator(sample):
        return cgrad.sigmoid(sample @ d_w).mean()

    fake = generator()
    d_loss = discriminator(fake.detach())
    d_loss.backward()
    assert g_w.grad is None
    with cgrad.no_grad():
        d_w -= 0.1 * d_w.grad
    d_w.grad = None
    discriminator(fake).backward()  # reuses G's graph recorded before D's backward
    g_grad = as_np(g_w.grad).copy()

    # Reference: the same G gradient computed from a fresh forward.
    g_w.grad = None
    discriminator(generator()).backward()
    np.testing.assert_allclose(g_grad, as_np(g_w.grad), rtol=1e-12, atol=1e-14)


def test_unrelated_entries_survive_a_backward():
    x = leaf([1.0, 2.0])
    w = leaf([5.0])
    kept = x * 3.0                 # recorded, not part of the next backward
    (w * 2.0).sum().backward()
    kept.sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [3.0, 3.0])
    np.testing.assert_allclose(as_np(w.grad), [2.0])


# --------------------------------------------------------------- in-place

def test_modified_saved_tensor_raises_instead_of_wrong_gradient():
    x = leaf([1.0, 2.0])
    a = x * 2.0
    b = a * a  # saves a
    with cgrad.no_grad():
        a.mul_(cgrad.tensor(3.0, dtype=cgrad.float64))
    with pytest.raises(RuntimeError) as info:
        b.sum().backward()
    message = str(info.value).lower()
    assert any(word in message for word in ("in-place", "inplace", "modified")), message


def test_in_place_on_leaf_requiring_grad_raises_outside_no_grad():
    x = leaf([1.0, 2.0])
    one = cgrad.tensor([1.0, 1.0], dtype=cgrad.float64)
    for op in (lambda: x.add_(one), lambda: x.mul_(one), lambda: x.zero_(),
               lambda: x.fill_(1.0), lambda: x.copy_(one), lambda: x.sub_(one)):
        with pytest.raises(RuntimeError):
            op()
    with pytest.raises(RuntimeError):
        x += one
    np.testing.assert_allclose(as_np(x), [1.0, 2.0])  # untouched


def test_in_place_on_leaf_requiring_grad_works_under_no_grad():
    x = leaf([1.0, 2.0])
    with cgrad.no_grad():
        x.add_(cgrad.tensor([1.0, 1.0], dtype=cgrad.float64))
        x *= 2.0
        x -= 1.0
    assert x.requires_grad and x.is_leaf
    np.testing.assert_allclose(as_np(x), [3.0, 5.0])
    (x * x).sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [6.0, 10.0])


# ---------------------------------------------------------- deep graphs

CHAIN_LENGTH = 1_000_000


def test_million_op_chain_forward_backward_and_free():
    result = run_python(f"""
        import cgrad
        n = {CHAIN_LENGTH}
        x = cgrad.tensor([1.0], dtype=cgrad.float64, requires_grad=True)
        y = x
        for _ in range(n):
            y = y * 1.0000001
        y.sum().backward()
        expected = 1.0000001 ** n
        got = x.grad.item()
        assert abs(got - expected) < 1e-9 * expected, (got, expected)
        assert abs(y.item() - expected) < 1e-9 * expected, (y.item(), expected)
        del y
        print("ok", got)
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith("ok"), result.stdout


def test_million_op_chain_freed_without_backward():
    result = run_python(f"""
        import cgrad
        x = cgrad.tensor([1.0], dtype=cgrad.float64, requires_grad=True)
        y = x
        for _ in range({CHAIN_LENGTH}):
            y = y + 0.0
        del y          # drops the whole unconsumed tape at once
        z = (x * 2.0).sum()
        z.backward()   # the tape still works afterwards
        assert x.grad.item() == 2.0
        print("ok")
    """)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.startswith("ok"), result.stdout


# ---------------------------------------------------------- .grad rules

def test_grad_assignment_checks_shape_and_none_clears():
    x = leaf([1.0, 2.0, 3.0])
    x.grad = cgrad.tensor([1.0, 1.0, 1.0], dtype=cgrad.float64)
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [3.0, 3.0, 3.0])
    with pytest.raises((RuntimeError, ValueError)):
        x.grad = cgrad.zeros(4, dtype=cgrad.float64)
    np.testing.assert_allclose(as_np(x.grad), [3.0, 3.0, 3.0])
    x.grad = None
    assert x.grad is None
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(as_np(x.grad), [2.0, 2.0, 2.0])


def test_requires_grad_on_integer_tensor_raises():
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        cgrad.tensor([1, 2, 3], requires_grad=True)
    t = cgrad.tensor([1, 2, 3])
    assert t.dtype == cgrad.int64
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        t.requires_grad = True
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        t.requires_grad_()
    assert not t.requires_grad


def test_requires_grad_cannot_be_set_on_non_leaf():
    x = leaf([1.0])
    y = x * 2.0
    with pytest.raises(RuntimeError):
        y.requires_grad = False


def test_backward_on_non_scalar_without_gradient_raises():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError):
        (x * 2.0).backward()


def test_backward_with_gradient_argument():
    x = leaf([1.0, 2.0])
    (x * 2.0).backward(cgrad.tensor([3.0, 5.0], dtype=cgrad.float64))
    np.testing.assert_allclose(as_np(x.grad), [6.0, 10.0])


def test_backward_gradient_of_wrong_shape_raises():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    with pytest.raises((RuntimeError, ValueError)):
        y.backward(cgrad.tensor([1.0, 1.0, 1.0], dtype=cgrad.float64))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError):
        cgrad.tensor([1.0, 2.0]).sum().backward()


# ----------------------------------------------------------- NumPy bridge

def test_numpy_is_zero_copy():
    t = cgrad.zeros(2, 3)
    view = t.numpy()
    assert view.dtype == np.float32 and view.shape == (2, 3)
    view[1, 2] = 7.0
    assert t[1, 2].item() == 7.0
    t.fill_(3.0)
    assert view[0, 0] == 3.0


def test_numpy_keeps_owner_alive_after_tensor_is_deleted():
    t = cgrad.arange(0, 1000, dtype=cgrad.float64) * 2.0
    view = t.numpy()
    del t
    gc.collect()
    garbage = [cgrad.ones(1000, dtype=cgrad.float64) * 5.0 for _ in range(20)]  # reuse freed memory
    np.testing.assert_array_equal(view, np.arange(1000) * 2.0)
    view[0] = 1.0  # still writable, still owned
    del garbage


def test_numpy_refuses_tensor_requiring_grad():
    x = leaf([1.0])
    with pytest.raises(RuntimeError):
        x.numpy()
    np.testing.assert_allclose(x.detach().numpy(), [1.0])


def test_numpy_of_non_contiguous_tensor_has_right_values():
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = cgrad.tensor(base)
    np.testing.assert_array_equal(t.T.numpy(), base.T)
    np.testing.assert_array_equal(np.asarray(t[:, 1:3]), base[:, 1:3])


def test_from_numpy_is_zero_copy_both_ways_and_keeps_array_alive():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = cgrad.from_numpy(arr)
    assert t.dtype == cgrad.float32 and t.shape == (2, 3)
    arr[0, 1] = 42.0
    assert t[0, 1].item() == 42.0
    t.add_(cgrad.ones(2, 3))
    np.testing.assert_array_equal(arr, [[1, 43, 3], [4, 5, 6]])
    del arr
    gc.collect()
    garbage = [np.full((2, 3), -1.0, dtype=np.float32) for _ in range(50)]
    np.testing.assert_array_equal(t.numpy(), [[1, 43, 3], [4, 5, 6]])
    del garbage


def test_tensor_from_numpy_array_copies():
    arr = np.ones(3, dtype=np.float64)
    t = cgrad.tensor(arr)
    arr[0] = 5.0
    assert t.dtype == cgrad.float64
    np.testing.assert_array_equal(t.numpy(), [1.0, 1.0, 1.0])
