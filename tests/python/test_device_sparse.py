"""Row-sparse tensors, Embedding(sparse=True) gradients, the sparse
optimizer updates, clipping of sparse gradients and SparseLinear over CSR on
"cuda" (the NumPy reference device here, CuPy on a GPU) against the CPU
backend: the same values, gradients and trajectories (float64 to ~1e-12,
float32 to float32 rounding), parts kept on the device, and clear errors
(device mixes name both devices, bad indices raise as on the cpu)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as F
from cgrad import _core, nn, optim
from cgrad.autograd import gradcheck, gradgradcheck
from device_util import host

F64, F32 = cgrad.float64, cgrad.float32
DEVS = ("cpu", "cuda")


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-14) if dtype is F64 else dict(rtol=2e-6, atol=1e-6)


def sparse(dev, idx, vals, size, dtype=F64):
    return cgrad.sparse_coo_tensor(cgrad.tensor(np.asarray(idx, dtype=np.int64), device=dev),
                                   cgrad.tensor(np.asarray(vals), dtype=dtype, device=dev), size)


def on_cuda(t):
    return str(t.device).startswith("cuda")


def assert_same_sparse(cpu, dev, dtype=F64):
    """dev (a row-sparse tensor on cuda, parts there too) equals cpu."""
    assert dev.is_sparse and cpu.is_sparse
    assert on_cuda(dev) and on_cuda(dev.indices()) and on_cuda(dev.values())
    assert dev.shape == cpu.shape and dev.dtype == cpu.dtype
    assert dev._nnz() == cpu._nnz() and dev.is_coalesced() == cpu.is_coalesced()
    np.testing.assert_array_equal(host(dev.indices()), host(cpu.indices()))
    np.testing.assert_allclose(host(dev.values()), host(cpu.values()), **tol(dtype))


def values_of(rng, n, row_shape, dtype):
    return rng.standard_normal((n,) + row_shape).astype(np.float64 if dtype is F64 else np.float32)


# ------------------------------------------------------------ sparse tensors
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("row_shape", [(3,), (2, 3), ()])
def test_construct_coalesce_densify_like_the_cpu(dtype, row_shape):
    rng = np.random.default_rng(0)
    idx = [4, 0, 4, 2, 0, 4, 5]  # unsorted, duplicated
    vals = values_of(rng, len(idx), row_shape, dtype)
    size = (7,) + row_shape
    s = {d: sparse(d, idx, vals, size, dtype) for d in DEVS}
    assert_same_sparse(s["cpu"], s["cuda"], dtype)
    assert not s["cuda"].is_coalesced()
    c = {d: s[d].coalesce() for d in DEVS}
    assert_same_sparse(c["cpu"], c["cuda"], dtype)
    assert c["cuda"].is_coalesced() and c["cuda"].coalesce() is not None
    dense = {d: s[d].to_dense() for d in DEVS}
    assert on_cuda(dense["cuda"]) and not dense["cuda"].is_sparse
    np.testing.assert_allclose(host(dense["cuda"]), host(dense["cpu"]), **tol(dtype))
    # sorted unique indices are recognised as coalesced on construction
    sc = sparse("cuda", [1, 3, 6], vals[:3], size, dtype)
    assert sc.is_coalesced() and sparse("cpu", [1, 3, 6], vals[:3], size, dtype).is_coalesced()


def test_coalesce_sums_duplicates_in_order_exactly_as_the_cpu():
    # float32 sums whose result depends on the order: first row, then the rest in order
    vals = np.array([[1e8], [1.0], [-1e8], [1.0], [-0.0]], dtype=np.float32)
    idx = [2, 2, 2, 2, 0]
    c = {d: sparse(d, idx, vals, (3, 1), F32).coalesce() for d in DEVS}
    np.testing.assert_array_equal(host(c["cuda"].values()), host(c["cpu"].values()))
    # a lone -0.0 row stays -0.0 (copied, not added to 0)
    assert np.signbit(host(c["cuda"].values())[0, 0])


def test_empty_and_zero_width_sparse_tensors():
    for d in DEVS:
        e = sparse(d, np.zeros(0, np.int64), np.zeros((0, 3)), (4, 3))
        assert e._nnz() == 0 and e.is_coalesced() and e.device == e.values().device
        assert e.coalesce()._nnz() == 0
        np.testing.assert_array_equal(host(e.to_dense()), np.zeros((4, 3)))
    z = {d: sparse(d, [1, 1], np.zeros((2, 0)), (3, 0)).coalesce() for d in DEVS}
    assert_same_sparse(z["cpu"], z["cuda"])
    assert host(z["cuda"].to_dense()).shape == (3, 0)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_sparse_additions_scaling_zero_and_clone(dtype):
    rng = np.random.default_rng(1)
    va, vb = values_of(rng, 3, (2,), dtype), values_of(rng, 2, (2,), dtype)
    a = {d: sparse(d, [3, 1, 3], va, (5, 2), dtype) for d in DEVS}
    b = {d: sparse(d, [0, 1], vb, (5, 2), dtype) for d in DEVS}
    dense = np.random.default_rng(3).standard_normal((5, 2))
    dn = {d: cgrad.tensor(dense, dtype=dtype, device=d) for d in DEVS}
    ss = {d: a[d] + b[d] for d in DEVS}  # concatenated, not densified
    assert_same_sparse(ss["cpu"], ss["cuda"], dtype)
    for make in (lambda d: a[d] + dn[d], lambda d: dn[d] + a[d]):
        r = {d: make(d) for d in DEVS}
        assert not r["cuda"].is_sparse and on_cuda(r["cuda"])
        np.testing.assert_allclose(host(r["cuda"]), host(r["cpu"]), **tol(dtype))
    cl = {d: a[d].clone() for d in DEVS}
    assert_same_sparse(cl["cpu"], cl["cuda"], dtype)
    for d in DEVS:
        a[d].mul_(-2.5)
    assert_same_sparse(a["cpu"], a["cuda"], dtype)
    assert not np.shares_memory(host(cl["cuda"].values()), host(a["cuda"].values()))
    to32 = {d: a[d].to(F32) for d in DEVS}
    assert_same_sparse(to32["cpu"], to32["cuda"], F32)
    a["cuda"].zero_()
    assert a["cuda"]._nnz() == 0 and on_cuda(a["cuda"].values()) and a["cuda"].shape == (5, 2)
    np.testing.assert_array_equal(host(a["cuda"].to_dense()), 0)


def test_sparse_tensor_errors_match_the_cpu_and_name_both_devices():
    vals = np.ones((2, 3))
    msgs = []
    for d in DEVS:
        with pytest.raises(IndexError) as e:
            sparse(d, [0, 4], vals, (4, 3))
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "index 4 (entry 1) is out of range for 4 rows" in msgs[0]
    with pytest.raises(ValueError, match="one device.*'cpu'.*'cuda'"):
        cgrad.sparse_coo_tensor(cgrad.tensor([0, 1]), cgrad.tensor(vals, device="cuda"), (4, 3))
    sc, sh = sparse("cuda", [0, 1], vals, (4, 3)), sparse("cpu", [0, 1], vals, (4, 3))
    for x, y in ((sc, sh), (sh, sc), (sc, cgrad.tensor(np.ones((4, 3)))),
                 (cgrad.tensor(np.ones((4, 3))), sc)):
        with pytest.raises(ValueError, match="one device.*'cuda'.*'cpu'|one device.*'cpu'.*'cuda'"):
            x + y
    with pytest.raises(ValueError, match="cg_sparse_coalesce: expected a row-sparse tensor, got a strided"):
        cgrad.tensor(np.ones(2), device="cuda").coalesce()
    # ops without a sparse path refuse a device sparse tensor as they refuse a host one
    with pytest.raises(NotImplementedError, match="row-sparse"):
        sc.exp()
    with pytest.raises(TypeError, match="row-sparse"):
        sc.numpy()


# --------------------------------------------------------- sparse embedding
def emb_pair(dtype=F64, num=9, dim=4, seed=0):
    w = np.random.default_rng(seed).standard_normal((num, dim))
    return {d: cgrad.tensor(w, dtype=dtype, device=d, requires_grad=True) for d in DEVS}


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_sparse_embedding_values_and_gradient(dtype, padding_idx):
    w = emb_pair(dtype)
    idx = np.array([[1, 2, 7], [2, 7, 7]])
    out, grads = {}, {}
    for d in DEVS:
        out[d] = F.embedding(cgrad.tensor(idx, device=d), w[d], padding_idx=padding_idx, sparse=True)
        g = cgrad.tensor(np.arange(24.0).reshape(2, 3, 4) / 7, dtype=dtype, device=d)
        (out[d] * g).sum().backward()
        grads[d] = w[d].grad
    np.testing.assert_allclose(host(out["cuda"]), host(out["cpu"]), **tol(dtype))
    assert_same_sparse(grads["cpu"], grads["cuda"], dtype)
    assert grads["cuda"]._nnz() == (6 if padding_idx is None else 4)
    # the same gradient as the dense embedding's
    wd = cgrad.tensor(host(w["cuda"]), dtype=dtype, device="cuda", requires_grad=True)
    F.embedding(cgrad.tensor(idx, device="cuda"), wd, padding_idx=padding_idx).mul(
        cgrad.tensor(np.arange(24.0).reshape(2, 3, 4) / 7, dtype=dtype, device="cuda")).sum().backward()
    np.testing.assert_allclose(host(grads["cuda"].to_dense()), host(wd.grad), **tol(dtype))


def test_sparse_gradient_accumulation_on_the_device():
    w = emb_pair()
    for d in DEVS:  # sparse + sparse over two backward calls, then dense += sparse
        F.embedding(cgrad.tensor([3, 1], device=d), w[d], sparse=True).sum().backward()
        F.embedding(cgrad.tensor([1, 5, 5], device=d), w[d], sparse=True).pow(2).sum().backward()
    assert_same_sparse(w["cpu"].grad, w["cuda"].grad)
    assert w["cuda"].grad._nnz() == 5
    for d in DEVS:
        w[d].grad = None
        F.embedding(cgrad.tensor([0, 4], device=d), w[d]).sum().backward()  # dense first
        F.embedding(cgrad.tensor([4, 8], device=d), w[d], sparse=True).sum().backward()
    assert not w["cuda"].grad.is_sparse and on_cuda(w["cuda"].grad)
    np.testing.assert_allclose(host(w["cuda"].grad), host(w["cpu"].grad), rtol=1e-12)
    # a non-leaf weight: the sparse gradient is densified on its way back
    base = {d: cgrad.tensor(np.ones((6, 2)), device=d, requires_grad=True) for d in DEVS}
    for d in DEVS:
        F.embedding(cgrad.tensor([5, 0, 5], device=d), base[d] * 3.0, sparse=True).sum().backward()
    np.testing.assert_allclose(host(base["cuda"].grad), host(base["cpu"].grad), rtol=1e-12)


def test_sparse_embedding_errors_on_the_device():
    wd = cgrad.tensor(np.ones((5, 2)), device="cuda", requires_grad=True)
    with pytest.raises(ValueError, match="one device.*'cuda'.*'cpu'"):
        F.embedding(cgrad.tensor([1, 2]), wd, sparse=True)
    msgs = []
    for d in DEVS:
        w = cgrad.tensor(np.ones((5, 2)), device=d, requires_grad=True)
        with pytest.raises(IndexError) as e:
            F.embedding(cgrad.tensor([1, 5], device=d), w, sparse=True)
        msgs.append(str(e.value))
    assert msgs[0] == msgs[1] and "index 5 is out of range for 5 embeddings" in msgs[0]
    with pytest.raises(TypeError, match="float16"):  # on the host float16 is storage only
        F.embedding(cgrad.tensor([1]), cgrad.tensor(np.ones((5, 2)), dtype=cgrad.float16),
                    sparse=True)
    with pytest.raises(TypeError, match="float16.*float32 or float64"):
        F.embedding(cgrad.tensor([1], device="cuda"),
                    cgrad.tensor(np.ones((5, 2), dtype=np.int64), device="cuda"), sparse=True)


def test_float16_sparse_embedding_on_cuda_trains_as_float32_does():
    """A float16 weight on the device: the forward, the row-sparse float16
    gradient, clip_grad_norm_ over it and an SGD momentum step, against the
    same in float32 (float16 rounding apart)."""
    w0 = np.random.default_rng(7).standard_normal((10, 4)).astype(np.float16)
    idx = cgrad.tensor(np.array([[1, 2], [2, 9]]), device="cuda")
    scale = cgrad.tensor(np.linspace(-2, 2, 16).reshape(2, 2, 4).astype(np.float32), device="cuda")
    got = {}
    for dt in (cgrad.float16, F32):
        w = cgrad.tensor(w0.astype(np.float32), device="cuda").to(dt).detach().requires_grad_(True)
        out = F.embedding(idx, w, sparse=True)
        assert out.dtype == dt and out.device == w.device
        (out.float() * scale).sum().backward()
        g = w.grad
        assert g.is_sparse and g.dtype == dt and g.device == w.device
        dense_g = host(g.to_dense()).astype(np.float64)
        norm = float(nn.utils.clip_grad_norm_([w], 1.0))
        optim.SGD([w], lr=0.5, momentum=0.9).step()
        got[dt] = (host(out).astype(np.float64), dense_g, norm, host(w.detach()).astype(np.float64))
    (o16, g16, n16, w16), (o32, g32, n32, w32) = got[cgrad.float16], got[F32]
    np.testing.assert_array_equal(o16, o32)  # rows of float16 values
    np.testing.assert_allclose(g16, g32, rtol=1e-3, atol=1e-3)
    assert set(np.nonzero(g16.any(axis=1))[0]) == {1, 2, 9}
    np.testing.assert_allclose(n16, n32, rtol=1e-3)
    np.testing.assert_allclose(w16, w32, rtol=2e-3, atol=2e-3)
    assert not np.array_equal(w16, w0.astype(np.float64))


def test_gradcheck_through_the_sparse_embedding_on_cuda():
    idx = cgrad.tensor([[0, 3], [3, 3]], device="cuda")
    w = cgrad.tensor(np.random.default_rng(4).standard_normal((4, 3)), device="cuda", requires_grad=True)
    assert gradcheck(lambda w: F.embedding(idx, w, sparse=True).tanh(), (w,))
    wh = cgrad.tensor(host(w), requires_grad=True)  # and through a move to the device
    assert gradcheck(lambda w: F.embedding(idx, w.to("cuda"), sparse=True).tanh().cpu(), (wh,))


# ------------------------------------------------------------- optimizers
OPTIMS = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.1),
    "sgd_wd_maximize": lambda ps: optim.SGD(ps, lr=0.05, weight_decay=0.1, maximize=True),
    "sgd_momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01),
    "sgd_nesterov": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.8, nesterov=True),
    "sparse_adam": lambda ps: optim.SparseAdam(ps, lr=0.05),
    "sparse_adam_maximize": lambda ps: optim.SparseAdam(ps, lr=0.05, betas=(0.3, 0.7), maximize=True),
    "adagrad": lambda ps: optim.Adagrad(ps, lr=0.2),
    "adagrad_decay_wd": lambda ps: optim.Adagrad(ps, lr=0.2, lr_decay=0.1, weight_decay=0.05,
                                                 initial_accumulator_value=0.3),
}
BATCHES = [[[1, 4, 4], [0, 7, 1]], [[5, 5, 5], [2, 2, 3]], [[8, 1, 0], [6, 6, 4]], [[4, 4, 4], [4, 4, 4]],
           [[3, 9, 9], [9, 9, 0]]]


def train(dev, make, dtype, padding_idx=None):
    cgrad.manual_seed(7)
    emb = nn.Embedding(10, 3, sparse=True, padding_idx=padding_idx, dtype=dtype).to(dev)
    opt = make(list(emb.parameters()))
    target = cgrad.tensor(np.linspace(-1, 1, 3), dtype=dtype, device=dev)
    for b in BATCHES:
        opt.zero_grad()
        ((emb(cgrad.tensor(b, device=dev)) - target) ** 2).sum().backward()
        assert emb.weight.grad.is_sparse and emb.weight.grad.device == emb.weight.device
        opt.step()
    assert on_cuda(emb.weight) == (dev == "cuda")
    return emb, opt


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name", sorted(OPTIMS))
def test_sparse_training_steps_equal_on_both_devices(name, dtype):
    (ec, oc), (eg, og) = (train(d, OPTIMS[name], dtype, padding_idx=6) for d in DEVS)
    np.testing.assert_allclose(host(eg.weight), host(ec.weight), **tol(dtype))
    sc, sg = oc.state[ec.weight], og.state[eg.weight]
    checked = 0
    for key, v in sc.items():  # the state lives on the device too
        if isinstance(v, cgrad.Tensor) and v.ndim:
            w = sg[key]
            assert on_cuda(w), key
            if v.is_sparse:  # SGD's row-sparse momentum buffer
                assert_same_sparse(v, w, dtype)
            else:
                np.testing.assert_allclose(host(w), host(v), **tol(dtype))
            checked += 1
    assert checked == {"sgd": 0, "sgd_wd_maximize": 0, "sparse_adam": 2, "sparse_adam_maximize": 2}.get(name, 1)


def test_sparse_update_errors_name_both_devices():
    p = cgrad.tensor(np.ones((4, 3)), requires_grad=True, device="cuda")
    p.grad = sparse("cpu", [1], np.ones((1, 3)), (4, 3))
    for make in (OPTIMS["sgd"], OPTIMS["adagrad"], OPTIMS["sparse_adam"]):
        with pytest.raises(ValueError, match="'param' is on 'cuda' and 'grad' on 'cpu'"):
            make([p]).step()
    np.testing.assert_array_equal(host(p), 1.0)
    p.grad = sparse("cuda", [1], np.ones((1, 3)), (4, 3))
    buf = sparse("cpu", [2], np.ones((1, 3)), (4, 3)).coalesce()
    with pytest.raises(ValueError, match="'param' is on 'cuda' and 'momentum_in' on 'cpu'"):
        _core._sgd_sparse_update(p, p.grad, buf, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="'param' is on 'cuda' and 'state_sum' on 'cpu'"):
        _core._adagrad_sparse_update(p, p.grad, cgrad.zeros(4, 3, dtype=F64), 1, 0.1, 0, 0, 1e-10, 0, False)
    with pytest.raises(ValueError, match="'param' is on 'cuda' and 'exp_avg' on 'cpu'"):
        _core._sparse_adam_update(p, p.grad, cgrad.zeros(4, 3, dtype=F64),
                                  cgrad.zeros(4, 3, dtype=F64, device="cuda"), 1, 0.1, 0.9, 0.99, 1e-8, False)
    np.testing.assert_array_equal(host(p), 1.0)


# ------------------------------------------------------------- clipping
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.0])
def test_clipping_sparse_gradients_on_the_device(norm_type):
    res = {}
    for d in DEVS:
        cgrad.manual_seed(11)
        e = nn.Embedding(6, 2, sparse=True, dtype=F64).to(d)
        d1 = nn.Linear(2, 2, dtype=F64).to(d)
        (d1(e(cgrad.tensor([1, 1, 5, 0], device=d))) ** 2).sum().backward()
        params = list(e.parameters()) + list(d1.parameters())
        total = nn.utils.clip_grad_norm_(params, 0.7, norm_type=norm_type)
        nn.utils.clip_grad_value_(params, 0.05)
        res[d] = (float(total), e.weight.grad, [host(p.grad) for p in d1.parameters()])
    assert res["cuda"][0] == pytest.approx(res["cpu"][0], rel=1e-12)
    assert_same_sparse(res["cpu"][1], res["cuda"][1])  # coalesced in place, clipped rows
    assert res["cuda"][1].is_coalesced()
    for a, b in zip(res["cpu"][2], res["cuda"][2]):
        np.testing.assert_allclose(b, a, rtol=1e-12)


# ----------------------------------------------------------- SparseLinear
def csr(out_f=5, in_f=7, seed=4, density=0.45):
    m = np.random.default_rng(seed).random((out_f, in_f)) < density
    m[2] = False  # an output without connections
    rows, cols = np.nonzero(m)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=out_f))]).astype(np.int64)
    return indptr, cols.astype(np.int64)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sparse_linear_forward_backward_like_the_cpu(dtype, with_bias):
    indptr, cols = csr()
    rng = np.random.default_rng(5)
    x0, v0, b0 = rng.standard_normal((6, 7)), rng.standard_normal(cols.size), rng.standard_normal(5)
    g0 = rng.standard_normal((6, 5))
    res = {}
    for d in DEVS:
        x, v = (cgrad.tensor(a, dtype=dtype, device=d, requires_grad=True) for a in (x0, v0))
        b = cgrad.tensor(b0, dtype=dtype, device=d, requires_grad=True) if with_bias else None
        y = F.sparse_linear(x, cgrad.tensor(indptr, device=d), cgrad.tensor(cols, device=d), v, b, 5)
        (y * cgrad.tensor(g0, dtype=dtype, device=d)).sum().backward()
        res[d] = [y, x.grad, v.grad] + ([b.grad] if with_bias else [])
    for a, b in zip(res["cpu"], res["cuda"]):
        assert on_cuda(b) and a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(host(b), host(a), **tol(dtype))
    # and the dense masked linear it stands for
    w = np.zeros((5, 7))
    w[np.repeat(np.arange(5), np.diff(indptr)), cols] = v0
    expect = x0 @ w.T + (b0 if with_bias else 0)
    np.testing.assert_allclose(host(res["cuda"][0]), expect, **(tol(dtype) if dtype is F64 else
                                                                 dict(rtol=1e-5, atol=1e-5)))


def test_sparse_linear_float16_computes_on_the_device():
    """Host float16 is storage only (refused as by every host op); on the
    device it computes, close to the float32 result."""
    indptr, cols = csr()
    rng = np.random.default_rng(9)
    x0, v0 = rng.standard_normal((3, 7)), rng.standard_normal(cols.size)
    H = cgrad.float16
    with pytest.raises(TypeError, match="float16"):
        F.sparse_linear(cgrad.tensor(x0, dtype=H), cgrad.tensor(indptr), cgrad.tensor(cols),
                        cgrad.tensor(v0, dtype=H), None, 5)
    out = {}
    for dt in (H, F32):
        x, v = (cgrad.tensor(a, dtype=dt, device="cuda", requires_grad=True) for a in (x0, v0))
        y = F.sparse_linear(x, cgrad.tensor(indptr, device="cuda"), cgrad.tensor(cols, device="cuda"), v, None, 5)
        y.sum().backward()
        assert y.dtype is dt and x.grad.dtype is dt and v.grad.dtype is dt
        out[dt] = [host(t).astype(np.float32) for t in (y, x.grad, v.grad)]
    for a, b in zip(out[H], out[F32]):
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)


def test_sparse_linear_module_moved_to_the_device():
    cgrad.manual_seed(3)
    sl = nn.SparseLinear(7, 5, density=0.5, seed=2, dtype=F64)
    x = np.random.default_rng(6).standard_normal((4, 7))
    yc = sl(cgrad.tensor(x))
    yc.sum().backward()
    gc = host(sl.weight.grad)
    sl.zero_grad()
    sl.to("cuda")
    assert on_cuda(sl.indptr) and on_cuda(sl.weight)
    yg = sl(cgrad.tensor(x, device="cuda"))
    yg.sum().backward()
    np.testing.assert_allclose(host(yg), host(yc), rtol=1e-12)
    np.testing.assert_allclose(host(sl.weight.grad), gc, rtol=1e-12)


def test_sparse_linear_gradcheck_and_double_backward_on_cuda():
    indptr, cols = csr(4, 6, seed=3, density=0.5)
    ip, ci = cgrad.tensor(indptr, device="cuda"), cgrad.tensor(cols, device="cuda")
    rng = np.random.default_rng(8)
    x = cgrad.tensor(rng.standard_normal((3, 6)), device="cuda", requires_grad=True)
    v = cgrad.tensor(rng.standard_normal(cols.size), device="cuda", requires_grad=True)
    b = cgrad.tensor(rng.standard_normal(4), device="cuda", requires_grad=True)

    def fn(x, v, b):
        return F.sparse_linear(x, ip, ci, v, b, 4).tanh()

    assert gradcheck(fn, (x, v, b))
    assert gradgradcheck(fn, (x, v, b))
    xh, vh = (cgrad.tensor(host(t), requires_grad=True) for t in (x, v))
    assert gradcheck(lambda x, v: (F.sparse_linear(x.to("cuda"), ip, ci, v.to("cuda"), None, 4) ** 2).cpu(),
                     (xh, vh))


def test_sparse_linear_edge_sizes_on_the_device():
    for n, (indptr, cols) in ((0, csr()), (3, (np.zeros(6, np.int64), np.zeros(0, np.int64)))):
        res = {}
        for d in DEVS:
            x = cgrad.tensor(np.ones((n, 7)), device=d, requires_grad=True)
            v = cgrad.tensor(np.ones(cols.size), device=d, requires_grad=True)
            y = F.sparse_linear(x, cgrad.tensor(indptr, device=d), cgrad.tensor(cols, device=d), v, None, 5)
            y.sum().backward()
            res[d] = (y, x.grad, v.grad)
        for a, b in zip(res["cpu"], res["cuda"]):
            assert on_cuda(b) and a.shape == b.shape
            np.testing.assert_array_equal(host(b), host(a))


def test_sparse_linear_errors_on_the_device():
    indptr, cols = csr()
    x = cgrad.tensor(np.ones((2, 7)), device="cuda")
    v = cgrad.tensor(np.ones(cols.size), device="cuda")
    with pytest.raises(ValueError, match="one device.*'cuda'.*'cpu'"):
        F.sparse_linear(x, cgrad.tensor(indptr), cgrad.tensor(cols, device="cuda"), v, None, 5)
    with pytest.raises(ValueError, match="one device.*'cuda'.*'cpu'"):
        F.sparse_linear(x, cgrad.tensor(indptr, device="cuda"), cgrad.tensor(cols, device="cuda"), v,
                        cgrad.tensor(np.ones(5)), 5)
    bad_cols, bad_ptr = cols.copy(), indptr.copy()
    bad_cols[3] = 7
    bad_ptr[2], bad_ptr[3] = bad_ptr[3], bad_ptr[2] - 1
    for c, p, exc in ((bad_cols, indptr, IndexError), (cols, bad_ptr, ValueError)):
        msgs = []
        for d in DEVS:
            with pytest.raises(exc) as e:
                F.sparse_linear(cgrad.tensor(np.ones((2, 7)), device=d), cgrad.tensor(p, device=d),
                                cgrad.tensor(c, device=d), cgrad.tensor(np.ones(cols.size), device=d), None, 5)
            msgs.append(str(e.value))
        assert msgs[0] == msgs[1], msgs


# ------------------------------------------------------ gradient statistics


def test_statistics_of_a_sparse_device_gradient():
    vals = np.array([[1.0, np.inf], [np.nan, 2.0], [3.0, 4.0]])
    st = {d: _core._tensor_stats(sparse(d, [1, 1, 0], vals, (3, 2))) for d in DEVS}
    assert st["cuda"] == st["cpu"]
    many = {d: np.zeros((3, 4)) for d in DEVS}  # one call over a list mixing layouts
    for d in DEVS:
        _core._tensor_stats_many([sparse(d, [2, 0, 2], vals * 2, (3, 2)), cgrad.tensor(vals, device=d),
                                  sparse(d, np.zeros(0, np.int64), np.zeros((0, 2)), (3, 2))], many[d])
    np.testing.assert_array_equal(many["cuda"], many["cpu"])


def test_grad_scaler_with_sparse_device_gradients():
    res = {}
    for d in DEVS:
        cgrad.manual_seed(2)
        e = nn.Embedding(6, 2, sparse=True).to(d)
        opt = optim.SGD(e.parameters(), lr=0.1)
        scaler = cgrad.amp.GradScaler(init_scale=8.0)
        scaler.scale(e(cgrad.tensor([1, 1, 4], device=d)).sum()).backward()
        scaler.step(opt)  # finite: a step with the unscaled rows
        scaler.update()
        e.weight.grad = sparse(d, [3], np.array([[np.inf, 1.0]]), (6, 2), cgrad.float32)
        w0 = host(e.weight)
        scaler.step(opt)  # non-finite: skipped, the scale backs off
        scaler.update()
        np.testing.assert_array_equal(host(e.weight), w0)
        res[d] = (w0, scaler.get_scale())
    np.testing.assert_allclose(res["cuda"][0], res["cpu"][0], rtol=1e-6)
    assert res["cuda"][1] == res["cpu"][1] == 4.0
