"""cgrad.ste: straight-through primitives and gradcheck's surrogate handling."""
import numpy as np
import pytest

import cgrad
from cgrad.autograd import GradcheckError, gradcheck


def t64(a, grad=True):
    return cgrad.tensor(np.asarray(a, dtype=np.float64), dtype=cgrad.float64, requires_grad=grad)


A = [-2.6, -1.2, -0.4, 0.3, 0.55, 1.4, 2.5]


def test_round_forward_rounds_and_gradient_is_ones():
    x = t64(A)
    y = cgrad.ste.round(x)
    np.testing.assert_array_equal(y.detach().numpy(), np.round(A))
    (y * t64([1, 2, 3, 4, 5, 6, 7], False)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1, 2, 3, 4, 5, 6, 7])


def test_sign_uses_hardtanh_gradient():
    x = t64(A)
    y = cgrad.ste.sign(x)
    np.testing.assert_array_equal(y.detach().numpy(), np.sign(A))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), (np.abs(A) <= 1).astype(float))


def test_clamp_passes_gradient_everywhere():
    x = t64(A)
    y = cgrad.ste.clamp(x, -1, 1)
    np.testing.assert_array_equal(y.detach().numpy(), np.clip(A, -1, 1))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(len(A)))


def test_quantize_levels_and_clipped_gradient():
    x = t64(A)
    y = cgrad.ste.quantize(x, bits=2, min=-1.0, max=1.0)  # levels -1, -1/3, 1/3, 1
    levels = np.array([-1, -1 / 3, 1 / 3, 1])
    got = y.detach().numpy()
    assert all(np.isclose(levels, v).any() for v in got)
    np.testing.assert_allclose(got[3], 1 / 3)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), ((np.array(A) >= -1) & (np.array(A) <= 1)).astype(float))


@pytest.mark.parametrize("op", [
    lambda x: cgrad.ste.round(x) * x,
    lambda x: cgrad.ste.sign(x).exp(),
    lambda x: cgrad.ste.clamp(x, -1, 1) ** 2,
    lambda x: cgrad.ste.quantize(x * 0.7, bits=3) * 2,
])
def test_gradcheck_accepts_ste_against_its_surrogate(op):
    assert gradcheck(op, (t64(A),))


def test_gradcheck_still_catches_a_wrong_straight_through_backward():
    class BadRound(cgrad.ste.StraightThrough):
        hard = staticmethod(lambda x: x.round())
        surrogate = staticmethod(lambda x: x * 1.0)
        backward_mask = staticmethod(lambda x: x * 0 + 0.5)  # claims identity, passes half

    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(lambda x: BadRound.call(x), (t64(A),))


def test_plain_round_has_zero_gradient_for_contrast():
    x = t64(A)
    x.round().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(len(A)))


def test_bad_arguments():
    x = t64(A)
    with pytest.raises(ValueError, match="bits"):
        cgrad.ste.quantize(x, bits=0)
    with pytest.raises(ValueError, match="min"):
        cgrad.ste.clamp(x, 1, -1)
