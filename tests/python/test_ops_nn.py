"""matmul, linear, conv2d, pools, embedding, dropout, losses, F.softmax."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as cF
from oracle import Arg, Const, F, check_op, check_third_derivative, lib, to_numpy

# ----------------------------------------------------------------- matmul
MATMUL = [
    ((4,), (4,)),              # dot -> 0-d
    ((4,), (4, 3)),            # vector @ matrix
    ((3, 4), (4,)),            # matrix @ vector
    ((3, 4), (4, 5)),
    ((1, 4), (4, 1)),
    ((2, 3, 4), (4, 5)),       # batched @ matrix
    ((3, 4), (2, 4, 5)),       # matrix @ batched
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),  # batch dims broadcast both ways
    ((4,), (2, 4, 3)),         # vector @ batched
    ((2, 3, 4), (4,)),         # batched @ vector
    ((1, 3, 4), (2, 4, 2)),
]


@pytest.mark.parametrize("sa,sb", MATMUL, ids=[f"{a}@{b}" for a, b in MATMUL])
def test_matmul(sa, sb):
    check_op([sa, sb], lambda a, b: a @ b)


def test_matmul_function_and_method():
    check_op([(3, 4), (4, 2)], lambda a, b: lib(a).matmul(a, b))
    check_op([(3, 4), (4, 2)], lambda a, b: a.matmul(b))


def test_matmul_transposed_operands():
    # non-contiguous operands (the GEMM must honour strides or copy)
    check_op([(4, 3), (5, 4)], lambda a, b: a.T @ b.T)
    check_op([(2, 4, 3), (2, 4, 6)], lambda a, b: a.transpose(1, 2) @ b[:, :, 1:])


# The backward's own paths (ops_matmul.c): a transposed matrix operand gets
# its gradient in its layout, a matrix shared by a batch one GEMM over all
# rows; each with second derivatives (check_op's gradgrad).
MATMUL_LAYOUTS = {
    "x @ w.T (Linear)": ([(3, 4), (5, 4)], lambda x, w: x @ w.T),
    "a.T @ b": ([(4, 3), (4, 5)], lambda a, b: a.T @ b),
    "a.T @ vector": ([(4, 3), (4,)], lambda a, v: a.T @ v),
    "vector @ w.T": ([(4,), (5, 4)], lambda v, w: v @ w.T),
    "batched x @ w.T": ([(2, 3, 4), (5, 4)], lambda x, w: x @ w.T),
    "batched x @ w": ([(2, 3, 4), (4, 5)], lambda x, w: x @ w),
    "transposed batch @ w.T": ([(3, 2, 4), (5, 4)], lambda x, w: x.transpose(0, 1) @ w.T),
    "expanded batch @ w.T": ([(1, 3, 4), (5, 4)], lambda x, w: x.expand(2, 3, 4) @ w.T),
    "column slice @ w.T": ([(3, 6), (5, 3)], lambda x, w: x[:, ::2] @ w.T),
    "w.T with a dim of 1": ([(3, 1), (5, 1)], lambda x, w: x @ w.T),
}


@pytest.mark.parametrize("name", list(MATMUL_LAYOUTS))
def test_matmul_backward_layouts(name):
    specs, fn = MATMUL_LAYOUTS[name]
    check_op(specs, fn)


def test_linear_weight_grad_is_contiguous_and_owned():
    # the gradient of w.T comes back in w's layout: w.grad is a contiguous
    # tensor of its own, as after PyTorch's backward
    rng = np.random.default_rng(3)
    w = cgrad.from_numpy(rng.standard_normal((5, 4))).requires_grad_()
    x = cgrad.from_numpy(rng.standard_normal((2, 3, 4)))
    (x @ w.T).sum().backward()
    assert w.grad.is_contiguous()
    expected = np.ones((2, 3, 5)).reshape(-1, 5).T @ to_numpy(x).reshape(-1, 4)
    np.testing.assert_allclose(to_numpy(w.grad), expected, rtol=1e-12)


def test_matmul_same_operand(): check_op([(4, 4)], lambda a: a @ a)
def test_matmul_larger(): check_op([(17, 33), (33, 9)], lambda a, b: a @ b, atol=1e-5)


def test_matmul_empty():
    a = cgrad.ones(0, 3, requires_grad=True)
    out = a @ cgrad.ones(3, 4)
    assert out.shape == (0, 4)
    z = cgrad.ones(3, 0) @ cgrad.ones(0, 4)
    np.testing.assert_array_equal(to_numpy(z), np.zeros((3, 4)))
    out.sum().backward()
    assert a.grad.shape == (0, 3)


def test_matmul_errors():
    with pytest.raises(ValueError, match="shape|size|dim"):
        cgrad.ones(2, 3) @ cgrad.ones(4, 5)
    with pytest.raises(ValueError):
        cgrad.ones(3) @ cgrad.ones(4)
    with pytest.raises(ValueError):
        cgrad.ones(2, 3, 4) @ cgrad.ones(3, 4, 5)  # batch 2 vs 3
    with pytest.raises((ValueError, RuntimeError)):
        cgrad.tensor(2.0) @ cgrad.ones(2)  # 0-d operand


def test_matmul_int_float_rejected_or_promoted():
    i, f = cgrad.tensor([[1, 2]]), cgrad.ones(2, 1)
    try:
        out = i @ f
    except TypeError:
        return
    assert out.dtype == cgrad.float32 and out.item() == 3.0


# ----------------------------------------------------------------- linear
def test_linear(): check_op([(5, 3), (4, 3), (4,)], lambda x, w, b: F(x).linear(x, w, b))
def test_linear_no_bias(): check_op([(5, 3), (4, 3)], lambda x, w: F(x).linear(x, w))
def test_linear_batched(): check_op([(2, 5, 3), (4, 3), (4,)], lambda x, w, b: F(x).linear(x, w, b))
def test_linear_1d(): check_op([(3,), (4, 3), (4,)], lambda x, w, b: F(x).linear(x, w, b))


# ----------------------------------------------------------------- conv2d
CONV = {
    "plain": ((2, 3, 6, 6), (4, 3, 3, 3), {}),
    "stride2": ((1, 2, 7, 7), (3, 2, 3, 3), {"stride": 2}),
    "padding1": ((2, 2, 5, 5), (3, 2, 3, 3), {"padding": 1}),
    "stride_pad_tuple": ((1, 2, 6, 7), (2, 2, 3, 2), {"stride": (2, 1), "padding": (1, 0)}),
    "dilation2": ((1, 2, 7, 7), (2, 2, 3, 3), {"dilation": 2}),
    "dilation_tuple": ((1, 1, 6, 7), (2, 1, 2, 3), {"dilation": (2, 1), "padding": 1}),
    "groups2": ((2, 4, 5, 5), (6, 2, 3, 3), {"groups": 2}),
    "depthwise": ((1, 3, 5, 5), (3, 1, 3, 3), {"groups": 3, "padding": 1}),
    "1x1": ((2, 3, 4, 4), (5, 3, 1, 1), {}),
    "kernel_eq_input": ((2, 2, 3, 3), (3, 2, 3, 3), {}),
    "everything": ((2, 4, 8, 7), (4, 2, 3, 2), {"stride": 2, "padding": (1, 2), "dilation": (1, 2),
                                                "groups": 2}),
}


@pytest.mark.parametrize("name", list(CONV))
def test_conv2d_bias(name):
    xs, ws, kw = CONV[name]
    check_op([xs, ws, (ws[0],)], lambda x, w, b: F(x).conv2d(x, w, b, **kw), atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "stride_pad_tuple", "groups2"])
def test_conv2d_no_bias(name):
    xs, ws, kw = CONV[name]
    check_op([xs, ws], lambda x, w: F(x).conv2d(x, w, **kw), atol=1e-5)
    check_op([xs, ws], lambda x, w: F(x).conv2d(x, w, None, **kw), atol=1e-5, f32=False)


def test_conv2d_noncontiguous_input():
    check_op([(2, 5, 5, 3), (2, 3, 2, 2)], lambda x, w: F(x).conv2d(x.permute(0, 3, 1, 2), w))


def test_conv2d_errors():
    x = cgrad.ones(1, 3, 5, 5)
    for w, kw in ((cgrad.ones(2, 2, 3, 3), {}),          # C_in mismatch
                  (cgrad.ones(2, 3, 7, 7), {}),          # kernel larger than input
                  (cgrad.ones(4, 2, 3, 3), {"groups": 2}),  # 3 channels not divisible by 2
                  (cgrad.ones(2, 3, 3), {})):            # weight not 4-D
        with pytest.raises((ValueError, RuntimeError), match="shape|channel|size|group|dim|kernel"):
            cF.conv2d(x, w, **kw)
    with pytest.raises(ValueError):
        cF.conv2d(x, cgrad.ones(2, 3, 3, 3), stride=0)
    with pytest.raises(ValueError):
        cF.conv2d(x, cgrad.ones(2, 3, 3, 3), padding=-1)
    with pytest.raises(ValueError):
        cF.conv2d(x, cgrad.ones(2, 3, 3, 3), cgrad.ones(3))  # bias size


# ------------------------------------------------------------------ pools
POOLS = {
    "max_k2": (lambda x: F(x).max_pool2d(x, 2), {}),
    "max_k3_s2_p1": (lambda x: F(x).max_pool2d(x, 3, stride=2, padding=1), {}),
    "max_k3_s1": (lambda x: F(x).max_pool2d(x, 3, 1), {}),
    "max_tuple": (lambda x: F(x).max_pool2d(x, (2, 3), stride=(2, 1), padding=(1, 1)), {}),
    "avg_k2": (lambda x: F(x).avg_pool2d(x, 2), {}),
    "avg_k3_s2_p1": (lambda x: F(x).avg_pool2d(x, 3, stride=2, padding=1), {}),
    "avg_no_pad_count": (lambda x: F(x).avg_pool2d(x, 3, stride=2, padding=1,
                                                   count_include_pad=False), {}),
    "avg_tuple": (lambda x: F(x).avg_pool2d(x, (3, 2), stride=(1, 2), padding=(1, 0)), {}),
}


@pytest.mark.parametrize("name", list(POOLS))
def test_pool(name):
    fn, kw = POOLS[name]
    check_op([(2, 2, 6, 7)], fn, **kw)


def test_max_pool_gradient_routes_to_argmax():
    x = cgrad.tensor([[[[1.0, 5.0], [3.0, 2.0]]]], requires_grad=True)
    cF.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool_all_negative_with_padding():
    # padding counts as -inf, never as 0
    x = cgrad.full((1, 1, 2, 2), -3.0)
    out = cF.max_pool2d(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(to_numpy(out), np.full((1, 1, 3, 3), -3.0))


def test_pool_errors():
    x = cgrad.ones(1, 1, 4, 4)
    with pytest.raises(ValueError):
        cF.max_pool2d(x, 2, padding=2)  # padding > kernel / 2
    with pytest.raises(ValueError):
        cF.avg_pool2d(x, 5)  # kernel larger than input
    with pytest.raises(ValueError):
        cF.max_pool2d(x, 0)
    with pytest.raises((ValueError, RuntimeError)):
        cF.max_pool2d(cgrad.ones(4, 4), 2)  # 2-D input


# -------------------------------------------------------------- embedding
EMB_IDX = Const(np.array([[1, 4, 1], [0, 1, 9]]))  # repeated rows accumulate


def test_embedding(): check_op([EMB_IDX, (10, 3)], lambda i, w: F(w).embedding(i, w))
def test_embedding_1d(): check_op([Const(np.array([3, 3, 3, 0])), (5, 2)], lambda i, w: F(w).embedding(i, w))
def test_embedding_0d(): check_op([Const(np.array(2)), (5, 2)], lambda i, w: F(w).embedding(i, w))


def test_embedding_repeated_index_grad():
    w = cgrad.zeros(4, 2, requires_grad=True)
    cF.embedding(cgrad.tensor([1, 1, 3, 1]), w).sum().backward()
    np.testing.assert_array_equal(to_numpy(w.grad), [[0, 0], [3, 3], [0, 0], [1, 1]])


def test_embedding_errors():
    w = cgrad.ones(4, 2)
    with pytest.raises(IndexError, match="4|range"):
        cF.embedding(cgrad.tensor([0, 4]), w)
    with pytest.raises(IndexError):
        cF.embedding(cgrad.tensor([-5]), w)
    with pytest.raises(TypeError):
        cF.embedding(cgrad.tensor([0.0, 1.0]), w)


# ---------------------------------------------------------------- dropout
def test_dropout_statistics():
    n, p = 20000, 0.3
    x = cgrad.ones(n)
    y = to_numpy(cF.dropout(x, p=p))
    zero_frac = float((y == 0).mean())
    assert abs(zero_frac - p) < 4 * np.sqrt(p * (1 - p) / n), zero_frac
    np.testing.assert_allclose(y[y != 0], 1.0 / (1.0 - p), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.03


def test_dropout_gradient_is_mask_over_keep():
    p = 0.4
    x = cgrad.tensor(np.random.default_rng(0).uniform(0.5, 2.0, (50, 40)), requires_grad=True)
    y = cF.dropout(x, p)
    v = np.random.default_rng(1).standard_normal((50, 40))
    y.backward(cgrad.tensor(v, dtype=cgrad.float64))
    mask = to_numpy(y) != 0
    assert 0 < mask.mean() < 1
    np.testing.assert_allclose(to_numpy(y), np.where(mask, to_numpy(x) / (1 - p), 0.0), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(x.grad), v * mask / (1 - p), rtol=1e-12)


def test_dropout_gradgrad_uses_same_mask():
    x = cgrad.tensor(np.linspace(0.5, 2.0, 200), requires_grad=True)
    y = cF.dropout(x, 0.5)
    (g,) = cgrad.autograd.grad((y * y).sum(), [x], create_graph=True)
    mask = to_numpy(y) != 0
    np.testing.assert_allclose(to_numpy(g), 2 * to_numpy(x) * mask * 4.0, rtol=1e-12)
    (h,) = cgrad.autograd.grad(g.sum(), [x])
    np.testing.assert_allclose(to_numpy(h), mask * 8.0, rtol=1e-12)


def test_dropout_reproducible_under_manual_seed():
    x = cgrad.ones(1000)
    cgrad.manual_seed(123)
    a = to_numpy(cF.dropout(x, 0.5))
    b = to_numpy(cF.dropout(x, 0.5))
    cgrad.manual_seed(123)
    c = to_numpy(cF.dropout(x, 0.5))
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_dropout_eval_and_edge_p():
    x = cgrad.randn(100, requires_grad=True)
    assert np.array_equal(to_numpy(cF.dropout(x, 0.5, training=False)), to_numpy(x))
    assert np.array_equal(to_numpy(cF.dropout(x, 0.0)), to_numpy(x))
    assert (to_numpy(cF.dropout(x, 1.0)) == 0).all()
    cF.dropout(x, 1.0).sum().backward()
    assert (to_numpy(x.grad) == 0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p|probab"):
            cF.dropout(x, bad)


def test_dropout_float64_and_shape():
    x = cgrad.ones(3, 4, 5, dtype=cgrad.float64)
    y = cF.dropout(x, 0.2)
    assert y.shape == (3, 4, 5) and y.dtype == cgrad.float64


# ----------------------------------------------------------------- losses
CE_TARGET = Const(np.array([0, 3, 4, 1, 3]))


def test_cross_entropy(): check_op([(5, 5), CE_TARGET], lambda x, t: F(x).cross_entropy(x, t))
def test_cross_entropy_two_classes(): check_op([(4, 2), Const(np.array([1, 0, 0, 1]))], lambda x, t: F(x).cross_entropy(x, t))
def test_cross_entropy_large_logits(): check_op([Arg((5, 5), -50, 50), CE_TARGET], lambda x, t: F(x).cross_entropy(x, t), f32_atol=1e-3)
def test_cross_entropy_single_row(): check_op([(1, 6), Const(np.array([5]))], lambda x, t: F(x).cross_entropy(x, t))


def test_cross_entropy_matches_log_softmax():
    x = cgrad.randn(6, 4)
    t = cgrad.tensor([0, 1, 2, 3, 0, 1])
    ls = to_numpy(x.log_softmax(1))
    expected = -ls[np.arange(6), to_numpy(t)].mean()
    np.testing.assert_allclose(cF.cross_entropy(x, t).item(), expected, rtol=1e-6)


def test_cross_entropy_errors():
    x = cgrad.randn(3, 4)
    with pytest.raises(IndexError, match="4|range|class"):
        cF.cross_entropy(x, cgrad.tensor([0, 4, 1]))
    with pytest.raises(IndexError):
        cF.cross_entropy(x, cgrad.tensor([0, -1, 1]))
    with pytest.raises((ValueError, RuntimeError), match="shape|size|batch"):
        cF.cross_entropy(x, cgrad.tensor([0, 1]))
    with pytest.raises((TypeError, RuntimeError)):
        cF.cross_entropy(x, cgrad.tensor([0.0, 1.0, 2.0]))


def test_mse_loss(): check_op([(3, 4), (3, 4)], lambda a, b: F(a).mse_loss(a, b))
def test_mse_loss_const_target(): check_op([(5,), Const(np.linspace(-1, 1, 5))], lambda a, b: F(a).mse_loss(a, b))
def test_mse_loss_0d(): check_op([(), ()], lambda a, b: F(a).mse_loss(a, b))


def test_mse_loss_shape_mismatch():
    with pytest.raises((ValueError, RuntimeError)):
        cF.mse_loss(cgrad.ones(3, 4), cgrad.ones(5))


# ----------------------------------------------------- F.softmax family
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_functional_softmax(dim):
    check_op([(3, 4)], lambda x: F(x).softmax(x, dim))
    check_op([(3, 4)], lambda x: F(x).log_softmax(x, dim=dim))


# The backward of each is one fused op recorded with its own derivative
# (ops_reduce.c): gradients and second derivatives (check_op's gradgrad) on
# a middle dim, a broadcast incoming gradient (after .sum), a 0-d input and
# a strided one.
SOFTMAX_BACKWARD = {
    "middle dim": ([(2, 3, 4)], lambda x, op: getattr(F(x), op)(x, 1)),
    "broadcast gradient": ([(2, 3, 4)], lambda x, op: getattr(F(x), op)(x, 1).sum(1)),
    "weighted sum": ([(3, 5), (3, 5)], lambda x, w, op: (getattr(F(x), op)(x, -1) * w).sum()),
    "0-d": ([()], lambda x, op: getattr(F(x), op)(x, 0)),
    "strided": ([(4, 6)], lambda x, op: getattr(F(x), op)(x[:, ::2].T, 0)),
}


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("case", list(SOFTMAX_BACKWARD))
def test_softmax_backward_fused(case, op):
    specs, fn = SOFTMAX_BACKWARD[case]
    check_op(specs, lambda *a: fn(*a, op))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_third_derivative(op):
    # the fused backward's own derivative is differentiable again: the third
    # derivative of sum(w * op(x)^2)... against central differences of the
    # second (float64)
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((2, 4))
    w = cgrad.from_numpy(rng.standard_normal((2, 4)))
    u = cgrad.from_numpy(rng.standard_normal((2, 4)))

    def second(xa, create_graph):
        x = cgrad.from_numpy(xa).requires_grad_()
        y = getattr(x, op)(1)
        (g1,) = cgrad.autograd.grad((w * y * y).sum(), [x], create_graph=True)
        (g2,) = cgrad.autograd.grad((g1 * u).sum(), [x], create_graph=create_graph)
        return x, g2

    check_third_derivative(second, x0, u)


def test_functional_activations_exist():
    for name in ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softplus", "softmax",
                 "log_softmax", "linear", "conv2d", "max_pool2d", "avg_pool2d", "dropout",
                 "embedding", "cross_entropy", "mse_loss"):
        assert callable(getattr(cF, name)), name


# ------------------------------------------------- a small network end to end
def test_mlp_end_to_end():
    rng = np.random.default_rng(0)
    target = Const(rng.integers(0, 3, 4))

    def net(x, w1, b1, w2, b2, t):
        h = F(x).gelu(F(x).linear(x, w1, b1))
        return F(x).cross_entropy(F(x).linear(h, w2, b2), t)

    check_op([(4, 5), (6, 5), (6,), (3, 6), (3,), target], net)


def test_cnn_end_to_end():
    def net(x, w, b, wl):
        h = F(x).max_pool2d(F(x).conv2d(x, w, b, padding=1).relu(), 2)
        return F(x).log_softmax(h.flatten(1) @ wl, 1)

    check_op([(2, 1, 4, 4), (2, 1, 3, 3), (2,), (8, 3)], net, atol=1e-5)


# ------------------------------------ larger sizes (blocked kernels, BLAS)
@pytest.mark.parametrize("m,k,n", [(65, 130, 33), (1, 257, 1), (128, 3, 129)], ids=str)
def test_matmul_large_matches_numpy(m, k, n):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    for dt, rtol in ((cgrad.float64, 1e-12), (cgrad.float32, 1e-4)):
        ta = cgrad.tensor(a, dtype=dt, requires_grad=True)
        tb = cgrad.tensor(b, dtype=dt, requires_grad=True)
        out = ta @ tb
        np.testing.assert_allclose(to_numpy(out), a @ b, rtol=rtol, atol=rtol * 10)
        v = rng.standard_normal((m, n))
        out.backward(cgrad.tensor(v, dtype=dt))
        np.testing.assert_allclose(to_numpy(ta.grad), v @ b.T, rtol=rtol, atol=rtol * 10)
        np.testing.assert_allclose(to_numpy(tb.grad), a.T @ v, rtol=rtol, atol=rtol * 10)
        # transposed operands take the strided / trans-flag path
        at = cgrad.tensor(a.T.copy(), dtype=dt).T
        bt = cgrad.tensor(b.T.copy(), dtype=dt).T
        np.testing.assert_allclose(to_numpy(at @ bt), a @ b, rtol=rtol, atol=rtol * 10)


def test_conv2d_larger_matches_torch(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 17, 15))
    w = rng.standard_normal((16, 4, 3, 5))
    b = rng.standard_normal(16)
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    cx, cw, cb = (cgrad.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = torch.nn.functional.conv2d(tx, tw, tb, **kw)
    cout = cF.conv2d(cx, cw, cb, **kw)
    np.testing.assert_allclose(to_numpy(cout), tout.detach().numpy(), rtol=1e-10, atol=1e-10)
    v = rng.standard_normal(tuple(tout.shape))
    tout.backward(torch.tensor(v))
    cout.backward(cgrad.tensor(v))
    for c, t, name in ((cx, tx, "x"), (cw, tw, "w"), (cb, tb, "b")):
        np.testing.assert_allclose(to_numpy(c.grad), t.grad.numpy(), rtol=1e-10, atol=1e-9,
                                   err_msg=name)


def test_pools_larger_match_torch(torch):
    x = np.random.default_rng(0).standard_normal((2, 5, 19, 16))
    for fn, kw in (("max_pool2d", dict(kernel_size=3, stride=2, padding=1)),
                   ("avg_pool2d", dict(kernel_size=(4, 3), stride=(3, 2), padding=(2, 1))),
                   ("avg_pool2d", dict(kernel_size=3, padding=1, count_include_pad=False))):
        tx, cx = torch.tensor(x, requires_grad=True), cgrad.tensor(x, requires_grad=True)
        tout, cout = getattr(torch.nn.functional, fn)(tx, **kw), getattr(cF, fn)(cx, **kw)
        np.testing.assert_allclose(to_numpy(cout), tout.detach().numpy(), rtol=1e-12, err_msg=fn)
        (tout * tout).sum().backward()
        (cout * cout).sum().backward()
        np.testing.assert_allclose(to_numpy(cx.grad), tx.grad.numpy(), rtol=1e-12, err_msg=fn)


def test_nn_ops_on_noncontiguous_inputs():
    check_op([(5, 5, 2, 3)], lambda x: F(x).max_pool2d(x.permute(2, 3, 0, 1), 2))
    check_op([(5, 5, 2, 3)], lambda x: F(x).avg_pool2d(x.permute(2, 3, 0, 1), 3, stride=1, padding=1))
    check_op([(4, 3), (5, 4), (5,)], lambda x, w, b: F(x).linear(x.T, w.T.T, b))
    check_op([(3, 6)], lambda x: F(x).log_softmax(x.T, 1))
    check_op([(5, 4), Const(np.array([0, 3, 1]))], lambda x, t: F(x).cross_entropy(x.T[:3], t))
    check_op([(2, 6), Const(np.array([[1, 0], [2, 2]]))], lambda w, i: F(w).embedding(i, w.T))


def test_dropout_on_view():
    x = cgrad.ones(40, 50, requires_grad=True)
    y = cF.dropout(x.T, 0.5)
    assert y.shape == (50, 40)
    y.sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), (to_numpy(y) != 0).T * 2.0)
