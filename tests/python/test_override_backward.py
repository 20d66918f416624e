"""cgrad.autograd.override_backward: replace the derivative of every op of a
name recorded inside a block, without touching the call sites."""
import gc
import weakref

import numpy as np
import pytest

import cgrad
from cgrad.autograd import override_backward


def leaky_grad(ctx, g):
    (x,) = ctx.inputs
    return cgrad.where(x > 0, g, g * 0.1)


def model(x):
    return (x.relu() * 2).relu().sum()  # two relu call sites, neither wrapped


def test_every_relu_inside_the_block_gets_the_override():
    x = cgrad.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    with override_backward("relu", leaky_grad):
        loss = model(x)
    loss.backward()
    # outer relu sees 2*relu(x) >= 0: slope 1 where x>0; for x=-1 the inner
    # output is 0 -> outer leaks 0.1, inner leaks 0.1: 0.1 * 2 * 0.1
    np.testing.assert_allclose(x.grad.numpy(), [0.02, 2.0, 2.0])


def test_ops_recorded_after_the_block_are_unaffected():
    x = cgrad.tensor([-1.0, 2.0], requires_grad=True)
    with override_backward("relu", leaky_grad):
        pass
    x.relu().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1.0])


def test_wildcard_and_innermost_wins_and_ctx_fields():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    seen = []

    def scale_all(ctx, *gs):
        seen.append(ctx.op)
        return tuple(None if not need else g_in for need, g_in in
                     zip(ctx.needs_input_grad, _default_grads(ctx, gs)))

    def _default_grads(ctx, gs):
        if ctx.op == "mul_scalar":
            return (gs[0] * 3,)
        return (gs[0],) * len(ctx.inputs)

    with override_backward("*", scale_all):
        with override_backward("exp", lambda ctx, g: g * ctx.outputs[0] * 10):
            y = (x * 3).exp()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * 10 * np.exp(3 * np.array([1.0, 2.0])), rtol=1e-6)
    assert seen == ["mul_scalar"]  # exp used the inner override


def test_override_is_differentiable_with_create_graph():
    x = cgrad.tensor([0.5, 1.5], dtype=cgrad.float64, requires_grad=True)
    with override_backward("tanh", lambda ctx, g: g * ctx.inputs[0] * ctx.inputs[0]):
        y = x.tanh()
    (g,) = cgrad.autograd.grad(y.sum(), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), [0.25, 2.25])
    (gg,) = cgrad.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), [1.0, 3.0])


def test_wrong_shape_and_count_and_exceptions_are_reported():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    with override_backward("exp", lambda ctx, g: cgrad.ones(3)):
        y = x.exp()
    with pytest.raises(ValueError, match=r"override of 'exp'.*input 0"):
        y.sum().backward()
    with override_backward("exp", lambda ctx, g: (g, g)):
        y = x.exp()
    with pytest.raises(ValueError, match="2 gradients for 1 inputs"):
        y.sum().backward()

    def boom(ctx, g):
        raise ZeroDivisionError("custom failure")

    with override_backward("exp", boom):
        y = x.exp()
    with pytest.raises(ZeroDivisionError, match="custom failure"):
        y.sum().backward()


def test_second_backward_needs_retain_graph():
    x = cgrad.tensor([1.0], requires_grad=True)
    with override_backward("exp", lambda ctx, g: g):
        y = x.exp().sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 2.0
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_override_function_is_released_with_the_graph():
    class Fn:
        def __call__(self, ctx, g):
            return g

    fn = Fn()
    ref = weakref.ref(fn)
    x = cgrad.tensor([1.0], requires_grad=True)
    with override_backward("exp", fn):
        y = x.exp()
    del fn
    gc.collect()
    assert ref() is not None  # the recorded entry still uses it
    del y
    gc.collect()
    assert ref() is None


def test_bad_arguments():
    with pytest.raises(TypeError):
        override_backward("", lambda ctx, g: g)
    with pytest.raises(TypeError):
        override_backward("relu", 3)
