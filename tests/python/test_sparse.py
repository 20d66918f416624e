"""Row-sparse gradients (Embedding(sparse=True)), their path through clipping
and the sparse-aware optimizers, and the CSR SparseLinear layer."""
import copy
import time

import numpy as np
import pytest

import cgrad
from cgrad import _core, nn
from cgrad.autograd import gradcheck, gradgradcheck
from cgrad.nn import functional as F

f64 = cgrad.float64


def _emb_pair(num=12, dim=3, padding_idx=None, seed=0):
    """A cgrad Embedding(sparse=True) and a dense one with the same weights."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((num, dim))
    sp = nn.Embedding(num, dim, padding_idx=padding_idx, sparse=True,
                      _weight=cgrad.tensor(w.copy(), dtype=f64))
    de = nn.Embedding(num, dim, padding_idx=padding_idx, sparse=False,
                      _weight=cgrad.tensor(w.copy(), dtype=f64))
    return sp, de, w


def _loss(emb, idx, coef):
    out = emb(cgrad.tensor(idx, dtype=cgrad.int64))
    return (out * cgrad.tensor(coef, dtype=f64)).sum() + (out * out).sum()


IDX = np.array([[1, 4, 1], [7, 4, 1]])
COEF = np.arange(18.0).reshape(2, 3, 3) / 7.0


# ------------------------------------------------------------ representation
def test_sparse_embedding_grad_equals_dense_grad_bitwise():
    sp, de, _ = _emb_pair()
    _loss(sp, IDX, COEF).backward()
    _loss(de, IDX, COEF).backward()
    g = sp.weight.grad
    assert g.is_sparse and not de.weight.grad.is_sparse
    assert g.shape == (12, 3) and g.dtype is f64 and g.layout == "sparse_coo"
    assert g.indices().shape == (1, 6) and g.values().shape == (6, 3)
    assert g.indices().numpy().tolist() == [IDX.reshape(-1).tolist()]
    assert not g.is_coalesced()
    # to_dense sums rows in index order, as index_add: the same bits.
    np.testing.assert_array_equal(g.to_dense().numpy(), de.weight.grad.numpy())
    c = g.coalesce()
    assert c.is_coalesced() and c.indices().numpy().tolist() == [[1, 4, 7]]
    np.testing.assert_allclose(c.to_dense().numpy(), de.weight.grad.numpy(), rtol=0, atol=1e-15)
    assert c.coalesce() is not None and c._nnz() == 3


def test_sparse_embedding_grad_matches_torch():
    torch = pytest.importorskip("torch")
    for pad in (None, 4):
        sp, _, w = _emb_pair(padding_idx=pad)
        te = torch.nn.Embedding(12, 3, padding_idx=pad, sparse=True, dtype=torch.float64)
        with torch.no_grad():
            te.weight.copy_(torch.tensor(w))
        _loss(sp, IDX, COEF).backward()
        out = te(torch.tensor(IDX))
        ((out * torch.tensor(COEF)).sum() + (out * out).sum()).backward()
        tg, g = te.weight.grad, sp.weight.grad
        assert tg.is_sparse and g.is_sparse
        np.testing.assert_array_equal(g.indices().numpy(), tg._indices().numpy())
        np.testing.assert_allclose(g.values().numpy(), tg._values().numpy(), rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(g.coalesce().values().numpy(), tg.coalesce()._values().numpy(),
                                   rtol=1e-14, atol=1e-14)


def test_functional_embedding_sparse_and_padding_idx():
    w = cgrad.tensor(np.ones((5, 2)), dtype=f64, requires_grad=True)
    F.embedding(cgrad.tensor([0, 2, 2, 4], dtype=cgrad.int64), w, padding_idx=2,
                sparse=True).sum().backward()
    g = w.grad
    assert g.is_sparse and g.indices().numpy().tolist() == [[0, 4]]
    np.testing.assert_array_equal(g.to_dense().numpy(),
                                  [[1, 1], [0, 0], [0, 0], [0, 0], [1, 1]])
    assert "sparse=True" in repr(nn.Embedding(3, 2, sparse=True))


def test_accumulation_over_several_backward_calls():
    sp, de, _ = _emb_pair()
    batches = [np.array([[1, 2]]), np.array([[2, 9, 9]]), np.array([[0]])]
    for b in batches:
        c = np.ones(b.shape + (3,))
        _loss(sp, b, c).backward()
        _loss(de, b, c).backward()
        assert sp.weight.grad.is_sparse  # sparse + sparse never densifies
    assert sp.weight.grad._nnz() == sum(b.size for b in batches)
    np.testing.assert_allclose(sp.weight.grad.to_dense().numpy(), de.weight.grad.numpy(),
                               rtol=0, atol=1e-14)
    # sparse into an existing dense .grad densifies (in place), as PyTorch.
    sp.weight.grad = de.weight.grad.clone()
    _loss(sp, IDX, COEF).backward()
    _loss(de, IDX, COEF).backward()
    assert not sp.weight.grad.is_sparse
    np.testing.assert_allclose(sp.weight.grad.numpy(), de.weight.grad.numpy(), rtol=0, atol=1e-13)
    # and a dense gradient into a sparse .grad gives a dense sum.
    sp.weight.grad = None
    _loss(sp, IDX, COEF).backward()
    (sp.weight * 2.0).sum().backward()
    assert not sp.weight.grad.is_sparse
    ref = nn.Embedding(12, 3, _weight=cgrad.tensor(sp.weight.detach().numpy(), dtype=f64))
    _loss(ref, IDX, COEF).backward()
    np.testing.assert_allclose(sp.weight.grad.numpy(), ref.weight.grad.numpy() + 2.0, atol=1e-13)


def test_two_lookups_in_one_backward_and_non_leaf_weight():
    w = cgrad.tensor(np.arange(8.0).reshape(4, 2), dtype=f64, requires_grad=True)
    a = F.embedding(cgrad.tensor([0, 1]), w, sparse=True)
    b = F.embedding(cgrad.tensor([1, 3]), w, sparse=True)
    (a.sum() + 3 * b.sum()).backward()
    assert w.grad.is_sparse and w.grad._nnz() == 4
    np.testing.assert_array_equal(w.grad.to_dense().numpy(), [[1, 1], [4, 4], [0, 0], [3, 3]])
    # Through a non-leaf weight the engine densifies for the producing op.
    w.grad = None
    F.embedding(cgrad.tensor([2, 2]), w * 5.0, sparse=True).sum().backward()
    assert not w.grad.is_sparse
    np.testing.assert_array_equal(w.grad.numpy(), [[0, 0], [0, 0], [10, 10], [0, 0]])


def test_gradcheck_through_the_sparse_embedding():
    w = cgrad.tensor(np.random.default_rng(8).standard_normal((5, 3)), dtype=f64,
                     requires_grad=True)
    idx = cgrad.tensor([[4, 1, 4], [0, 4, 2]])
    assert gradcheck(lambda w: F.embedding(idx, w, sparse=True).tanh(), (w,))
    with pytest.raises(NotImplementedError, match="create_graph"):
        gradgradcheck(lambda w: F.embedding(idx, w, sparse=True) ** 2, (w,))


def test_hooks_see_the_sparse_gradient_and_may_replace_it():
    w = cgrad.tensor(np.zeros((6, 2)), dtype=f64, requires_grad=True)
    seen = []

    def hook(g):
        seen.append((g.is_sparse, g.indices().numpy().tolist()))
        return cgrad.sparse_coo_tensor(g.indices(), g.values() * 10.0, g.shape)

    w.register_hook(hook)
    F.embedding(cgrad.tensor([5, 0]), w, sparse=True).sum().backward()
    assert seen == [(True, [[5, 0]])]
    np.testing.assert_array_equal(w.grad.to_dense().numpy()[[0, 5]], [[10, 10], [10, 10]])
    post = []
    w.register_post_accumulate_grad_hook(lambda p: post.append(p.grad.is_sparse))
    F.embedding(cgrad.tensor([1]), w, sparse=True).sum().backward()
    assert post == [True] and w.grad._nnz() == 3


def test_create_graph_and_grad_of_sparse():
    w = cgrad.tensor(np.ones((3, 2)), dtype=f64, requires_grad=True)
    out = F.embedding(cgrad.tensor([0, 2]), w, sparse=True)
    with pytest.raises(NotImplementedError, match="create_graph"):
        (out * out).sum().backward(create_graph=True)
    out = F.embedding(cgrad.tensor([0, 2, 2]), w, sparse=True)
    (g,) = cgrad.autograd.grad((out * 3.0).sum(), [w])
    assert g.is_sparse
    np.testing.assert_array_equal(g.to_dense().numpy(), [[3, 3], [0, 0], [6, 6]])
    # retain_graph: a second sparse backward through the same entry
    out = F.embedding(cgrad.tensor([1]), w, sparse=True)
    s = out.sum()
    s.backward(retain_graph=True)
    s.backward()
    np.testing.assert_array_equal(w.grad.to_dense().numpy()[1], [2, 2])


def test_sparse_coo_tensor_copy_and_zero():
    t = cgrad.sparse_coo_tensor([[3, 0, 3]], np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), (4, 2))
    assert t.is_sparse and not t.is_coalesced() and t._nnz() == 3
    np.testing.assert_array_equal(t.to_dense().numpy(), [[3, 4], [0, 0], [0, 0], [6, 8]])
    c = copy.deepcopy(t)
    assert c.is_sparse and c is not t
    np.testing.assert_array_equal(c.to_dense().numpy(), t.to_dense().numpy())
    d = t.clone()
    d.values().mul_(0.0)
    assert t.values().numpy()[0, 0] == 1.0
    s = t + t
    assert s.is_sparse and s._nnz() == 6
    np.testing.assert_array_equal((t + cgrad.ones(4, 2, dtype=f64)).numpy(),
                                  [[4, 5], [1, 1], [1, 1], [7, 9]])
    t.zero_()
    assert t._nnz() == 0 and float(t.to_dense().sum()) == 0.0
    assert "nnz=0" in repr(t) and "sparse_coo" in repr(t)
    assert not cgrad.zeros(2).is_sparse


def test_ops_refuse_sparse_tensors_clearly():
    t = cgrad.sparse_coo_tensor([[1]], np.ones((1, 3)), (2, 3))
    for fn in (lambda: t.exp(), lambda: t * 2.0, lambda: t.sum(), lambda: t.reshape(6),
               lambda: t.contiguous(), lambda: t @ cgrad.ones(3, 1, dtype=f64),
               lambda: t[0], lambda: t.item(),
               lambda: t.add_(t), lambda: cgrad.cat([t, t])):
        with pytest.raises(NotImplementedError, match="row-sparse"):
            fn()
    with pytest.raises(TypeError, match="to_dense"):
        t.numpy()
    with pytest.raises(TypeError, match="to_dense"):
        np.asarray(t)
    assert not t.is_contiguous() and t.data_ptr() == 0
    t32 = t.to(cgrad.float32)
    assert t32.is_sparse and t32.dtype is cgrad.float32 and t.to(f64) is t
    with pytest.raises(ValueError, match="expected a row-sparse"):
        cgrad.ones(2).values()
    with pytest.raises(RuntimeError, match="sparse"):
        cgrad.ones(2)._nnz()
    with pytest.raises(ValueError, match="expected a row-sparse"):
        cgrad.ones(2).coalesce()


def test_sparse_constructor_and_embedding_bad_input():
    with pytest.raises(IndexError, match="out of range for 2 rows"):
        cgrad.sparse_coo_tensor([[0, 2]], np.ones((2, 3)), (2, 3))
    with pytest.raises(IndexError, match="out of range"):
        cgrad.sparse_coo_tensor([[-1]], np.ones((1, 3)), (2, 3))
    with pytest.raises(ValueError, match="do not match|does not match"):
        cgrad.sparse_coo_tensor([[0]], np.ones((2, 3)), (2, 3))
    with pytest.raises(ValueError, match="size"):
        cgrad.sparse_coo_tensor([[0]], np.ones((1, 3)), (2, 4))
    with pytest.raises(ValueError, match="one sparse dim"):
        cgrad.sparse_coo_tensor([[0], [1]], np.ones((1, 3)), (2, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        cgrad.sparse_coo_tensor([[0]], np.ones((1, 3), dtype=np.int64), (2, 3))
    with pytest.raises(NotImplementedError, match="autograd"):
        cgrad.sparse_coo_tensor([[0]], np.ones((1, 3)), (2, 3), requires_grad=True)
    w = cgrad.tensor(np.ones((3, 2)), dtype=f64, requires_grad=True)
    with pytest.raises(IndexError, match="index 3 is out of range for 3"):
        F.embedding(cgrad.tensor([3]), w, sparse=True)
    with pytest.raises(IndexError, match="padding_idx 7"):
        _core.embedding_sparse(cgrad.tensor([0]), w, 7)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.embedding_sparse(cgrad.tensor([0]), cgrad.ones(3, 2, dtype=cgrad.int64), None)
    out = F.embedding(cgrad.tensor([0]), w, sparse=True)
    g = cgrad.sparse_coo_tensor([[0]], np.ones((1, 2)), (1, 2))
    with pytest.raises(NotImplementedError, match="row-sparse"):
        out.backward(g)


# ---------------------------------------------------------------- optimizers
def _torch_pair(torch, num=10, dim=3, seed=1, dtype=None):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((num, dim))
    dt = dtype or f64
    ce = nn.Embedding(num, dim, sparse=True, _weight=cgrad.tensor(w.copy(), dtype=dt))
    tt = torch.float64 if dt is f64 else torch.float32
    te = torch.nn.Embedding(num, dim, sparse=True, dtype=tt)
    with torch.no_grad():
        te.weight.copy_(torch.tensor(w, dtype=tt))
    return ce, te


BATCHES = [[1, 2, 2], [3, 1], [5, 8, 8, 8], [2], [0, 9]]


def _run(emb, opt, lib, steps=BATCHES):
    for idx in steps:
        opt.zero_grad()
        x = emb(lib.tensor(idx))
        ((x * x).sum() + x.sum()).backward()
        opt.step()


@pytest.mark.parametrize("kw", [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.8, dampening=0.3), dict(maximize=True),
                                dict(momentum=0.5, maximize=True)])
def test_sgd_sparse_trajectory_matches_torch(kw):
    torch = pytest.importorskip("torch")
    ce, te = _torch_pair(torch)
    co = cgrad.optim.SGD(ce.parameters(), lr=0.05, **kw)
    to = torch.optim.SGD(te.parameters(), lr=0.05, **kw)
    _run(ce, co, cgrad)
    _run(te, to, torch)
    np.testing.assert_allclose(ce.weight.detach().numpy(), te.weight.detach().numpy(),
                               rtol=1e-13, atol=1e-13)
    if kw.get("momentum"):
        cb, tb = co.state[ce.weight]["momentum_buffer"], to.state[te.weight]["momentum_buffer"]
        assert cb.is_sparse and tb.is_sparse and cb.is_coalesced()
        np.testing.assert_allclose(cb.to_dense().numpy(), tb.to_dense().numpy(), rtol=1e-13,
                                   atol=1e-13)
        # state only for the rows seen so far
        assert sorted(cb.indices().numpy()[0]) == sorted({i for b in BATCHES for i in b})


def test_sgd_sparse_float32_matches_torch():
    torch = pytest.importorskip("torch")
    ce, te = _torch_pair(torch, dtype=cgrad.float32)
    co = cgrad.optim.SGD(ce.parameters(), lr=0.05, momentum=0.9)
    to = torch.optim.SGD(te.parameters(), lr=0.05, momentum=0.9)
    _run(ce, co, cgrad)
    _run(te, to, torch)
    np.testing.assert_allclose(ce.weight.detach().numpy(), te.weight.detach().numpy(),
                               rtol=1e-6, atol=1e-6)


def test_sgd_sparse_lazy_weight_decay():
    # PyTorch refuses weight_decay with sparse gradients; cgrad decays the
    # gradient's rows only: g + wd * w on those rows, others untouched.
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((6, 2))
    e = nn.Embedding(6, 2, sparse=True, _weight=cgrad.tensor(w0.copy(), dtype=f64))
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1, weight_decay=0.5)
    e(cgrad.tensor([1, 4, 4])).sum().backward()
    opt.step()
    ref = w0.copy()
    counts = np.array([0, 1, 0, 0, 2, 0])[:, None]
    touched = [1, 4]
    ref[touched] = w0[touched] - 0.1 * (counts[touched] + 0.5 * w0[touched])
    np.testing.assert_allclose(e.weight.detach().numpy(), ref, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(e.weight.detach().numpy()[[0, 2, 3, 5]], w0[[0, 2, 3, 5]])


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sparse_adam_trajectory_matches_torch(maximize, dtype):
    torch = pytest.importorskip("torch")
    ce, te = _torch_pair(torch, dtype=getattr(cgrad, dtype))
    co = cgrad.optim.SparseAdam(ce.parameters(), lr=0.01, betas=(0.8, 0.95), maximize=maximize)
    to = torch.optim.SparseAdam(te.parameters(), lr=0.01, betas=(0.8, 0.95), maximize=maximize)
    _run(ce, co, cgrad)
    _run(te, to, torch)
    tol = 1e-13 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(ce.weight.detach().numpy(), te.weight.detach().numpy(),
                               rtol=tol, atol=tol)
    cs, ts = co.state[ce.weight], to.state[te.weight]
    assert cs["step"] == ts["step"] == len(BATCHES)
    for k in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_allclose(cs[k].numpy(), ts[k].numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kw", [dict(), dict(lr_decay=0.1, initial_accumulator_value=0.2),
                                dict(maximize=True, eps=1e-3)])
def test_adagrad_sparse_trajectory_matches_torch(kw):
    torch = pytest.importorskip("torch")
    ce, te = _torch_pair(torch)
    co = cgrad.optim.Adagrad(ce.parameters(), lr=0.1, **kw)
    to = torch.optim.Adagrad(te.parameters(), lr=0.1, **kw)
    _run(ce, co, cgrad)
    _run(te, to, torch)
    np.testing.assert_allclose(ce.weight.detach().numpy(), te.weight.detach().numpy(),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(co.state[ce.weight]["sum"].numpy(),
                               to.state[te.weight]["sum"].numpy(), rtol=1e-13)


def test_adagrad_sparse_lazy_weight_decay():
    w0 = np.random.default_rng(4).standard_normal((5, 2))
    e = nn.Embedding(5, 2, sparse=True, _weight=cgrad.tensor(w0.copy(), dtype=f64))
    opt = cgrad.optim.Adagrad(e.parameters(), lr=0.1, weight_decay=0.3)
    e(cgrad.tensor([2, 2])).sum().backward()
    opt.step()
    g = 2.0 + 0.3 * w0[2]
    np.testing.assert_allclose(e.weight.detach().numpy()[2], w0[2] - 0.1 * g / (np.abs(g) + 1e-10),
                               rtol=1e-14)
    np.testing.assert_array_equal(e.weight.detach().numpy()[[0, 1, 3, 4]], w0[[0, 1, 3, 4]])


def test_sparse_adam_and_dense_optimizers_refuse_the_wrong_layout():
    e = nn.Embedding(5, 2, sparse=True)
    d = nn.Embedding(5, 2, sparse=False)
    e(cgrad.tensor([1])).sum().backward()
    d(cgrad.tensor([1])).sum().backward()
    for cls, msg in ((cgrad.optim.Adam, "Adam does not support sparse gradients, please "
                                        "consider SparseAdam instead"),
                     (cgrad.optim.AdamW, "Adam does not support sparse gradients"),
                     (cgrad.optim.RMSprop, "RMSprop does not support sparse gradients")):
        with pytest.raises(RuntimeError, match=msg):
            cls(e.parameters()).step()
    with pytest.raises(RuntimeError, match="SparseAdam does not support dense gradients"):
        cgrad.optim.SparseAdam(d.parameters()).step()
    with pytest.raises(ValueError, match="Invalid learning rate"):
        cgrad.optim.SparseAdam(e.parameters(), lr=0.0)
    with pytest.raises(ValueError, match="Invalid epsilon"):
        cgrad.optim.SparseAdam(e.parameters(), eps=-1.0)
    with pytest.raises(ValueError, match="beta parameter at index 1"):
        cgrad.optim.SparseAdam(e.parameters(), betas=(0.9, 1.0))
    # a dense gradient after a sparse momentum buffer: refused, not mixed
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    e.weight.grad = cgrad.ones(5, 2)
    with pytest.raises(RuntimeError, match="momentum buffer is row-sparse but its gradient is "
                                           "dense; keep one gradient layout per parameter"):
        opt.step()


def test_zero_grad_keeps_sparse_layout_or_drops_it():
    e = nn.Embedding(5, 2, sparse=True)
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1)
    e(cgrad.tensor([1, 3])).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert e.weight.grad.is_sparse and e.weight.grad._nnz() == 0
    e(cgrad.tensor([2])).sum().backward()
    assert e.weight.grad.indices().numpy().tolist() == [[2]]
    e.zero_grad()
    assert e.weight.grad is None


def test_big_table_step_touches_only_the_batch_rows(capsys):
    num, dim = 1_000_000, 64
    cgrad.manual_seed(0)
    e = nn.Embedding(num, dim, sparse=True)
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(num, 100, replace=False))
    idx = cgrad.tensor(rows, dtype=cgrad.int64)
    probe = np.unique(np.concatenate([rng.choice(num, 5000), np.clip(rows + 1, 0, num - 1),
                                      np.clip(rows - 1, 0, num - 1)]))
    probe = np.setdiff1d(probe, rows)
    w = e.weight.detach().numpy()
    before_probe, before_rows = w[probe].copy(), w[rows].copy()

    opt = cgrad.optim.SparseAdam(e.parameters(), lr=0.01)
    e(idx).sum().backward()
    assert e.weight.grad._nnz() == 100
    opt.step()  # the first step allocates the dense moments (as PyTorch)
    t0 = time.perf_counter()
    opt.step()  # the same gradient again: only its rows are read and written
    t_sparse = time.perf_counter() - t0
    np.testing.assert_array_equal(w[probe], before_probe)  # bitwise unchanged
    assert not np.any(w[rows] == before_rows)
    st = opt.state[e.weight]
    assert not np.any(st["exp_avg"].numpy()[probe]) and not np.any(st["exp_avg_sq"].numpy()[probe])
    assert np.all(st["exp_avg"].numpy()[rows] != 0)

    sgd = cgrad.optim.SGD(e.parameters(), lr=0.1, momentum=0.9)
    sgd.step()  # the same sparse grad
    buf = sgd.state[e.weight]["momentum_buffer"]
    assert buf.is_sparse and buf._nnz() == 100  # no state for untouched rows
    np.testing.assert_array_equal(w[probe], before_probe)

    # A dense Adam step over the same table, for scale (printed, not asserted).
    dense_grad = e.weight.grad.to_dense()
    e.weight.grad = dense_grad
    adam = cgrad.optim.Adam(e.parameters(), lr=0.01)
    adam.step()
    t0 = time.perf_counter()
    adam.step()
    t_dense = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[sparse] 1e6 x 64 table, 100 rows: SparseAdam step {t_sparse * 1e3:.3f} ms, "
              f"dense Adam step {t_dense * 1e3:.1f} ms ({t_dense / max(t_sparse, 1e-9):.0f}x)")


# ------------------------------------------------------------------ clipping
def test_clip_grad_norm_sparse_matches_torch_on_the_dense_gradient():
    torch = pytest.importorskip("torch")
    # torch 2.13's clip_grad_norm_ cannot take sparse gradients (no sparse
    # vector_norm): the reference is torch on the same gradient made dense.
    for norm_type in (2.0, 1.0, 3.0, float("inf")):
        sp, de, w = _emb_pair(seed=2)
        lin = nn.Linear(3, 2, dtype=f64)
        _loss(sp, IDX, COEF).backward()
        _loss(sp, IDX[:1], COEF[:1]).backward()  # duplicate rows across calls
        lin(cgrad.ones(1, 3, dtype=f64)).sum().backward()
        tw = torch.tensor(sp.weight.grad.to_dense().numpy(), requires_grad=True)
        tl = [torch.tensor(p.grad.numpy()) for p in lin.parameters()]
        tps = [torch.nn.Parameter(torch.zeros_like(tw))] + [torch.nn.Parameter(torch.zeros_like(t))
                                                             for t in tl]
        for p, g in zip(tps, [tw.detach().clone()] + tl):
            p.grad = g
        params = [sp.weight] + list(lin.parameters())
        total = nn.utils.clip_grad_norm_(params, 0.7, norm_type=norm_type)
        ttotal = torch.nn.utils.clip_grad_norm_(tps, 0.7, norm_type=norm_type)
        assert sp.weight.grad.is_sparse
        np.testing.assert_allclose(float(total), float(ttotal), rtol=1e-12)
        np.testing.assert_allclose(sp.weight.grad.to_dense().numpy(), tps[0].grad.numpy(),
                                   rtol=1e-12, atol=1e-15)
        for p, tp in zip(lin.parameters(), tps[1:]):
            np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(float(nn.utils.get_total_norm([sp.weight.grad], norm_type)),
                                   float(torch.linalg.vector_norm(tps[0].grad, norm_type)),
                                   rtol=1e-12)


def test_clip_grad_value_sparse_coalesces_before_clamping():
    torch = pytest.importorskip("torch")
    w = cgrad.tensor(np.zeros((4, 2)), dtype=f64, requires_grad=True)
    F.embedding(cgrad.tensor([1, 1, 1, 3]), w, sparse=True).sum().backward()
    dense = torch.tensor(w.grad.to_dense().numpy())
    p = torch.nn.Parameter(torch.zeros(4, 2, dtype=torch.float64))
    p.grad = dense
    nn.utils.clip_grad_value_([w], 2.0)
    torch.nn.utils.clip_grad_value_([p], 2.0)
    assert w.grad.is_sparse and w.grad.is_coalesced()
    np.testing.assert_array_equal(w.grad.to_dense().numpy(), p.grad.numpy())
    res = nn.utils.last_clip_result()
    assert res.clipped and res.n_clipped == 2
    nn.utils.clip_grads_with_norm_([w], 1.0, 4.0)
    np.testing.assert_allclose(w.grad.to_dense().numpy(), p.grad.numpy() / (4.0 + 1e-6))
    with pytest.raises(NotImplementedError, match="row-sparse"):
        nn.utils.clip_grad_agc_([w])


def test_step_report_grad_norm_with_sparse_grads():
    e = nn.Embedding(6, 2, sparse=True, dtype=f64)
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1, report_grad_norm=True)
    e(cgrad.tensor([1, 1, 5])).sum().backward()
    nn.utils.clip_grad_norm_(e.parameters(), 100.0)
    opt.step()
    rep = opt.last_report if hasattr(opt, "last_report") else None
    expected = np.sqrt(2 * 2 ** 2 + 2 * 1.0)
    res = nn.utils.last_clip_result()
    np.testing.assert_allclose(res.total_norm, expected, rtol=1e-14)
    del rep


# --------------------------------------------------------------- SparseLinear
def _mask(out_f=5, in_f=7, seed=4, density=0.4):
    m = np.random.default_rng(seed).random((out_f, in_f)) < density
    m[2] = False  # an output with no connection
    return m


def test_sparse_linear_matches_dense_masked_linear():
    m = _mask()
    sl = nn.SparseLinear(7, 5, mask=m, dtype=f64)
    assert sl.nnz == int(m.sum()) and tuple(sl.weight.shape) == (sl.nnz,)
    W = sl.dense_weight().numpy()
    assert np.all(W[~m] == 0)
    x = np.random.default_rng(5).standard_normal((4, 7))
    xs = cgrad.tensor(x, dtype=f64, requires_grad=True)
    y = sl(xs)
    gy = np.random.default_rng(6).standard_normal((4, 5))
    (y * cgrad.tensor(gy, dtype=f64)).sum().backward()
    # Dense masked Linear with the same values, in cgrad.
    Wd = cgrad.tensor(W, dtype=f64, requires_grad=True)
    b = cgrad.tensor(sl.bias.detach().numpy(), dtype=f64, requires_grad=True)
    xd = cgrad.tensor(x, dtype=f64, requires_grad=True)
    yd = F.linear(xd, Wd, b)
    (yd * cgrad.tensor(gy, dtype=f64)).sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), yd.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(xs.grad.numpy(), xd.grad.numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(sl.bias.grad.numpy(), b.grad.numpy(), rtol=1e-13)
    rows, cols = np.nonzero(m)
    np.testing.assert_allclose(sl.weight.grad.numpy(), Wd.grad.numpy()[rows, cols], rtol=1e-13,
                               atol=1e-13)
    # 3-D input and float32
    sl32 = nn.SparseLinear(7, 5, mask=m)
    out = sl32(cgrad.ones(2, 3, 7))
    assert out.shape == (2, 3, 5) and out.dtype is cgrad.float32


def test_sparse_linear_matches_torch_masked_linear():
    torch = pytest.importorskip("torch")
    m = _mask(seed=9)
    sl = nn.SparseLinear(7, 5, mask=m, dtype=f64)
    tw = torch.tensor(sl.dense_weight().numpy(), requires_grad=True)
    tb = torch.tensor(sl.bias.detach().numpy(), requires_grad=True)
    x = np.random.default_rng(1).standard_normal((3, 7))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.linear(tx, tw * torch.tensor(m), tb)
    (ty ** 2).sum().backward()
    xs = cgrad.tensor(x, dtype=f64, requires_grad=True)
    (sl(xs) ** 2).sum().backward()
    np.testing.assert_allclose(xs.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
    rows, cols = np.nonzero(m)
    np.testing.assert_allclose(sl.weight.grad.numpy(), tw.grad.numpy()[rows, cols], rtol=1e-12)
    np.testing.assert_allclose(sl.bias.grad.numpy(), tb.grad.numpy(), rtol=1e-12)


def test_sparse_linear_gradcheck_and_double_backward():
    sl = nn.SparseLinear(6, 4, density=0.5, seed=3, dtype=f64)
    x = cgrad.randn(3, 6, dtype=f64, requires_grad=True)

    def fn(x, w, b):
        return F.sparse_linear(x, sl.indptr, sl.indices, w, b, 4).tanh()

    assert gradcheck(fn, (x, sl.weight, sl.bias))
    assert gradgradcheck(fn, (x, sl.weight, sl.bias))
    assert gradcheck(lambda x, w: F.sparse_linear(x, sl.indptr, sl.indices, w, None, 4) ** 2,
                     (x, sl.weight))


def test_sparse_linear_init_follows_linear_per_connection_fan_in():
    cgrad.manual_seed(0)
    m = np.zeros((300, 400), dtype=bool)
    m[:, :100] = True   # fan_in 100 for every output
    sl = nn.SparseLinear(400, 300, mask=m, dtype=f64)
    w = sl.weight.detach().numpy()
    bound = 1 / np.sqrt(100)
    assert np.all(np.abs(w) <= bound) and w.max() > 0.95 * bound and w.min() < -0.95 * bound
    np.testing.assert_allclose(w.var(), bound ** 2 / 3, rtol=0.05)
    assert np.all(np.abs(sl.bias.detach().numpy()) <= bound)
    a = nn.SparseLinear(20, 10, density=0.3, seed=7)
    b = nn.SparseLinear(20, 10, density=0.3, seed=7)
    np.testing.assert_array_equal(a.indices.numpy(), b.indices.numpy())
    assert "nnz=" in repr(a)
    assert nn.SparseLinear(3, 2, mask=np.ones((2, 3), bool), bias=False).bias is None
    names = dict(a.named_parameters())
    assert set(names) == {"weight", "bias"} and "indptr" in dict(a.named_buffers())


def test_sparse_linear_bad_input():
    with pytest.raises(ValueError, match="exactly one of mask"):
        nn.SparseLinear(3, 2)
    with pytest.raises(ValueError, match="exactly one of mask"):
        nn.SparseLinear(3, 2, mask=np.ones((2, 3), bool), density=0.5)
    with pytest.raises(ValueError, match=r"shape \(out_features, in_features\) = \(2, 3\)"):
        nn.SparseLinear(3, 2, mask=np.ones((3, 2), bool))
    with pytest.raises(TypeError, match="bool array"):
        nn.SparseLinear(3, 2, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="density must be"):
        nn.SparseLinear(3, 2, density=1.5)
    sl = nn.SparseLinear(3, 2, density=1.0, seed=0)
    with pytest.raises(ValueError, match="in_features=3"):
        sl(cgrad.ones(4, 5))
    with pytest.raises(TypeError, match="cgrad.Tensor"):
        sl(np.ones((4, 3)))
    x = cgrad.ones(2, 3, dtype=f64)
    ip = cgrad.tensor([0, 1, 2], dtype=cgrad.int64)
    ind = cgrad.tensor([0, 2], dtype=cgrad.int64)
    v = cgrad.ones(2, dtype=f64)
    assert _core.sparse_linear(x, ip, ind, v, None, 2).shape == (2, 2)
    with pytest.raises(IndexError, match="column index 5"):
        _core.sparse_linear(x, ip, cgrad.tensor([0, 5], dtype=cgrad.int64), v, None, 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        _core.sparse_linear(x, cgrad.tensor([0, 2, 1, 2], dtype=cgrad.int64),
                            cgrad.tensor([0, 1], dtype=cgrad.int64), v, None, 3)
    with pytest.raises(ValueError, match="end at nnz"):
        _core.sparse_linear(x, cgrad.tensor([0, 1, 1], dtype=cgrad.int64), ind, v, None, 2)
    with pytest.raises(ValueError, match="indptr must be int64 of shape \\(3,\\)"):
        _core.sparse_linear(x, ind, ind, v, None, 2)
    with pytest.raises(ValueError, match="values must be float64"):
        _core.sparse_linear(x, ip, ind, cgrad.ones(2), None, 2)
    with pytest.raises(ValueError, match="bias must be"):
        _core.sparse_linear(x, ip, ind, v, cgrad.ones(3, dtype=f64), 2)
    with pytest.raises(ValueError, match="2-D float"):
        _core.sparse_linear(cgrad.ones(3, dtype=f64), ip, ind, v, None, 2)


# ------------------------------------------------- the rest of the pipeline
def test_sgd_state_with_sparse_momentum_saves_and_resumes(tmp_path):
    def make():
        e = nn.Embedding(8, 2, sparse=True, _weight=cgrad.tensor(np.arange(16.0).reshape(8, 2),
                                                                 dtype=f64))
        return e, cgrad.optim.SGD(e.parameters(), lr=0.1, momentum=0.9)

    e, opt = make()
    _run(e, opt, cgrad, BATCHES[:2])
    cgrad.save({"model": e.state_dict(), "opt": opt.state_dict()}, tmp_path / "ck.safetensors")
    e2, opt2 = make()
    ck = cgrad.load(tmp_path / "ck.safetensors")
    e2.load_state_dict(ck["model"])
    opt2.load_state_dict(ck["opt"])
    buf = opt2.state[e2.weight]["momentum_buffer"]
    assert buf.is_sparse and buf.is_coalesced()
    _run(e, opt, cgrad, [[6, 1]])
    _run(e2, opt2, cgrad, [[6, 1]])
    np.testing.assert_array_equal(e.weight.detach().numpy(), e2.weight.detach().numpy())
    # precision change: the sparse buffer follows the parameter's dtype
    e.weight.data = e.weight.data.float()
    _run(e, opt, cgrad, [[2]])
    assert opt.state[e.weight]["momentum_buffer"].dtype is cgrad.float32


def test_grad_scaler_unscales_sparse_grads():
    e = nn.Embedding(6, 2, sparse=True)
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1)
    scaler = cgrad.amp.GradScaler(init_scale=8.0)
    scaler.scale(e(cgrad.tensor([1, 1, 4])).sum()).backward()
    assert e.weight.grad.is_sparse
    scaler.unscale_(opt)
    np.testing.assert_allclose(e.weight.grad.to_dense().numpy()[[1, 4]], [[2, 2], [1, 1]])
    w0 = e.weight.detach().numpy().copy()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_allclose(e.weight.detach().numpy()[1], w0[1] - 0.2, rtol=1e-6)


def test_anomaly_mode_and_nonfinite_sparse_gradients():
    w = cgrad.tensor(np.ones((3, 2)), dtype=f64, requires_grad=True)
    with cgrad.autograd.detect_anomaly():  # scans the sparse gradient's rows
        out = F.embedding(cgrad.tensor([0, 2]), w, sparse=True)
        (out * 2.0).sum().backward()
    assert w.grad.is_sparse
    # A non-finite stored row is found (statistics and GradScaler) and skips the step.
    bad = cgrad.sparse_coo_tensor([[1, 1]], np.array([[1.0, np.inf], [np.nan, 2.0]]), (3, 2))
    sum_sq, max_abs, nonfinite, numel = _core._tensor_stats(bad)
    assert nonfinite == 2 and numel == 6
    e = nn.Embedding(3, 2, sparse=True, dtype=f64)
    opt = cgrad.optim.SGD(e.parameters(), lr=0.1)
    scaler = cgrad.amp.GradScaler(init_scale=4.0)
    scaler.scale(e(cgrad.tensor([1])).sum()).backward()
    e.weight.grad = cgrad.sparse_coo_tensor([[1]], np.array([[np.inf, 1.0]]), (3, 2))
    w0 = e.weight.detach().numpy().copy()
    scaler.step(opt)
    scaler.update()
    np.testing.assert_array_equal(e.weight.detach().numpy(), w0)
    assert scaler.get_scale() == 2.0


def test_module_to_converts_a_sparse_grad_and_scale_grad_by_freq_matches_torch():
    e = nn.Embedding(5, 2, sparse=True)
    e(cgrad.tensor([1, 3, 3])).sum().backward()
    e.to(f64)
    assert e.weight.dtype is f64 and e.weight.grad.is_sparse and e.weight.grad.dtype is f64
    # PyTorch refuses scale_grad_by_freq with sparse=True at backward; cgrad
    # scales upstream of the lookup, so it works: compared with torch's dense.
    torch = pytest.importorskip("torch")
    ce, te = _torch_pair(torch)
    te.sparse = False
    ce.scale_grad_by_freq = te.scale_grad_by_freq = True
    idx = [[1, 1, 2], [1, 7, 2]]
    (ce(cgrad.tensor(idx)) ** 2).sum().backward()
    (te(torch.tensor(idx)) ** 2).sum().backward()
    assert ce.weight.grad.is_sparse
    np.testing.assert_allclose(ce.weight.grad.to_dense().numpy(), te.weight.grad.numpy(),
                               rtol=1e-14)


def test_sparse_linear_edge_sizes_and_cost(capsys):
    empty = nn.SparseLinear(4, 3, mask=np.zeros((3, 4), bool), dtype=f64)
    assert empty.nnz == 0
    x = cgrad.randn(2, 4, dtype=f64, requires_grad=True)
    y = empty(x)
    np.testing.assert_array_equal(y.detach().numpy(), np.broadcast_to(empty.bias.detach().numpy(), (2, 3)))
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((2, 4)))
    sl = nn.SparseLinear(4, 3, density=0.5, seed=1, dtype=f64)
    assert sl(cgrad.zeros(0, 4, dtype=f64)).shape == (0, 3)
    # Cost follows nnz: 1% of a 4096 x 4096 layer against the dense layer
    # (printed, not asserted).
    big = nn.SparseLinear(4096, 4096, density=0.01, seed=0)
    dense = nn.Linear(4096, 4096)
    xb = cgrad.randn(128, 4096, requires_grad=True)
    times = {}
    for name, m in (("sparse", big), ("dense", dense)):
        m(xb).sum().backward()
        t0 = time.perf_counter()
        m(xb).sum().backward()
        times[name] = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[sparse] SparseLinear 4096x4096 at 1% ({big.nnz} connections), batch 128: "
              f"fwd+bwd {times['sparse'] * 1e3:.1f} ms; dense Linear {times['dense'] * 1e3:.1f} ms")


def test_mul_scalar_in_place_scales_the_stored_rows():
    emb = cgrad.nn.Embedding(6, 2, sparse=True)
    emb(cgrad.tensor([1, 4, 1])).sum().backward()
    g = emb.weight.grad
    dense = g.to_dense().numpy().copy()
    v0 = g._version
    with cgrad.no_grad():
        g.mul_(-2.5)
    assert g.is_sparse and g._version > v0
    np.testing.assert_allclose(g.to_dense().numpy(), -2.5 * dense)


def _refused_step_setup():
    """Dense Linears around two Embeddings with row-sparse gradients; the
    parameters and a backward that gives all of them gradients."""
    cgrad.manual_seed(3)
    lin, out = nn.Linear(2, 3), nn.Linear(3, 1)
    e1, e2 = nn.Embedding(5, 2, sparse=True), nn.Embedding(4, 2, sparse=True)
    params = [lin.weight, lin.bias, e1.weight, e2.weight, out.weight, out.bias]

    def backward():
        for p in params:
            p.grad = None
        idx = cgrad.tensor([1, 3])
        out(lin(e1(idx) * e2(idx))).sum().backward()
    return params, backward


def _plain(v):
    """A state value as NumPy (a row-sparse buffer densified) or as it is."""
    if not isinstance(v, cgrad.Tensor):
        return v
    return (v.to_dense() if v.is_sparse else v).detach().numpy().copy()


_REFUSED = [
    (cgrad.optim.Adam, {}, "sparse", "Adam does not support sparse gradients"),
    (cgrad.optim.AdamW, {"amsgrad": True}, "sparse", "Adam does not support sparse gradients"),
    (cgrad.optim.RMSprop, {"momentum": 0.5, "centered": True}, "sparse",
     "RMSprop does not support sparse gradients"),
    (cgrad.optim.SparseAdam, {}, "dense", "SparseAdam does not support dense gradients"),
    (cgrad.optim.SGD, {"momentum": 0.9}, "dense_after_sparse",
     "SGD: this parameter's momentum buffer is row-sparse but its gradient is dense"),
    (cgrad.optim.SGD, {"momentum": 0.9}, "sparse_after_dense",
     "SGD: this parameter's momentum buffer is dense but its gradient is row-sparse"),
]


@pytest.mark.parametrize("groups", ["one", "each"])
@pytest.mark.parametrize("cls,kw,case,msg,foreach", [
    r + (f,) for r in _REFUSED for f in ((None,) if r[0] is cgrad.optim.SparseAdam else (None, True))])
def test_a_refused_step_moves_no_parameter(groups, cls, kw, case, msg, foreach):
    """The gradients of every group are checked before any parameter moves
    (PyTorch checks one group's before it updates that group): a step that
    raises leaves every parameter, and the optimizer's state, as they were,
    so once the gradients are right the run goes on exactly as a twin that
    never saw the refused step."""
    params, backward = _refused_step_setup()
    sparse_only = cls is cgrad.optim.SparseAdam

    def build(ps):
        ps = ps[2:4] if sparse_only else ps  # SparseAdam: the embeddings
        split = [[p] for p in ps] if groups == "each" else [ps]
        extra = {} if sparse_only else dict(foreach=foreach, **kw)
        return cls([{"params": g} for g in split], lr=0.1, **extra)

    def good_grads():
        """Gradients this optimizer takes: sparse ones made dense where it
        needs them, the second embedding's kept as its buffer's layout."""
        backward()
        if case == "sparse" or case == "sparse_after_dense":
            params[2].grad = params[2].grad.to_dense()
            params[3].grad = params[3].grad.to_dense()
        elif case == "dense_after_sparse":
            params[2].grad = params[2].grad.to_dense()

    opt = build(params)
    if "_after_" in case:  # a good step gives the buffers their layout
        good_grads()
        opt.step()
    twin_params = [p.detach().clone().requires_grad_(True) for p in params]
    twin = build(twin_params)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))

    backward()  # bad gradients: the embeddings' ("sparse"), or the second one's
    if "_after_" in case:
        params[2].grad = params[2].grad.to_dense()
    if case in ("dense", "dense_after_sparse"):
        params[3].grad = params[3].grad.to_dense()
    before = [p.detach().numpy().copy() for p in params]
    saved = opt.state_dict()["state"]
    state_before = {k: {n: _plain(v) for n, v in s.items()} for k, s in saved.items()}
    with pytest.raises(RuntimeError, match=msg):
        opt.step()
    for b, p in zip(before, params):
        np.testing.assert_array_equal(p.detach().numpy(), b)
    state_after = opt.state_dict()["state"]
    assert state_after.keys() == state_before.keys()
    for k, s in state_before.items():
        assert state_after[k].keys() == s.keys()
        for n, v in s.items():
            np.testing.assert_array_equal(_plain(state_after[k][n]), v)

    good_grads()
    for p, t in zip(params, twin_params):
        t.grad = p.grad.clone()
    opt.step()
    twin.step()
    for p, t in zip(params, twin_params):
        np.testing.assert_array_equal(p.detach().numpy(), t.detach().numpy())
