"""cgrad.autograd.gradcheck / gradgradcheck find right and wrong gradients."""
import pytest

import cgrad
from cgrad.autograd import GradcheckError, gradcheck, gradgradcheck


def x64(*shape):
    return cgrad.randn(*shape, dtype=cgrad.float64, requires_grad=True)


@pytest.mark.parametrize("fn", [
    lambda a, b: (a * b).tanh(),
    lambda a, b: (a @ b.t()).softmax(1),
    lambda a, b: (a - b).pow(2).sum(1),
    lambda a, b: a.sigmoid() / (1 + b.exp()),
])
def test_correct_ops_pass_both_checks(fn):
    a, b = x64(3, 4), x64(3, 4)
    assert gradcheck(fn, (a, b))
    assert gradgradcheck(fn, (a, b))


def test_several_outputs_and_non_tensor_inputs():
    a = x64(2, 3)
    assert gradcheck(lambda x, k: (x * k, x.exp().sum()), (a, 3.0))


def _corrupted(x):
    y = x * x
    if y.requires_grad:  # (not under the no-grad finite differences)
        y.register_hook(lambda g: g * 1.5)  # a deliberately wrong gradient in flight
    return y.sum(1)


def test_wrong_gradient_is_reported_with_input_and_element():
    a = x64(2, 3)
    with pytest.raises(GradcheckError, match=r"input 0, element \(0, 0\).*analytical.*numerical"):
        gradcheck(_corrupted, (a,))
    assert gradcheck(_corrupted, (a,), raise_exception=False) is False


def test_inputs_must_be_float64_leaves():
    with pytest.raises(ValueError, match="float64"):
        gradcheck(lambda x: x * 2, (cgrad.randn(3, requires_grad=True),))
    with pytest.raises(ValueError, match="no input requires grad"):
        gradcheck(lambda x: x * 2, (cgrad.randn(3, dtype=cgrad.float64),))
