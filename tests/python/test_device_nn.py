"""Indexing, embedding, dropout, convolution and pooling on the "cuda"
device: values and gradients checked against the CPU backend (float64
tightly, float32 too), gradients against central differences through the
device, the same errors as on the CPU for bad indices, and a clear error
for mixing devices.

In CI "cuda" is the NumPy reference device (see device_util.py)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as F
from cgrad.autograd import gradcheck, gradgradcheck
from device_util import assert_same_values, host, record_copies_back

F64 = dict(rtol=1e-11, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)
TOL = {cgrad.float64: F64, cgrad.float32: F32}


def _pair(a, dtype=cgrad.float64, grad=True):
    """The same values on the cpu and on cuda (leaves that require grad
    when grad and the dtype is floating)."""
    rg = grad and dtype in (cgrad.float32, cgrad.float64)
    return (cgrad.tensor(a, dtype=dtype, requires_grad=rg),
            cgrad.tensor(a, dtype=dtype, device="cuda", requires_grad=rg))


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _backward_both(y, yd, seed=1):
    """Backpropagates one random upstream gradient through both graphs."""
    g = _rand(y.shape, seed)
    y.backward(cgrad.tensor(g, dtype=y.dtype))
    yd.backward(cgrad.tensor(g, dtype=yd.dtype, device="cuda"))


def _same_grads(pairs, tol):
    for t, td in pairs:
        assert td.grad is not None and td.grad.device == "cuda"
        assert_same_values(t.grad, td.grad, **tol)


def _error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type, str(info.value)


def _same_error(cpu_fn, dev_fn):
    """Both devices raise the same exception with the same message."""
    assert _error(cpu_fn) == _error(dev_fn)


# ---------------------------------------------------------------- indexing
@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select_values_and_gradients(dtype, dim):
    a, ad = _pair(_rand((4, 5, 3)), dtype)
    n = a.shape[dim]
    idx = [n - 1, 0, -1, 1, 0]  # repeats and a negative index: the gradient accumulates
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    y, yd = a.index_select(dim, i), ad.index_select(dim, idd)
    assert_same_values(y, yd, rtol=0, atol=0)
    _backward_both(y, yd)
    _same_grads([(a, ad)], TOL[dtype])


def test_index_select_int_bool_noncontiguous_and_scalar_index():
    v = np.arange(24).reshape(4, 6)
    a, ad = _pair(v, cgrad.int64)
    i, idd = cgrad.tensor([5, 1, 1]), cgrad.tensor([5, 1, 1], device="cuda")
    assert_same_values(a.t().index_select(0, i), ad.t().index_select(0, idd))  # strided input
    b, bd = _pair(v % 3 == 0, cgrad.bool)
    assert_same_values(b.index_select(1, i), bd.index_select(1, idd))
    # a 0-d host index joins device tensors as a scalar (as in PyTorch)
    s = cgrad.tensor(-2)
    assert_same_values(a.index_select(0, s), ad.index_select(0, s))
    empty = cgrad.tensor(np.zeros(0, np.int64))
    assert_same_values(a.index_select(0, empty), ad.index_select(0, empty.to("cuda")))


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
def test_index_add_values_and_gradients(dtype):
    a, ad = _pair(_rand((3, 5, 2)), dtype)
    src, srcd = _pair(_rand((3, 4, 2), 2), dtype)
    idx = [4, 0, 4, -1]
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    y, yd = a.index_add(1, i, src), ad.index_add(1, idd, srcd)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(a, ad), (src, srcd)], TOL[dtype])


def test_index_add_int64_wraps_like_the_cpu():
    big = 2 ** 62
    a, ad = _pair([big, 1, 2], cgrad.int64)
    s, sd = _pair([big, big, -5], cgrad.int64)
    i, idd = cgrad.tensor([0, 0, 2]), cgrad.tensor([0, 0, 2], device="cuda")
    y, yd = a.index_add(0, i, s), ad.index_add(0, idd, sd)
    assert_same_values(y, yd)
    assert host(yd)[0] == -2 ** 62  # 3 * 2**62 wrapped modulo 2**64, not saturated


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_gather_values_and_gradients(dtype, dim):
    a, ad = _pair(_rand((4, 5, 3)), dtype)
    # index smaller than a in the other dims, with repeats along dim
    ishape = [3, 4, 2]
    ishape[dim] = 6
    idx = np.random.default_rng(3).integers(0, a.shape[dim], size=ishape)
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    y, yd = a.gather(dim, i), ad.gather(dim, idd)
    assert_same_values(y, yd, rtol=0, atol=0)
    _backward_both(y, yd)
    _same_grads([(a, ad)], TOL[dtype])


def test_gather_bool_int_and_zero_dim():
    v = np.arange(12).reshape(3, 4)
    idx = [[2, 0, 1, 1], [0, 0, 2, 1]]
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    a, ad = _pair(v, cgrad.int64)
    assert_same_values(a.gather(0, i), ad.gather(0, idd))
    b, bd = _pair(v % 2 == 0, cgrad.bool)
    assert_same_values(b.gather(0, i), bd.gather(0, idd))
    s, sd = _pair(2.5)
    z, zd = cgrad.tensor(0), cgrad.tensor(0, device="cuda")
    assert_same_values(s.gather(0, z), sd.gather(0, zd))


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("dim", [0, 1])
def test_scatter_add_values_and_gradients(dtype, dim):
    a, ad = _pair(_rand((4, 5)), dtype)
    src, srcd = _pair(_rand((5, 6), 4), dtype)  # src larger than index: its tail gets zero gradient
    ishape = (3, 4)
    idx = np.random.default_rng(5).integers(0, a.shape[dim], size=ishape)
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    y, yd = a.scatter_add(dim, i, src), ad.scatter_add(dim, idd, srcd)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(a, ad), (src, srcd)], TOL[dtype])
    np.testing.assert_array_equal(host(srcd.grad)[3:], 0)


def test_scatter_add_int64():
    a, ad = _pair(np.arange(6).reshape(2, 3), cgrad.int64)
    s, sd = _pair([[2 ** 62, 2 ** 62, 7]], cgrad.int64)
    idx = [[1, 1, 0]]
    y = a.scatter_add(1, cgrad.tensor(idx), s)
    yd = ad.scatter_add(1, cgrad.tensor(idx, device="cuda"), sd)
    assert_same_values(y, yd)


def test_gather_and_scatter_add_indices_uploaded_from_the_host_are_checked_without_a_copy_back(
        monkeypatch):
    """gather's and scatter_add's bounds checks (and so the gradients of
    each, the other) use what the index's upload saw: nothing comes back
    (no sync on a GPU). An index written on the device is copied back and
    checked; one changed outside cgrad is not read out of range (NumPy's
    take_along_axis and add.at refuse on the reference device)."""
    copies = record_copies_back(monkeypatch)
    a, ad = _pair(_rand((4, 5)))
    src, srcd = _pair(_rand((3, 5), 2))
    idx = np.array([[3, 0, 1, 1, 2], [0, 0, 3, 2, 1], [1, 2, 3, 0, 0]])
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx).to("cuda")
    yd = ad.gather(0, idd).sum() + ad.scatter_add(0, idd, srcd).sum()
    yd.backward()
    assert copies == []
    y = a.gather(0, i).sum() + a.scatter_add(0, i, src).sum()
    y.backward()
    _same_grads([(a, ad), (src, srcd)], TOL[cgrad.float64])
    del copies[:]
    idd[1, 2] = 4  # written on the device: checked from a copy back
    with pytest.raises(IndexError, match="index 4 is out of bounds for dim 0 with size 4"):
        ad.gather(0, idd)
    with pytest.raises(IndexError, match="index 4 is out of bounds for dim 0 with size 4"):
        ad.scatter_add(0, idd, srcd)
    assert copies == [(3, 5), (3, 5)]
    shared = cgrad.tensor(idx).to("cuda")
    np.from_dlpack(shared)[0, 0] = 1 << 40
    with pytest.raises(IndexError):
        ad.gather(0, shared)
    with pytest.raises(IndexError):
        ad.scatter_add(0, shared, srcd)


def test_gradcheck_through_the_device_for_indexing():
    a = cgrad.tensor(_rand((4, 3)), dtype=cgrad.float64, requires_grad=True)
    src = cgrad.tensor(_rand((2, 3), 1), dtype=cgrad.float64, requires_grad=True)
    i = cgrad.tensor([3, 3], device="cuda")
    gi = cgrad.tensor([[0, 2, 3], [3, 3, 1]], device="cuda")

    def f(a, src):
        ad, sd = a.to("cuda"), src.to("cuda")
        return ((ad.index_select(0, i) * 2 + ad.gather(0, gi)).cpu(),
                ad.index_add(0, i, sd).cpu(), ad.scatter_add(0, gi[:, :2], sd[:, :2]).cpu())

    assert gradcheck(f, (a, src))
    assert gradgradcheck(f, (a, src))


@pytest.mark.parametrize("make", [
    lambda a, i: a.index_select(0, i),
    lambda a, i: a.index_add(0, i, a[:2] * 1.0),
    lambda a, i: a.gather(0, i.reshape(2, 1)),
    lambda a, i: a.scatter_add(0, i.reshape(2, 1), a[:2, :1] * 1.0),
    lambda a, i: F.embedding(i, a),
], ids=["index_select", "index_add", "gather", "scatter_add", "embedding"])
@pytest.mark.parametrize("bad", [5, -6, 99])
def test_out_of_range_indices_raise_the_cpu_error(make, bad):
    a, ad = _pair(_rand((5, 3)), grad=False)
    idx = [1, bad]
    kind, msg = _error(lambda: make(a, cgrad.tensor(idx)))
    assert _error(lambda: make(ad, cgrad.tensor(idx, device="cuda"))) == (kind, msg)
    assert kind is IndexError and str(bad) in msg


@pytest.mark.parametrize("make", [
    lambda a, i: a.index_select(0, i),
    lambda a, i: a.index_add(0, i, cgrad.ones(2, 3, dtype=cgrad.float64, device="cuda")),
    lambda a, i: a.gather(0, i.reshape(2, 1)),
    lambda a, i: a.scatter_add(0, i.reshape(2, 1), cgrad.ones(2, 1, dtype=cgrad.float64, device="cuda")),
    lambda a, i: F.embedding(i, a),
], ids=["index_select", "index_add", "gather", "scatter_add", "embedding"])
def test_mixing_devices_names_both(make):
    ad = cgrad.tensor(_rand((5, 3)), dtype=cgrad.float64, device="cuda")
    with pytest.raises(ValueError, match="'cuda'.*'cpu'|'cpu'.*'cuda'"):
        make(ad, cgrad.tensor([1, 2]))  # a host index for a device tensor


def test_index_add_src_on_the_other_device():
    ad = cgrad.zeros(3, 2, dtype=cgrad.float64, device="cuda")
    with pytest.raises(ValueError, match="argument 0 is on 'cuda' and argument 2 on 'cpu'"):
        ad.index_add(0, cgrad.tensor([1], device="cuda"), cgrad.ones(1, 2, dtype=cgrad.float64))


# -------------------------------------------------------------- boolean masks
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_boolean_mask_indexing_uses_nonzero_on_the_device(density):
    v = _rand((4, 5))
    keep = np.random.default_rng(2).random((4, 5)) < density
    x, xd = _pair(v)
    m, md = cgrad.tensor(keep), cgrad.tensor(keep, device="cuda")
    y, yd = x[m], xd[md]
    assert yd.device == "cuda" and yd.shape == (int(keep.sum()),)
    assert_same_values(y, yd, rtol=0, atol=0)
    if keep.any():
        _backward_both(y, yd)
        _same_grads([(x, xd)], F64)
    r, rd = x[:, m[0]], xd[:, md[0]]  # a mask on one dim
    assert_same_values(r, rd, rtol=0, atol=0)


# ---------------------------------------------------------------- embedding
@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
def test_embedding_values_and_gradients(dtype):
    w, wd = _pair(_rand((7, 4)), dtype)
    idx = [[6, 0, 3], [3, 3, 1]]
    i, idd = cgrad.tensor(idx), cgrad.tensor(idx, device="cuda")
    y, yd = F.embedding(i, w), F.embedding(idd, wd)
    assert_same_values(y, yd, rtol=0, atol=0)
    _backward_both(y, yd)
    _same_grads([(w, wd)], TOL[dtype])


def test_embedding_padding_idx_scalar_index_and_module():
    w, wd = _pair(_rand((6, 3)))
    idx = [2, 0, 5, 0]
    y = F.embedding(cgrad.tensor(idx), w, padding_idx=0)
    yd = F.embedding(cgrad.tensor(idx, device="cuda"), wd, padding_idx=0)
    assert_same_values(y, yd, rtol=0, atol=0)
    _backward_both(y, yd)
    _same_grads([(w, wd)], F64)
    np.testing.assert_array_equal(host(wd.grad)[0], 0)
    s = cgrad.tensor(4)  # a 0-d host index with device weights
    assert_same_values(F.embedding(s, w), F.embedding(s, wd), rtol=0, atol=0)


def test_gradcheck_embedding_through_the_device():
    w = cgrad.tensor(_rand((5, 3)), dtype=cgrad.float64, requires_grad=True)
    i = cgrad.tensor([[4, 1], [1, 1]], device="cuda")
    assert gradcheck(lambda w: F.embedding(i, w.to("cuda")).cpu(), (w,))
    assert gradgradcheck(lambda w: F.embedding(i, w.to("cuda")).cpu(), (w,))


def test_embedding_indices_uploaded_from_the_host_are_checked_without_a_copy_back(monkeypatch):
    """The bounds check of device indices uses what their upload saw: an
    embedding step copies nothing back (no sync on a GPU); indices made on
    the device, or written there since, are copied back and checked as
    before; indices changed outside cgrad (memory shared with NumPy, on the
    reference device) are not read out of range: NumPy's take refuses."""
    copies = record_copies_back(monkeypatch)
    w, wd = _pair(_rand((6, 3)))
    idx = cgrad.tensor([[5, 0], [2, 2]]).to("cuda")
    y = F.embedding(idx, wd)
    y.sum().backward()
    assert copies == []
    assert_same_values(F.embedding(cgrad.tensor([[5, 0], [2, 2]]), w), y, rtol=0, atol=0)
    del copies[:]  # (the comparison's own)
    idx[0, 1] = 6  # written on the device: checked from a copy back
    with pytest.raises(IndexError, match="index 6 is out of range for 6 embeddings"):
        F.embedding(idx, wd)
    assert copies == [(4,)]
    made = cgrad.full((3,), 7, dtype=cgrad.int64, device="cuda")
    with pytest.raises(IndexError, match="index 7 is out of range for 6 embeddings"):
        F.embedding(made, wd)
    shared_idx = cgrad.tensor([1, 2]).to("cuda")
    np.from_dlpack(shared_idx)[1] = 1 << 40
    with pytest.raises(IndexError):
        F.embedding(shared_idx, wd)


# ------------------------------------------------------------------ dropout
@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_dropout_same_seed_same_result_on_both_devices(dtype, p):
    x, xd = _pair(_rand((6, 7)), dtype)
    cgrad.manual_seed(11)
    y = F.dropout(x, p)
    cgrad.manual_seed(11)
    yd = F.dropout(xd, p)
    assert yd.device == "cuda"
    assert_same_values(y, yd, rtol=0, atol=0)
    kept = host(yd) != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(host(yd)[kept], host(xd)[kept] / (1 - p), rtol=1e-6)
    _backward_both(y, yd)
    _same_grads([(x, xd)], dict(rtol=0, atol=0))
    # the generator moved by the same amount on both devices
    cgrad.manual_seed(11)
    F.dropout(xd, p)
    after_dev = host(cgrad.rand(3))
    cgrad.manual_seed(11)
    F.dropout(x, p)
    np.testing.assert_array_equal(host(cgrad.rand(3)), after_dev)


def test_dropout_edge_cases_on_the_device():
    v = _rand((3, 4))
    v[0, 0], v[1, 1] = np.inf, np.nan
    x, xd = _pair(v)
    y = F.dropout(xd, 1.0)
    np.testing.assert_array_equal(host(y), np.zeros((3, 4)))  # zeros even where x is inf/NaN
    for same in (F.dropout(xd, 0.0), F.dropout(xd, 0.5, training=False)):  # the input itself
        assert same.device == "cuda" and same.grad_fn is None
        np.testing.assert_array_equal(host(same), v)
    cgrad.manual_seed(4)
    a = F.dropout(x.t(), 0.5)
    cgrad.manual_seed(4)
    b = F.dropout(xd.t(), 0.5)  # a strided input
    assert_same_values(a, b, rtol=0, atol=0)
    drop = cgrad.nn.Dropout(0.3)
    cgrad.manual_seed(9)
    m1 = drop(x)
    cgrad.manual_seed(9)
    m2 = drop(xd)
    assert_same_values(m1, m2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(xd, 1.5)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.dropout(cgrad.ones(3, dtype=cgrad.int64, device="cuda"), 0.5)


# -------------------------------------------------------------- convolution
CONV_CASES = [
    dict(),
    dict(stride=2),
    dict(padding=1),
    dict(stride=(2, 1), padding=(0, 2)),
    dict(dilation=2, padding=2),
    dict(dilation=(1, 2), stride=(1, 3)),
    dict(groups=2),
    dict(groups=4, padding=1, stride=2),
    dict(stride=3, padding=1, dilation=2, groups=2),
]


def _conv_pair(kw, dtype, ksize=(3, 2), c_in=4, c_out=8, shape=(2, 7, 6), seed=0):
    g = kw.get("groups", 1)
    x, xd = _pair(_rand((shape[0], c_in) + shape[1:], seed), dtype)
    w, wd = _pair(_rand((c_out, c_in // g) + ksize, seed + 1), dtype)
    return x, xd, w, wd


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("kw", CONV_CASES, ids=[str(k) for k in CONV_CASES])
def test_conv2d_values_and_gradients(dtype, kw):
    x, xd, w, wd = _conv_pair(kw, dtype)
    y, yd = F.conv2d(x, w, None, **kw), F.conv2d(xd, wd, None, **kw)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(x, xd), (w, wd)], TOL[dtype])


@pytest.mark.parametrize("kw", [dict(), dict(groups=2), dict(stride=2)], ids=str)
def test_conv2d_pointwise_and_strided_inputs(kw):
    x, xd, w, wd = _conv_pair(kw, cgrad.float64, ksize=(1, 1))
    y, yd = F.conv2d(x, w, None, **kw), F.conv2d(xd, wd, None, **kw)
    assert_same_values(y, yd, **F64)
    _backward_both(y, yd)
    _same_grads([(x, xd), (w, wd)], F64)
    # a permuted (non-contiguous) input and weight
    v = _rand((2, 6, 5, 4), 7)
    xp_, xpd = _pair(v)
    k = _rand((3, 4, 2, 2), 8)
    wp, wpd = _pair(k)
    y = F.conv2d(xp_.permute(0, 3, 2, 1), wp.permute(0, 1, 3, 2))
    yd = F.conv2d(xpd.permute(0, 3, 2, 1), wpd.permute(0, 1, 3, 2))
    assert_same_values(y, yd, **F64)
    _backward_both(y, yd)
    _same_grads([(xp_, xpd), (wp, wpd)], F64)


def test_conv2d_empty_batch_and_channels():
    x, xd, w, wd = _conv_pair({}, cgrad.float64, shape=(0, 5, 5))
    y, yd = F.conv2d(x, w), F.conv2d(xd, wd)
    assert yd.shape == (0, 8, 3, 4)
    _backward_both(y, yd)
    _same_grads([(w, wd)], F64)
    np.testing.assert_array_equal(host(wd.grad), 0)


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
def test_conv2d_bias_gradient(dtype):
    kw = dict(stride=2, padding=1, groups=2)
    x, xd, w, wd = _conv_pair(kw, dtype)
    b, bd = _pair(_rand(8, 9), dtype)
    y, yd = F.conv2d(x, w, b, **kw), F.conv2d(xd, wd, bd, **kw)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(x, xd), (w, wd), (b, bd)], TOL[dtype])


def test_conv2d_bias_values():
    kw = dict(padding=1)
    x, xd, w, wd = _conv_pair(kw, cgrad.float64)
    b, bd = _pair(_rand(8, 9))
    assert_same_values(F.conv2d(x, w, b, **kw), F.conv2d(xd, wd, bd, **kw), **F64)


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, groups=2)], ids=str)
def test_conv2d_gradcheck_and_double_backward_through_the_device(kw):
    g = kw.get("groups", 1)
    x = cgrad.tensor(_rand((1, 2, 5, 5)), dtype=cgrad.float64, requires_grad=True)
    w = cgrad.tensor(_rand((2, 2 // g, 2, 2), 1), dtype=cgrad.float64, requires_grad=True)

    def f(x, w):
        return F.conv2d(x.to("cuda"), w.to("cuda"), None, **kw).cpu()

    assert gradcheck(f, (x, w))
    assert gradgradcheck(f, (x, w))  # conv2d_input_backward / _weight_backward on the device


def test_conv2d_errors_on_the_device():
    x, xd, w, wd = _conv_pair({}, cgrad.float64)
    _same_error(lambda: F.conv2d(x, w[:, :3]), lambda: F.conv2d(xd, wd[:, :3]))
    _same_error(lambda: F.conv2d(x, w, stride=0), lambda: F.conv2d(xd, wd, stride=0))
    _same_error(lambda: F.conv2d(x[:, :, :1], w), lambda: F.conv2d(xd[:, :, :1], wd))
    with pytest.raises(ValueError, match="argument 0 is on 'cuda' and argument 1 on 'cpu'"):
        F.conv2d(xd, w)
    with pytest.raises(ValueError, match="argument 0 is on 'cuda' and argument 2 on 'cpu'"):
        F.conv2d(xd, wd, cgrad.zeros(8, dtype=cgrad.float64))


# ------------------------------------------------------------------ pooling
POOL_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2)),
    dict(kernel_size=(2, 4), stride=1, padding=(1, 2)),
    dict(kernel_size=3, stride=1),  # overlapping windows: repeated argmax positions
]


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("kw", POOL_CASES, ids=[str(k) for k in POOL_CASES])
def test_max_pool2d_values_and_gradients(dtype, kw):
    x, xd = _pair(_rand((2, 3, 7, 8)), dtype)
    y, yd = F.max_pool2d(x, **kw), F.max_pool2d(xd, **kw)
    assert_same_values(y, yd, rtol=0, atol=0)
    _backward_both(y, yd)
    _same_grads([(x, xd)], TOL[dtype])


def test_max_pool2d_ties_nan_and_infinities_pick_what_the_cpu_picks():
    v = np.zeros((1, 2, 6, 6))
    v[0, 0, :3, :3] = 1.0                    # ties: the first maximum wins
    v[0, 0, 3:, 3:] = -np.inf                # a window of -inf only
    v[0, 1, 0, 1] = v[0, 1, 1, 0] = np.nan   # two NaNs in one window: the last one
    v[0, 1, 4, 4] = np.inf
    v[0, 1, 2:4, 2:4] = 2.0
    for kw in [dict(kernel_size=3, stride=3), dict(kernel_size=2, stride=1, padding=1),
               dict(kernel_size=3, stride=2, padding=1)]:
        x, xd = _pair(v)
        y, yd = F.max_pool2d(x, **kw), F.max_pool2d(xd, **kw)
        assert_same_values(y, yd, rtol=0, atol=0)
        _backward_both(y, yd)
        np.testing.assert_array_equal(host(xd.grad), host(x.grad))  # same positions chosen


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
@pytest.mark.parametrize("cip", [True, False])
@pytest.mark.parametrize("kw", POOL_CASES, ids=[str(k) for k in POOL_CASES])
def test_avg_pool2d_values_and_gradients(dtype, cip, kw):
    x, xd = _pair(_rand((2, 3, 7, 8)), dtype)
    y = F.avg_pool2d(x, count_include_pad=cip, **kw)
    yd = F.avg_pool2d(xd, count_include_pad=cip, **kw)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(x, xd)], TOL[dtype])


def test_pooling_3d_input_strided_input_and_empty_batch():
    x, xd = _pair(_rand((3, 6, 5)))
    for fn in (lambda t: F.max_pool2d(t, 2, 1, 1), lambda t: F.avg_pool2d(t, 3, 2, 1)):
        y, yd = fn(x), fn(xd)
        assert_same_values(y, yd, **F64)
        y2, yd2 = fn(x.transpose(1, 2)), fn(xd.transpose(1, 2))
        assert_same_values(y2, yd2, **F64)
    e, ed = _pair(np.zeros((0, 2, 4, 4)))
    for fn in (lambda t: F.max_pool2d(t, 2), lambda t: F.avg_pool2d(t, 2)):
        y, yd = fn(e), fn(ed)
        assert yd.shape == (0, 2, 2, 2) and yd.device == "cuda"
        _backward_both(y, yd)
        assert ed.grad.shape == (0, 2, 4, 4)
        e.grad = ed.grad = None


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_pool_gradcheck_and_double_backward_through_the_device(pool):
    x = cgrad.tensor(_rand((1, 2, 5, 4)), dtype=cgrad.float64, requires_grad=True)
    if pool == "max":
        def f(x):
            return F.max_pool2d(x.to("cuda"), 3, 2, 1).cpu()
    else:
        def f(x):
            return F.avg_pool2d(x.to("cuda"), 3, 2, 1, count_include_pad=False).cpu()
    assert gradcheck(f, (x,))
    assert gradgradcheck(f, (x,))  # max_pool2d_backward -> max_pool2d_gather, avg adjoint on the device


def test_pool_errors_on_the_device():
    x, xd = _pair(_rand((1, 1, 4, 4)))
    _same_error(lambda: F.max_pool2d(x, 2, padding=2), lambda: F.max_pool2d(xd, 2, padding=2))
    _same_error(lambda: F.avg_pool2d(x, 5), lambda: F.avg_pool2d(xd, 5))
    i, idd = _pair(np.ones((1, 1, 4, 4)), cgrad.int64)
    _same_error(lambda: F.max_pool2d(i, 2), lambda: F.max_pool2d(idd, 2))


# -------------------------------------------------------------- a small CNN
def _cnn_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * 0.3 for s in [(6, 3, 3, 3), (8, 3, 3, 3)]]


def _cnn(x, w1, w2):
    h = F.conv2d(x, w1, None, padding=1).relu()
    h = F.max_pool2d(h, 2)
    h = F.conv2d(h, w2, None, stride=1, padding=1, groups=2).relu()
    return F.avg_pool2d(h, 2)


@pytest.mark.parametrize("dtype", [cgrad.float64, cgrad.float32])
def test_small_cnn_forward_and_backward_match_the_cpu(dtype):
    x, xd = _pair(_rand((4, 3, 8, 8), 5), dtype)
    ws = [_pair(p, dtype) for p in _cnn_params(dtype)]
    y = _cnn(x, *[w for w, _ in ws])
    yd = _cnn(xd, *[wd for _, wd in ws])
    assert yd.device == "cuda" and yd.shape == (4, 8, 2, 2)
    assert_same_values(y, yd, **TOL[dtype])
    _backward_both(y, yd)
    _same_grads([(x, xd)] + ws, TOL[dtype])


def test_small_cnn_with_bias_and_linear_head_trains_like_the_cpu():
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s) * 0.3 for s in [(6, 3, 3, 3), (6,), (10, 6 * 4 * 4), (10,)]]
    x, xd = _pair(rng.standard_normal((5, 3, 8, 8)), grad=False)
    loss = {}
    grads = {}
    for dev, xi in (("cpu", x), ("cuda", xd)):
        ps = [cgrad.tensor(p, dtype=cgrad.float64, device=dev, requires_grad=True) for p in params]
        w1, b1, w2, b2 = ps
        h = F.max_pool2d(F.conv2d(xi, w1, b1, padding=1).relu(), 2)
        out = h.reshape(5, -1) @ w2.t() + b2
        lo = (out * out).sum()
        lo.backward()
        loss[dev] = host(lo)
        grads[dev] = [host(p.grad) for p in ps]
    np.testing.assert_allclose(loss["cuda"], loss["cpu"], rtol=1e-11)
    for g, gd in zip(grads["cpu"], grads["cuda"]):
        np.testing.assert_allclose(gd, g, rtol=1e-10, atol=1e-12)


# ------------------------------------------ gradcheck on device inputs, torch
def test_gradcheck_takes_cuda_inputs_for_every_nn_op():
    def leaf(shape, seed):
        return cgrad.tensor(_rand(shape, seed), dtype=cgrad.float64, device="cuda", requires_grad=True)

    x, w = leaf((1, 2, 5, 4), 0), leaf((2, 1, 2, 3), 1)
    assert gradcheck(lambda x, w: F.conv2d(x, w, None, stride=(2, 1), padding=1, groups=2), (x, w))
    assert gradcheck(lambda x: F.max_pool2d(x, 2, 1, 1), (x,))
    assert gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1), (x,))
    a, s = leaf((4, 3), 2), leaf((3, 3), 3)
    i = cgrad.tensor([0, 3, 0], device="cuda")
    gi = cgrad.tensor([[1, 0, 3], [3, 3, 2]], device="cuda")
    assert gradcheck(lambda a, s: (a.index_add(0, i, s), a.index_select(1, i[::2])), (a, s))
    assert gradcheck(lambda a, s: (a.gather(0, gi), a.scatter_add(0, gi, s[:2])), (a, s))
    assert gradcheck(lambda a: F.embedding(gi, a), (a,))

    def drop(a):  # the same mask on every call: reseed first
        cgrad.manual_seed(0)
        return F.dropout(a, 0.4)
    assert gradcheck(drop, (a,))


def test_conv_and_pool_on_cuda_match_torch():
    torch = pytest.importorskip("torch")
    v, k, b = _rand((2, 4, 9, 7)), _rand((6, 2, 3, 2), 1), _rand(6, 2)
    xd = cgrad.tensor(v, dtype=cgrad.float64, device="cuda")
    wd = cgrad.tensor(k, dtype=cgrad.float64, device="cuda")
    bd = cgrad.tensor(b, dtype=cgrad.float64, device="cuda")
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    y = F.conv2d(xd, wd, bd, **kw)
    ref = torch.nn.functional.conv2d(torch.tensor(v), torch.tensor(k), torch.tensor(b), **kw)
    np.testing.assert_allclose(host(y), ref.numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(host(F.max_pool2d(xd, 3, 2, 1)),
                                  torch.nn.functional.max_pool2d(torch.tensor(v), 3, 2, 1).numpy())
    for cip in (True, False):
        np.testing.assert_allclose(
            host(F.avg_pool2d(xd, 3, 2, 1, count_include_pad=cip)),
            torch.nn.functional.avg_pool2d(torch.tensor(v), 3, 2, 1, count_include_pad=cip).numpy(), rtol=1e-12)
