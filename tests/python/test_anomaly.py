"""cgrad.autograd.detect_anomaly: the first op that produced NaN/Inf, forward
or backward, named with the line that created it."""
import inspect
import threading
import warnings

import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as F
from cgrad.autograd import anomaly_report, detect_anomaly, is_anomaly_enabled


def _line():
    return inspect.currentframe().f_back.f_lineno


def test_forward_anomaly_warns_with_op_and_user_line():
    x = cgrad.tensor([1.0, 0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        with pytest.warns(RuntimeWarning) as rec:
            y = (x * 2).log(); line = _line()  # noqa: E702
    msg = str(rec[0].message)
    assert "op 'log'" in msg and "inf" in msg and "from finite inputs" in msg
    assert f"{__file__}:{line}" in msg
    assert np.isneginf(y.detach().numpy()[1])


def test_report_keeps_first_and_is_cleared_on_enable():
    x = cgrad.tensor([0.0, 1.0], requires_grad=True)
    with detect_anomaly():
        assert anomaly_report() is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = x.log()
            (y * 3).exp()  # also non-finite: not the first
        assert "op 'log'" in anomaly_report()
    with detect_anomaly():
        assert anomaly_report() is None


def test_warnings_as_errors_stop_at_the_op_and_lose_nothing():
    x = cgrad.tensor([0.0, 1.0], requires_grad=True)
    with detect_anomaly(), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="op 'log'"):
            x.log()
        y = (x + 1).log().sum()  # finite: still works afterwards
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.5])


def test_backward_anomaly_raises_naming_op_and_line():
    x = cgrad.tensor([1.0, 0.0, 4.0], requires_grad=True)
    with detect_anomaly():
        y = x.sqrt(); line = _line()  # noqa: E702
        loss = y.sum()
        with pytest.raises(RuntimeError) as err:
            loss.backward()
    msg = str(err.value)
    assert "backward of op 'sqrt'" in msg and "inf" in msg and "input 0" in msg
    assert f"{__file__}:{line}" in msg
    assert x.grad is None


def test_off_means_no_checks():
    assert not is_anomaly_enabled()
    x = cgrad.tensor([1.0, 0.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x.sqrt().sum().backward()
    assert np.isinf(x.grad.numpy()[1])


def test_nonfinite_leaf_input_is_named():
    x = cgrad.tensor([1.0, float("nan")], requires_grad=True)
    with detect_anomaly(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x.tanh()
    assert "input 0 already held non-finite values" in anomaly_report()


def test_location_skips_cgrad_internal_frames():
    a = cgrad.tensor([1e30, 0.0], requires_grad=True)
    b = cgrad.zeros(2)
    with detect_anomaly():
        with pytest.warns(RuntimeWarning) as rec:
            F.mse_loss(a, b); line = _line()  # noqa: E702  (overflows inside functional)
    assert f"{__file__}:{line}" in str(rec[0].message)


class NanBackward(cgrad.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def test_custom_function_backward_nan_is_named():
    x = cgrad.randn(3, dtype=cgrad.float64, requires_grad=True)
    with detect_anomaly():
        y = NanBackward.apply(x)
        with pytest.raises(RuntimeError, match="NanBackward"):
            y.sum().backward()


def test_no_false_positive_and_same_gradients_on_a_training_step():
    cgrad.manual_seed(3)
    w1 = cgrad.randn(8, 16, requires_grad=True)
    w2 = cgrad.randn(16, 4, requires_grad=True)
    x = cgrad.randn(32, 8)
    t = cgrad.randint(0, 4, (32,))

    def step():
        w1.grad = w2.grad = None
        loss = F.cross_entropy((x @ w1).relu() @ w2, t)
        loss.backward()
        return loss.item(), w1.grad.numpy().copy(), w2.grad.numpy().copy()

    off = step()
    with detect_anomaly(), warnings.catch_warnings():
        warnings.simplefilter("error")
        on = step()
        assert anomaly_report() is None
    assert off[0] == on[0]
    np.testing.assert_array_equal(off[1], on[1])
    np.testing.assert_array_equal(off[2], on[2])


def test_double_backward_under_anomaly_mode():
    x = cgrad.tensor([0.3, -0.7], dtype=cgrad.float64, requires_grad=True)
    with detect_anomaly():
        (g,) = cgrad.autograd.grad(x.tanh().sum(), [x], create_graph=True)
        (h,) = cgrad.autograd.grad(g.sum(), [x])
    xv = np.array([0.3, -0.7])
    np.testing.assert_allclose(h.numpy(), -2 * np.tanh(xv) * (1 - np.tanh(xv) ** 2))


def test_thread_local_and_nesting():
    seen = []

    def other():
        seen.append(is_anomaly_enabled())

    with detect_anomaly():
        th = threading.Thread(target=other)
        th.start()
        th.join()
        with detect_anomaly(check_nan=False):
            assert is_anomaly_enabled()  # check_nan=False leaves the mode alone
        assert is_anomaly_enabled()
    assert seen == [False] and not is_anomaly_enabled()


def test_decorator_form():
    @detect_anomaly()
    def f():
        return is_anomaly_enabled()

    assert f() and not is_anomaly_enabled()
