"""get_rng_state/set_rng_state round trip, Tensor._make_subclass and .data."""
import numpy as np
import pytest

import cgrad


def test_rng_state_round_trip_reproduces_draws():
    cgrad.manual_seed(11)
    cgrad.randn(7)  # move away from the seeded state
    state = cgrad.get_rng_state()
    a = cgrad.randn(33).numpy().copy()
    b = cgrad.rand(5).numpy().copy()
    cgrad.set_rng_state(state)
    np.testing.assert_array_equal(cgrad.randn(33).numpy(), a)
    np.testing.assert_array_equal(cgrad.rand(5).numpy(), b)


@pytest.mark.parametrize("bad", [[0, 0, 0, 0], [1, 2, 3], "abcd", [0.5, 1, 2, 3]])
def test_set_rng_state_rejects_bad_state(bad):
    with pytest.raises(ValueError):
        cgrad.set_rng_state(bad)


class Param(cgrad.Tensor):
    def __new__(cls, data, requires_grad=True):
        return cgrad.Tensor._make_subclass(cls, data, requires_grad)

    def __init__(self, *args, **kwargs):
        pass


def test_make_subclass_shares_storage_and_is_a_leaf():
    base = cgrad.arange(4, dtype=cgrad.float32)
    p = Param(base)
    assert type(p) is Param and p.is_leaf and p.requires_grad
    with cgrad.no_grad():
        base.add_(1.0)
    np.testing.assert_array_equal(p.detach().numpy(), [1, 2, 3, 4])
    (p * p).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), [2, 4, 6, 8])


def test_make_subclass_refuses_non_subclass():
    with pytest.raises(TypeError):
        cgrad.Tensor._make_subclass(int, cgrad.zeros(1))


def test_data_setter_keeps_identity_and_requires_grad():
    p = Param(cgrad.ones(3))
    (p * 3).sum().backward()
    pid = id(p)
    p.data = p.data.double()
    assert id(p) == pid and p.dtype == cgrad.float64 and p.requires_grad
    assert p.grad is None  # dtype changed: the float32 gradient is dropped
    (p * 2).sum().backward()
    np.testing.assert_allclose(p.grad.numpy(), [2, 2, 2])
    q = Param(cgrad.ones(2))
    (q * 5).sum().backward()
    q.data = cgrad.zeros(2)
    np.testing.assert_allclose(q.grad.numpy(), [5, 5])  # same shape and dtype: kept


def test_data_setter_errors():
    p = Param(cgrad.ones(2))
    with pytest.raises(TypeError):
        p.data = [1, 2]
    with pytest.raises(TypeError):
        p.data = cgrad.tensor([1, 2])  # int64 cannot require grad
    y = p * 2
    with pytest.raises(RuntimeError):
        y.data = cgrad.ones(2)


def test_data_setter_keeps_hooks():
    p = Param(cgrad.ones(3))
    seen = []
    p.register_hook(lambda g: seen.append(g.dtype) or g * 2)
    p.register_post_accumulate_grad_hook(lambda t: seen.append("post"))
    p.data = p.data.double()
    (p * 1.5).sum().backward()
    assert seen == [cgrad.float64, "post"]
    np.testing.assert_allclose(p.grad.numpy(), [3, 3, 3])


def test_saved_tensor_with_replaced_data_refuses_backward():
    p = Param(cgrad.ones(3))
    y = (p * p).sum()  # mul saved p
    p.data = cgrad.zeros(3)
    with pytest.raises(RuntimeError, match="data replaced"):
        y.backward()


def test_old_graph_gradient_of_the_old_dtype_is_refused():
    p = Param(cgrad.ones(3))
    y = (p * 2.0).sum()  # mul by a Python scalar saves nothing
    p.data = p.data.double()
    with pytest.raises(RuntimeError, match="after this graph was recorded"):
        y.backward()
    assert p.grad is None
