"""@cgrad.custom_gradient (TensorFlow's form), incl. keywords and variables."""
import numpy as np
import pytest

import cgrad
from cgrad.autograd import gradcheck


def x64(*shape, seed=0):
    rng = np.random.default_rng(seed)
    return cgrad.tensor(rng.standard_normal(shape), dtype=cgrad.float64, requires_grad=True)


@cgrad.custom_gradient
def leaky(x, slope=0.2):
    pos = x > 0
    y = cgrad.where(pos, x, x * slope)

    def grad_fn(dy):
        return cgrad.where(pos, dy, dy * slope), None

    return y, grad_fn


def test_leaky_relu_custom_gradient_matches_autodiff_and_gradcheck():
    x = x64(4, 5)
    leaky(x).sum().backward()
    expected = np.where(x.detach().numpy() > 0, 1.0, 0.2)
    np.testing.assert_allclose(x.grad.numpy(), expected)
    assert gradcheck(lambda t: leaky(t), (x,))


def test_keyword_tensor_arguments_get_their_gradients():
    @cgrad.custom_gradient
    def scaled(x, *, w):
        def grad_fn(dy):
            return dy * w, dy * x  # positional first, then keywords as passed
        return x * w, grad_fn

    x, w = x64(3), x64(3, seed=1)
    scaled(x, w=w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), w.detach().numpy())
    np.testing.assert_allclose(w.grad.numpy(), x.detach().numpy())


def test_variables_receive_gradients():
    w = x64(3, seed=2)

    @cgrad.custom_gradient(variables=[w])
    def layer(x):
        def grad_fn(dy, variables=None):
            (v,) = variables
            return dy * v, [dy * x]
        return x * w, grad_fn

    x = x64(3)
    layer(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), w.detach().numpy())
    np.testing.assert_allclose(w.grad.numpy(), x.detach().numpy())


def test_wrong_number_of_gradients_names_the_function():
    @cgrad.custom_gradient
    def bad(x, y):
        return x * y, lambda dy: dy
    a, b = x64(2), x64(2)
    with pytest.raises(ValueError, match=r"bad's grad_fn returned 1 gradients for 2 arguments"):
        bad(a, b).sum().backward()


def test_grad_fn_written_with_cgrad_ops_is_differentiable():
    @cgrad.custom_gradient
    def cube(x):
        def grad_fn(dy):
            return dy * 3 * x * x
        return x * x * x, grad_fn

    x = x64(3)
    (g,) = cgrad.autograd.grad(cube(x).sum(), x, create_graph=True)
    (gg,) = cgrad.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(gg.numpy(), 6 * x.detach().numpy())


def test_must_return_output_and_grad_fn():
    @cgrad.custom_gradient
    def nope(x):
        return x * 2
    with pytest.raises(TypeError, match="must return"):
        nope(x64(2))
