"""Check mode: custom Functions gradchecked on first use, stashed tensors warned."""
import warnings

import numpy as np
import pytest

import cgrad
from cgrad.autograd import Function, GradcheckError, is_check_mode_enabled, once_differentiable, set_check_mode


@pytest.fixture
def check_mode():
    prev = set_check_mode(True)
    yield
    set_check_mode(prev)


def _square(name, factor, stash=False):
    """A squaring Function whose backward uses factor*x*g (2 is right)."""

    def forward(ctx, x):
        if stash:
            ctx.x = x
        else:
            ctx.save_for_backward(x)
        return x * x

    def backward(ctx, g):
        x = ctx.x if stash else ctx.saved_tensors[0]
        return factor * x * g

    return type(name, (Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


def test_correct_function_passes_and_still_returns_its_output(check_mode):
    Sq = _square("SqGood", 2.0)
    x = cgrad.randn(50, requires_grad=True)
    y = Sq.apply(x)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)


def test_wrong_backward_raises_naming_function_input_and_element(check_mode):
    Sq = _square("SqWrong", 3.0)
    with pytest.raises(GradcheckError) as err:
        Sq.apply(cgrad.randn(4, requires_grad=True))
    msg = str(err.value)
    assert "SqWrong.backward" in msg and "input 0" in msg and "element" in msg
    assert "analytical" in msg and "numerical" in msg


def test_large_input_is_checked_by_directions():
    Sq = _square("SqWrongBig", 2.5)
    Sq.check_mode = True  # per-Function switch, global mode off
    assert not is_check_mode_enabled()
    with pytest.raises(GradcheckError, match=r"SqWrongBig.backward.*shape \(100, 100\)"):
        Sq.apply(cgrad.randn(100, 100, requires_grad=True))


def test_checked_once_per_class(check_mode):
    calls = []

    class Counted(Function):
        @staticmethod
        def forward(ctx, x):
            calls.append(1)
            return x * 3

        @staticmethod
        def backward(ctx, g):
            return g * 3

    x = cgrad.randn(3, requires_grad=True)
    Counted.apply(x)
    first = len(calls)
    assert first > 1  # the check ran forward again
    Counted.apply(x)
    Counted.apply(x)
    assert len(calls) == first + 2


def test_a_failed_check_is_repeated_next_time(check_mode):
    Sq = _square("SqRetry", 3.0)
    for _ in range(2):
        with pytest.raises(GradcheckError):
            Sq.apply(cgrad.randn(3, requires_grad=True))


def test_per_function_false_opts_out(check_mode):
    Sq = _square("SqOptOut", 3.0)
    Sq.check_mode = False
    Sq.apply(cgrad.randn(3, requires_grad=True))  # wrong, but not checked


def test_stashed_tensor_warns_only_in_check_mode(check_mode):
    Sq = _square("SqStash", 2.0, stash=True)
    with pytest.warns(RuntimeWarning, match=r"SqStash.forward stored a Tensor on ctx.x outside save_for_backward"):
        Sq.apply(cgrad.randn(3, requires_grad=True))
    set_check_mode(False)
    Sq2 = _square("SqStashQuiet", 2.0, stash=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Sq2.apply(cgrad.randn(3, requires_grad=True))


def test_ste_checked_against_its_surrogate(check_mode):
    x = cgrad.randn(6, requires_grad=True)
    y = cgrad.ste.round(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.ones(6))


def test_double_backward_checked_when_asked():
    prev = set_check_mode(True, double_backward=True)
    try:
        class Cube(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x ** 3

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                # right first derivative, wrong second: detach hides x's dependence
                return 3 * x.detach() ** 2 * g

        with pytest.raises(GradcheckError, match="double backward"):
            Cube.apply(cgrad.randn(4, dtype=cgrad.float64, requires_grad=True))

        class Once(Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.exp()

            @staticmethod
            @once_differentiable
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return cgrad.from_numpy(np.exp(x.detach().numpy()) * g.numpy())

        Once.apply(cgrad.randn(4, dtype=cgrad.float64, requires_grad=True))  # skipped: once_differentiable
    finally:
        set_check_mode(prev)


def test_keyword_and_non_tensor_arguments(check_mode):
    class Scale(Function):
        @staticmethod
        def forward(ctx, x, factor, bias):
            ctx.factor = factor
            return x * factor + bias

        @staticmethod
        def backward(ctx, g):
            return g * ctx.factor, None, g

    x = cgrad.randn(3, requires_grad=True)
    b = cgrad.randn(3, requires_grad=True)
    Scale.apply(x, 2.5, bias=b).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.5] * 3)


def test_set_check_mode_validates():
    with pytest.raises(ValueError, match="eps"):
        set_check_mode(True, eps=0)
    with pytest.raises(ValueError, match="atol"):
        set_check_mode(True, atol=-1)
    assert not is_check_mode_enabled()
