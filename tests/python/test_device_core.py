"""The "cuda" device: moving tensors, the tape across devices, elementwise
ops and their gradients checked against the CPU backend, and the errors a
user gets for mixing devices or reading device memory as NumPy.

In CI "cuda" is the NumPy reference device (see device_util.py): the same
backend code as on a GPU, over host memory."""
import pickle

import numpy as np
import pytest

import cgrad
from device_util import assert_same_values, host

UNARY = ["neg", "exp", "log", "sqrt", "abs", "sign", "round", "floor", "ceil", "relu", "sigmoid",
         "tanh"]


def _pair(shape=(3, 4), dtype=cgrad.float64, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.1
    x = cgrad.tensor(a, dtype=dtype, requires_grad=True)
    xd = cgrad.tensor(a, dtype=dtype, device="cuda", requires_grad=True)
    return x, xd


def test_device_object_and_placement():
    x = cgrad.zeros(2, 3, device="cuda")
    assert x.device == "cuda" and x.device == "cuda:0" and x.device == cgrad.device("cuda", 0)
    assert x.is_cuda and not cgrad.zeros(1).is_cuda
    assert str(x.device) == "cuda:0" and repr(x.device) == "device(type='cuda', index=0)"
    assert cgrad.zeros(1).device == "cpu"
    assert cgrad.cuda.is_available() and cgrad.cuda.device_count() == 1
    np.testing.assert_array_equal(host(x), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(host(cgrad.ones(2, device="cuda")), [1, 1])
    np.testing.assert_array_equal(host(cgrad.full((2,), 7, device="cuda")), [7, 7])
    assert cgrad.full((2,), 7, device="cuda").dtype == cgrad.int64
    cgrad.manual_seed(3)
    a = cgrad.randn(4, 5)
    cgrad.manual_seed(3)
    b = cgrad.randn(4, 5, device="cuda")
    assert_same_values(a, b, rtol=0, atol=0)  # the host generator's stream on both devices
    assert cgrad.arange(5, device="cuda").device == "cuda"


def test_bad_device_specs_are_clear():
    with pytest.raises(ValueError, match="unknown device"):
        cgrad.zeros(2, device="tpu")
    with pytest.raises(ValueError, match="only index 0"):
        cgrad.zeros(2, device="cuda:1")
    with pytest.raises(ValueError, match="unknown device type"):
        cgrad.device("gpu")


def test_to_and_back_is_differentiable():
    x, _ = _pair()
    y = x.to("cuda")
    assert y.device == "cuda" and y.grad_fn.name() == "to_device"
    z = (y * y).cpu()
    assert z.device == "cpu"
    z.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-12)
    assert x.grad.device == "cpu"
    assert y.to("cuda") is y and x.cpu() is x and y.cuda() is y


def test_to_device_and_dtype_together():
    x = cgrad.tensor([1.5, 2.5], dtype=cgrad.float64)
    y = x.to("cuda", cgrad.float32)
    assert y.device == "cuda" and y.dtype == cgrad.float32
    z = x.to(y)
    assert z.device == "cuda" and z.dtype == cgrad.float32
    np.testing.assert_array_equal(host(z), [1.5, 2.5])


@pytest.mark.parametrize("name", UNARY)
def test_unary_matches_cpu_with_gradients(name):
    x, xd = _pair(positive=name in ("log", "sqrt"))
    y, yd = getattr(x, name)(), getattr(xd, name)()
    assert_same_values(y, yd, rtol=1e-12, atol=1e-12)
    y.sum().backward()
    yd.sum().backward()
    assert xd.grad.device == "cuda"
    assert_same_values(x.grad, xd.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn,kw", [("leaky_relu", {"negative_slope": 0.2}), ("elu", {"alpha": 0.7}),
                                   ("gelu", {}), ("gelu", {"approximate": "tanh"}),
                                   ("softplus", {"beta": 2.0, "threshold": 1.0}),
                                   ("clamp", {"min": -0.3, "max": 0.4})])
def test_parametrised_activations_match_cpu(fn, kw):
    x, xd = _pair(seed=1)
    if fn == "clamp":
        y, yd = x.clamp(**kw), xd.clamp(**kw)
    else:
        f = getattr(cgrad.nn.functional, fn)
        y, yd = f(x, **kw), f(xd, **kw)
    assert_same_values(y, yd, rtol=1e-12, atol=1e-12)
    (y * y).sum().backward()
    (yd * yd).sum().backward()
    assert_same_values(x.grad, xd.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op", ["__add__", "__sub__", "__mul__", "__truediv__", "__pow__"])
def test_broadcasting_binary_ops_match_cpu(op):
    a, ad = _pair((3, 4), positive=True)
    b, bd = _pair((4,), seed=2, positive=True)
    y, yd = getattr(a, op)(b), getattr(ad, op)(bd)
    assert_same_values(y, yd, rtol=1e-12)
    y.sum().backward()
    yd.sum().backward()
    assert_same_values(a.grad, ad.grad, rtol=1e-12)
    assert_same_values(b.grad, bd.grad, rtol=1e-12)


def test_minimum_maximum_where_and_comparisons():
    a, ad = _pair((5,))
    b, bd = _pair((5,), seed=4)
    for f in (cgrad.minimum, cgrad.maximum):
        y, yd = f(a, b), f(ad, bd)
        assert_same_values(y, yd)
        y.sum().backward()
        yd.sum().backward()
    assert_same_values(a.grad, ad.grad)
    for op in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
        assert_same_values(getattr(a, op)(b), getattr(ad, op)(bd))
    c, cd = a > 0, ad > 0
    assert cd.device == "cuda" and cd.dtype == cgrad.bool_
    assert_same_values(cgrad.where(c, a, b), cgrad.where(cd, ad, bd))


def test_python_scalars_and_host_0d_tensors_join_device_tensors():
    x, xd = _pair((2, 3))
    assert_same_values(x * 2.5 + 1 - x ** 2, xd * 2.5 + 1 - xd ** 2)
    s = cgrad.tensor(3.0, dtype=cgrad.float64)  # a 0-d cpu tensor is a scalar (as in PyTorch)
    assert (xd * s).device == "cuda"
    assert_same_values(x * s, xd * s)


def test_int_and_bool_tensors_on_device():
    a = cgrad.tensor([3, -2, 7])
    ad = a.cuda()
    assert_same_values(a * 3 - 1, ad * 3 - 1)
    assert_same_values(a / 2, ad / 2)  # true division of ints gives float32
    assert_same_values(abs(a), abs(ad))


def test_mixing_devices_is_a_clear_error():
    x, xd = _pair((2, 2))
    with pytest.raises(ValueError, match="expected all tensors on one device.*'cuda'.*'cpu'"):
        xd + cgrad.ones(2, 2, dtype=cgrad.float64)
    with pytest.raises(ValueError, match="one device"):
        cgrad.where(xd > 0, x, xd)


def test_numpy_and_array_refuse_device_tensors():
    xd = cgrad.ones(3, device="cuda")
    with pytest.raises(TypeError, match=r"cuda.*cpu\(\)"):
        xd.numpy()
    with pytest.raises(TypeError, match=r"cpu\(\)"):
        np.asarray(xd)
    assert xd.data_ptr() != 0 and xd.data_ptr() != xd.cpu().data_ptr()
    np.testing.assert_array_equal(xd.cpu().numpy(), [1, 1, 1])
    assert xd.tolist() == [1.0, 1.0, 1.0]


def test_item_repr_and_pickle():
    xd = cgrad.tensor([[1.0, 2.0]], device="cuda", requires_grad=True)
    assert "device='cuda:0'" in repr(xd) and "requires_grad=True" in repr(xd)
    s = cgrad.tensor(2.5, device="cuda")
    assert s.item() == 2.5 and float(s) == 2.5
    y = pickle.loads(pickle.dumps(xd))
    assert y.device == "cuda" and y.requires_grad
    np.testing.assert_array_equal(host(y), [[1.0, 2.0]])


def test_in_place_ops_on_device():
    x = cgrad.tensor([1.0, 2.0, 3.0], dtype=cgrad.float64)
    xd = x.cuda()
    with cgrad.no_grad():
        for t in (x, xd):
            t.add_(t * 1.0, alpha=0.5)
            t.mul_(2.0)
            t.add_(1.0)
    assert_same_values(x, xd)
    xd.zero_()
    np.testing.assert_array_equal(host(xd), [0, 0, 0])
    xd.fill_(4.0)
    np.testing.assert_array_equal(host(xd), [4, 4, 4])
    xd.copy_(cgrad.tensor([7.0, 8.0, 9.0]))  # from the host, cast to float64
    np.testing.assert_array_equal(host(xd), [7, 8, 9])


def test_gradient_accumulates_on_device_across_backwards():
    _, xd = _pair((3,))
    for _ in range(3):
        (xd * 2.0).sum().backward()
    assert xd.grad.device == "cuda"
    np.testing.assert_array_equal(host(xd.grad), [6.0, 6.0, 6.0])


def test_backward_gradient_on_wrong_device_is_refused():
    _, xd = _pair((3,))
    y = xd * 2.0
    with pytest.raises(ValueError, match="gradient is on device 'cpu'.*'cuda'"):
        y.backward(cgrad.ones(3, dtype=cgrad.float64))


def test_hook_replacement_on_wrong_device_is_refused():
    _, xd = _pair((3,))
    xd.register_hook(lambda g: g.cpu())
    with pytest.raises(ValueError, match="hook.*device 'cpu'"):
        (xd * 2.0).sum().backward()


def test_create_graph_on_device():
    _, xd = _pair((4,))
    y = (xd * xd * xd)
    ones = cgrad.ones(4, dtype=cgrad.float64, device="cuda")
    (g,) = cgrad.autograd.grad(y, [xd], grad_outputs=[ones], create_graph=True)
    (g2,) = cgrad.autograd.grad(g, [xd], grad_outputs=[ones])
    np.testing.assert_allclose(host(g2), 6 * host(xd), rtol=1e-12)
    assert g2.device == "cuda"


def test_custom_function_on_device():
    class Square(cgrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 2.0 * x

    _, xd = _pair((3,))
    y = Square.apply(xd)
    assert y.device == "cuda"
    y.backward(cgrad.ones(3, dtype=cgrad.float64, device="cuda"))
    np.testing.assert_allclose(host(xd.grad), 2 * host(xd), rtol=1e-12)


def test_custom_backward_returning_wrong_device_names_it():
    class Bad(cgrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return g.cpu()

    _, xd = _pair((3,))
    with pytest.raises(Exception, match="device"):
        Bad.apply(xd).backward(cgrad.ones(3, dtype=cgrad.float64, device="cuda"))


def test_memory_stats_follow_live_tensors():
    base = cgrad.cuda.memory_allocated()
    x = cgrad.zeros(1000, device="cuda", dtype=cgrad.float64)
    assert cgrad.cuda.memory_allocated() == base + 8000
    assert cgrad.cuda.max_memory_allocated() >= base + 8000
    del x
    assert cgrad.cuda.memory_allocated() == base
    assert "allocated_bytes.all.current" in cgrad.cuda.memory_stats()
    cgrad.cuda.synchronize()


def test_gradcheck_runs_on_device_inputs():
    _, xd = _pair((2, 3), seed=5)
    _, yd = _pair((3,), seed=6)
    assert cgrad.autograd.gradcheck(lambda a, b: (a * b).tanh() / (b * b + 1.0), (xd, yd))
    assert cgrad.autograd.gradgradcheck(lambda a, b: a * a * b, (xd, yd))
    assert xd.device == "cuda"  # inputs restored in place on their device


def test_gradcheck_on_device_catches_a_wrong_backward():
    class Wrong(cgrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3.0 * x

    _, xd = _pair((3,))
    with pytest.raises(cgrad.autograd.GradcheckError, match="input 0"):
        cgrad.autograd.gradcheck(Wrong.apply, (xd,))


def test_anomaly_mode_names_the_op_on_device():
    xd = cgrad.tensor([1.0, -1.0], dtype=cgrad.float64, device="cuda", requires_grad=True)
    with pytest.warns(RuntimeWarning, match="log"):
        with cgrad.autograd.detect_anomaly():
            xd.log()


def test_check_mode_checks_a_custom_function_on_device():
    class Wrong(cgrad.autograd.Function):
        check_mode = True

        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 g x

    _, xd = _pair((4,), seed=7)
    with pytest.raises(cgrad.autograd.GradcheckError, match="Wrong.backward"):
        Wrong.apply(xd)


def test_gradient_policies_act_on_device_grads():
    w = cgrad.nn.Parameter(cgrad.tensor([1.0, -2.0, 3.0], dtype=cgrad.float64, device="cuda"))
    pol = cgrad.policy.GradientPolicies()
    pol.mask(w, lambda p: p > 0)
    pol.scale(w, 0.5)
    (w * cgrad.tensor([1.0, 1.0, 1.0], dtype=cgrad.float64, device="cuda")).backward(
        cgrad.ones(3, dtype=cgrad.float64, device="cuda"))
    pol.apply()
    assert w.grad.device == "cuda"
    np.testing.assert_array_equal(host(w.grad), [0.5, 0.0, 0.5])


def test_list_indices_are_built_on_the_indexed_tensors_device():
    x = cgrad.tensor(np.arange(12.0).reshape(4, 3), dtype=cgrad.float64)
    xd = x.cuda()
    assert_same_values(x[[0, 2]], xd[[0, 2]])
    assert_same_values(x.index_select(0, [3, 1]), xd.index_select(0, [3, 1]))
    assert_same_values(x.gather(1, [[0], [2], [1], [0]]), xd.gather(1, [[0], [2], [1], [0]]))
    assert_same_values(x[np.array([True, False, True, False])], xd[np.array([True, False, True, False])])
