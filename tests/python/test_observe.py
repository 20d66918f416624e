"""observe_backward / record_gradient_stats: hooks that see every tape entry's gradient."""
import numpy as np
import pytest

import cgrad
from cgrad.autograd import detect_anomaly, observe_backward, record_gradient_stats


def test_entries_in_backward_order_with_their_incoming_gradients():
    x = cgrad.tensor([1.0, -2.0, 3.0], requires_grad=True)
    seen = []
    with observe_backward(seen.append):
        ((x * 3).relu().sum()).backward()
    assert [e.op for e in seen] == ["sum", "relu", "mul_scalar"]
    assert [e.seq for e in seen] == sorted((e.seq for e in seen), reverse=True)
    np.testing.assert_array_equal(seen[0].grad_outputs[0].numpy(), 1.0)          # d loss / d sum
    np.testing.assert_array_equal(seen[1].grad_outputs[0].numpy(), [1, 1, 1])    # into relu's output
    np.testing.assert_array_equal(seen[2].grad_outputs[0].numpy(), [1, 0, 1])    # into mul's output
    assert all(e.location is None for e in seen)
    np.testing.assert_array_equal(x.grad.numpy(), [3, 0, 3])


def test_location_under_anomaly_mode():
    x = cgrad.randn(2, requires_grad=True)
    seen = []
    with detect_anomaly():
        y = x.exp().sum()
    with observe_backward(seen.append):
        y.backward()
    assert all(e.location and __file__ in e.location for e in seen)


def test_observer_exception_aborts_backward_and_propagates():
    x = cgrad.randn(3, requires_grad=True)

    def boom(entry):
        if entry.op == "exp":
            raise KeyError("stop here")

    with observe_backward(boom):
        with pytest.raises(KeyError, match="stop here"):
            x.exp().sum().backward()
    assert x.grad is None


def test_nested_observers_and_nothing_after_exit():
    x = cgrad.randn(3, requires_grad=True)
    order = []
    with observe_backward(lambda e: order.append(("outer", e.op))):
        with observe_backward(lambda e: order.append(("inner", e.op))):
            x.tanh().sum().backward()
    assert order == [("inner", "sum"), ("outer", "sum"), ("inner", "tanh"), ("outer", "tanh")]
    order.clear()
    x.tanh().sum().backward()
    assert order == []


def test_observer_runs_with_grad_mode_off():
    x = cgrad.randn(3, requires_grad=True)
    modes = []
    with observe_backward(lambda e: modes.append(cgrad.is_grad_enabled())):
        cgrad.autograd.grad(x.tanh().sum(), [x], create_graph=True)
    assert modes and not any(modes)


def test_gradient_stats_table_and_nonfinite():
    x = cgrad.tensor([4.0, 0.0], requires_grad=True)
    with record_gradient_stats() as stats:
        (x.sqrt() * 2).sum().backward()
    rows = {r["op"]: r for r in stats.rows}
    assert set(rows) == {"sum", "mul_scalar", "sqrt"}
    assert rows["sqrt"]["shape"] == (2,)
    np.testing.assert_allclose(rows["sqrt"]["norm"], np.sqrt(8.0))
    assert rows["sqrt"]["max_abs"] == 2.0 and rows["sqrt"]["nonfinite"] == 0
    assert "sqrt" in stats.table() and len(stats.by_op()["sum"]) == 1
    assert np.isinf(x.grad.numpy()[1])


def test_observe_backward_validates():
    with pytest.raises(TypeError, match="callable"):
        observe_backward(3)
