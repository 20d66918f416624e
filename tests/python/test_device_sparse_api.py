"""Row-sparse tensors crossing devices from Python: Tensor.to / .cuda() /
.cpu() of a sparse tensor, sparse_coo_tensor from device parts (size
inferred there), SparseLinear(device=), Module.to of models with row-sparse
gradients and buffers, pickling and cgrad.save/load of sparse device tensors
(device recorded, map_location followed), and the guard that keeps a sparse
header away from device kernels. "cuda" is the NumPy reference device here
(device_util.py); every result is compared with the CPU backend."""
import pickle

import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as F
from cgrad import nn, optim
from cgrad.serialization import load, save
from device_util import host

F64, F32 = cgrad.float64, cgrad.float32


def on_cuda(t):
    return str(t.device).startswith("cuda")


def sparse(dev, idx, vals, size, dtype=F64):
    return cgrad.sparse_coo_tensor(cgrad.tensor(np.asarray(idx, dtype=np.int64), device=dev),
                                   cgrad.tensor(np.asarray(vals), dtype=dtype, device=dev), size)


def assert_same_sparse(a, b, device, rtol=0.0):
    """b is a row-sparse tensor on device (its parts too) holding what a holds."""
    assert b.is_sparse and a.is_sparse
    for t in (b, b.indices(), b.values()):
        assert on_cuda(t) == (device == "cuda"), (t.device, device)
    assert b.shape == a.shape and b.dtype == a.dtype
    assert b._nnz() == a._nnz() and b.is_coalesced() == a.is_coalesced()
    np.testing.assert_array_equal(host(b.indices()), host(a.indices()))
    np.testing.assert_allclose(host(b.values()), host(a.values()), rtol=rtol, atol=0)
    np.testing.assert_allclose(host(b.to_dense()), host(a.to_dense()), rtol=rtol, atol=0)


UNCOALESCED = ([3, 0, 3, 1], np.arange(12.0).reshape(4, 3) - 5.5, (5, 3))
COALESCED = ([0, 2, 4], [[1.5, -2.0], [0.25, 3.0], [-1.0, 7.0]], (6, 2))
THREE_D = ([1, 1], np.arange(12.0).reshape(2, 3, 2), (3, 3, 2))


# ------------------------------------------------------------ Tensor.to
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("parts", [UNCOALESCED, COALESCED, THREE_D], ids=["uncoalesced", "coalesced", "3d"])
def test_to_moves_a_row_sparse_tensor_there_and_back(parts, dtype):
    c = sparse("cpu", *parts, dtype=dtype)
    g = c.to("cuda")
    assert_same_sparse(c, g, "cuda")
    assert not g.requires_grad and g.layout == "sparse_coo"
    back = g.to("cpu")
    assert_same_sparse(c, back, "cpu")
    assert_same_sparse(c, c.cuda(), "cuda")
    assert_same_sparse(c, g.cpu(), "cpu")
    assert_same_sparse(c, c.to(cgrad.device("cuda", 0)), "cuda")
    assert_same_sparse(c, c.cuda(0), "cuda")
    # the parts are copies: writing the moved values leaves the source alone
    before = host(c.values())
    g.values().mul_(2.0)
    np.testing.assert_array_equal(host(c.values()), before)


def test_to_the_same_device_returns_self_unless_copy():
    g = sparse("cuda", *UNCOALESCED)
    assert g.to("cuda") is g and g.cuda() is g and g.to("cuda:0") is g
    c = sparse("cpu", *UNCOALESCED)
    assert c.to("cpu") is c and c.cpu() is c
    cp = g.to("cuda", copy=True)
    assert cp is not g
    assert_same_sparse(g, cp, "cuda")


def test_to_a_device_and_a_dtype_at_once():
    c = sparse("cpu", *UNCOALESCED, dtype=F64)
    expect = cgrad.sparse_coo_tensor(c.indices(), c.values().to(F32), c.shape)
    assert_same_sparse(expect, c.to("cuda", F32), "cuda")
    assert_same_sparse(expect, c.to(device="cuda", dtype=F32), "cuda")
    other = cgrad.zeros(2, dtype=F32, device="cuda")
    assert_same_sparse(expect, c.to(other), "cuda")
    g = sparse("cuda", *UNCOALESCED, dtype=F32)
    assert_same_sparse(sparse("cpu", *UNCOALESCED, dtype=F64), g.to("cpu", F64), "cpu", rtol=1e-7)
    assert_same_sparse(sparse("cpu", *UNCOALESCED, dtype=F32).to(F64), g.to("cpu", F64), "cpu")


@pytest.mark.parametrize("parts", [([], np.zeros((0, 4)), (3, 4)), ([], np.zeros((0, 2)), (0, 2)),
                                   ([0, 1], np.zeros((2, 0)), (2, 0))], ids=["nnz0", "rows0", "width0"])
def test_to_moves_empty_sparse_tensors(parts):
    c = sparse("cpu", *parts)
    assert_same_sparse(c, c.to("cuda"), "cuda")
    assert_same_sparse(c, c.to("cuda").to("cpu"), "cpu")


def test_to_bad_devices_are_refused_as_for_dense_tensors():
    c = sparse("cpu", *COALESCED)
    with pytest.raises(ValueError, match="'cuda:1': only index 0"):
        c.to("cuda:1")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        c.to("tpu")


def test_sparse_tensors_carry_no_history_across_devices():
    """Sparse tensors cannot require grad (as their .to() records nothing);
    a row-sparse gradient flowing back through a dense .to() arrives on the
    source device with the CPU run's values."""
    g = sparse("cuda", *COALESCED)
    with pytest.raises(NotImplementedError, match="row-sparse"):
        g.requires_grad_()
    with pytest.raises(NotImplementedError, match="requires_grad=True is not supported"):
        cgrad.sparse_coo_tensor(g.indices(), g.values(), g.shape, requires_grad=True)
    w0 = np.random.default_rng(1).standard_normal((6, 3))
    idx = np.array([[0, 4, 4], [5, 0, 2]])
    wc = cgrad.tensor(w0, requires_grad=True)
    (nn.functional.embedding(cgrad.tensor(idx), wc, sparse=True) ** 2).sum().backward()
    wh = cgrad.tensor(w0, requires_grad=True)  # a host leaf used on the device
    out = nn.functional.embedding(cgrad.tensor(idx, device="cuda"), wh.to("cuda"), sparse=True)
    assert on_cuda(out)
    (out ** 2).sum().backward()
    assert wh.grad.device == "cpu"
    np.testing.assert_allclose(host(wh.grad.to_dense() if wh.grad.is_sparse else wh.grad),
                               host(wc.grad.to_dense()), rtol=1e-12)


# ------------------------------------------------------------ sparse_coo_tensor
@pytest.mark.parametrize("idx2d", [False, True])
def test_sparse_coo_tensor_infers_its_size_from_device_indices(idx2d):
    idx, vals, _ = UNCOALESCED
    ind = np.asarray([idx] if idx2d else idx, dtype=np.int64)
    c = cgrad.sparse_coo_tensor(cgrad.tensor(ind), cgrad.tensor(vals))
    g = cgrad.sparse_coo_tensor(cgrad.tensor(ind, device="cuda"), cgrad.tensor(vals, device="cuda"))
    assert c.shape == (4, 3)
    assert_same_sparse(c, g, "cuda")


def test_sparse_coo_tensor_size_of_empty_and_bad_device_indices():
    e = cgrad.sparse_coo_tensor(cgrad.zeros(0, dtype=cgrad.int64, device="cuda"),
                                cgrad.zeros(0, 5, device="cuda"))
    assert e.shape == (0, 5) and on_cuda(e) and e._nnz() == 0
    for dev in ("cpu", "cuda"):
        with pytest.raises(IndexError, match="index -2 .* out of range for 0 rows"):
            cgrad.sparse_coo_tensor(cgrad.tensor([-2, -3], device=dev), cgrad.ones(2, 2, device=dev))
        with pytest.raises(IndexError, match="index 3 .* out of range for 2 rows"):
            cgrad.sparse_coo_tensor(cgrad.tensor([0, 3], device=dev), cgrad.ones(2, 2, device=dev), (2, 2))
    with pytest.raises(IndexError, match="index -2 .* out of range for 4 rows"):
        cgrad.sparse_coo_tensor(cgrad.tensor([3, -2], device="cuda"), cgrad.ones(2, 2, device="cuda"))
    with pytest.raises(ValueError, match="cpu.*cuda|cuda.*cpu"):
        cgrad.sparse_coo_tensor(cgrad.tensor([0, 1], device="cuda"), cgrad.ones(2, 2))


# ------------------------------------------------------------ SparseLinear(device=)
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_created_on_the_device_equals_the_cpu_layer(dtype, bias):
    layers = {}
    for dev in ("cpu", "cuda"):
        cgrad.manual_seed(11)
        layers[dev] = nn.SparseLinear(6, 4, density=0.4, seed=3, bias=bias, device=dev, dtype=dtype)
    c, g = layers["cpu"], layers["cuda"]
    assert g.nnz == c.nnz > 0
    for name in ("indptr", "indices", "weight") + (("bias",) if bias else ()):
        a, b = getattr(c, name), getattr(g, name)
        assert on_cuda(b) and b.dtype == a.dtype, name
        np.testing.assert_array_equal(host(b), host(a))
    assert g.bias is None if not bias else on_cuda(g.bias)
    x = np.random.default_rng(2).standard_normal((5, 6))
    yc, yg = c(cgrad.tensor(x, dtype=dtype)), g(cgrad.tensor(x, dtype=dtype, device="cuda"))
    assert on_cuda(yg)
    tol = dict(rtol=1e-12) if dtype is F64 else dict(rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(host(yg), host(yc), **tol)
    (yc ** 2).sum().backward()
    (yg ** 2).sum().backward()
    for a, b in zip(c.parameters(), g.parameters()):
        assert on_cuda(b.grad)
        np.testing.assert_allclose(host(b.grad), host(a.grad), **tol)
    dw = g.dense_weight()
    assert on_cuda(dw)
    np.testing.assert_array_equal(host(dw), host(c.dense_weight()))


def test_sparse_linear_on_the_device_with_a_device_mask_and_bad_devices():
    mask = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1]], dtype=bool)
    g = nn.SparseLinear(3, 3, mask=cgrad.tensor(mask, device="cuda"), device="cuda")
    np.testing.assert_array_equal(host(g.indptr), [0, 2, 2, 5])
    np.testing.assert_array_equal(host(g.indices), [0, 2, 0, 1, 2])
    assert on_cuda(g.weight)
    with pytest.raises(ValueError, match="SparseLinear: .*'cuda:1': only index 0"):
        nn.SparseLinear(3, 3, mask=mask, device="cuda:1")
    with pytest.raises(TypeError, match="SparseLinear: device must be"):
        nn.SparseLinear(3, 3, mask=mask, device=1.5)


# ------------------------------------------------------------ Module.to
class Model(nn.Module):
    def __init__(self, dtype):
        super().__init__()
        self.emb = nn.Embedding(9, 4, sparse=True, padding_idx=2, dtype=dtype)
        self.fc = nn.SparseLinear(4, 3, density=0.6, seed=5, dtype=dtype)

    def forward(self, idx):
        return self.fc(self.emb(idx)).tanh().sum()


BATCHES = [[[1, 4, 4], [8, 0, 2]], [[3, 3, 7], [2, 5, 1]], [[0, 8, 6], [6, 6, 4]]]


def run(move, dtype, sparse_opt):
    """Trains Model: the first backward on the cpu, then (move) Module.to("cuda")
    with the row-sparse gradient in place, the optimizer steps there."""
    cgrad.manual_seed(4)
    model = Model(dtype)
    emb_opt = (optim.SparseAdam(model.emb.parameters(), lr=0.05) if sparse_opt == "sparse_adam"
               else optim.SGD(model.emb.parameters(), lr=0.1, momentum=0.9))
    fc_opt = optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    model(cgrad.tensor(BATCHES[0])).backward()
    g_before = model.emb.weight.grad
    assert g_before.is_sparse
    dev = "cuda" if move else "cpu"
    assert model.to(dev) is model
    g = model.emb.weight.grad
    assert g.is_sparse and on_cuda(g) == move and on_cuda(model.emb.weight) == move
    assert on_cuda(model.fc.indptr) == move and on_cuda(model.fc.weight.grad) == move
    assert_same_sparse(g_before, g, dev)
    for k, b in enumerate(BATCHES):
        if k:
            emb_opt.zero_grad()
            fc_opt.zero_grad()
            model(cgrad.tensor(b, device=dev)).backward()
            assert model.emb.weight.grad.is_sparse and on_cuda(model.emb.weight.grad) == move
        emb_opt.step()
        fc_opt.step()
    return model


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("sparse_opt", ["sgd", "sparse_adam"])
def test_module_to_moves_sparse_gradients_and_trains_as_on_the_cpu(sparse_opt, dtype):
    c, g = run(False, dtype, sparse_opt), run(True, dtype, sparse_opt)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype is F64 else dict(rtol=2e-6, atol=1e-6)
    for (name, a), (_, b) in zip(c.named_parameters(), g.named_parameters()):
        assert on_cuda(b), name
        np.testing.assert_allclose(host(b), host(a), err_msg=name, **tol)
    assert not np.array_equal(host(c.emb.weight)[1], host(Model(dtype).emb.weight)[1])  # it trained
    g.cpu()  # and back, the row-sparse gradient with it
    assert g.emb.weight.device == "cpu" and g.emb.weight.grad.is_sparse
    assert g.emb.weight.grad.device == "cpu" and g.fc.indices.device == "cpu"


def test_module_to_moves_and_casts_row_sparse_buffers():
    m = nn.Module()
    sp = sparse("cpu", *UNCOALESCED)
    m.register_buffer("sp", sp)
    m.to("cuda")
    assert_same_sparse(sp, m.sp, "cuda")
    m.to(F32)
    assert_same_sparse(sp.to(F32), m.sp, "cuda")
    m.to("cpu", F64)
    assert_same_sparse(sp.to(F32).to(F64), m.sp, "cpu")


# ------------------------------------------- a sparse gradient through a device move
def embedding_weight(device):
    return cgrad.tensor(np.arange(10.0).reshape(5, 2) - 4.5, device=device, requires_grad=True)


@pytest.mark.parametrize("src, dst", [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_row_sparse_gradient_stays_row_sparse_through_a_device_move(src, dst):
    """w.to(dst) inside the graph: the embedding's row-sparse gradient goes
    back to w's device row-sparse, as w gets it when there is no move (the
    same graph on one device), not densified. (PyTorch's ToCopyBackward
    refuses a sparse gradient: 'to(options) doesn't support converting to a
    different layout'.)"""
    idx = [[1, 3], [1, 0]]
    ref = embedding_weight("cpu")
    F.embedding(cgrad.tensor(idx), ref, sparse=True).pow(2).sum().backward()
    w = embedding_weight(src)
    F.embedding(cgrad.tensor(idx, device=dst), w.to(dst), sparse=True).pow(2).sum().backward()
    assert_same_sparse(ref.grad, w.grad, src)


@pytest.mark.parametrize("src, dst", [("cpu", "cuda"), ("cuda", "cpu")])
def test_gradients_meeting_after_a_device_move_accumulate_as_on_one_device(src, dst):
    """Two sparse gradients of one moved weight concatenate (row-sparse, as
    on a leaf); a dense one joining makes the sum dense, as on one device."""
    i1, i2 = [[1, 3]], [[3, 4, 4]]
    ref = embedding_weight("cpu")
    (F.embedding(cgrad.tensor(i1), ref, sparse=True).sum()
     + F.embedding(cgrad.tensor(i2), ref, sparse=True).pow(2).sum()).backward()
    w = embedding_weight(src)
    wd = w.to(dst)
    (F.embedding(cgrad.tensor(i1, device=dst), wd, sparse=True).sum()
     + F.embedding(cgrad.tensor(i2, device=dst), wd, sparse=True).pow(2).sum()).backward()
    assert_same_sparse(ref.grad, w.grad, src)

    ref = embedding_weight("cpu")
    ((ref * 2.0).sum() + F.embedding(cgrad.tensor(i1), ref, sparse=True).sum()).backward()
    w = embedding_weight(src)
    wd = w.to(dst)
    ((wd * 2.0).sum() + F.embedding(cgrad.tensor(i1, device=dst), wd, sparse=True).sum()).backward()
    assert not ref.grad.is_sparse and not w.grad.is_sparse and on_cuda(w.grad) == (src == "cuda")
    np.testing.assert_array_equal(host(w.grad), host(ref.grad))


# ------------------------------------------- Module.half() with row-sparse gradients
def sparse_model(device):
    """An Embedding(sparse=True) under a Linear, after one backward: a
    row-sparse gradient (uncoalesced: index 1 twice) and dense ones."""
    cgrad.manual_seed(3)
    m = nn.Sequential(nn.Embedding(5, 3, sparse=True), nn.Linear(3, 1)).to(device)
    m(cgrad.tensor([[1, 3, 1]], device=device)).pow(2).sum().backward()
    return m


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("convert", ["half", "to", "double"])
def test_module_half_casts_row_sparse_gradients_as_dense_ones(device, convert):
    """The parameters and their gradients are cast, a row-sparse gradient as
    its values (PyTorch's Module.half()), on either device."""
    m = sparse_model(device)
    before = {n: p.grad for n, p in m.named_parameters()}
    dtype = F64 if convert == "double" else cgrad.float16
    if convert == "half":
        m.half()
    else:
        m.to(dtype)
    for name, p in m.named_parameters():
        g0 = before[name]
        assert p.dtype == dtype and p.grad.dtype == dtype and p.grad.is_sparse == g0.is_sparse, name
        assert on_cuda(p.grad) == (device == "cuda"), name
        np_dtype = np.float64 if dtype is F64 else np.float16
        if g0.is_sparse:  # the parts stay where they were; no rows are merged
            g = p.grad
            assert all(on_cuda(t) == (device == "cuda") for t in (g.indices(), g.values())), name
            assert g.shape == g0.shape and g._nnz() == g0._nnz() == 3 and not g.is_coalesced()
            np.testing.assert_array_equal(host(g.indices()), host(g0.indices()))
            np.testing.assert_array_equal(host(g.values()), host(g0.values()).astype(np_dtype))
        else:
            np.testing.assert_array_equal(host(p.grad), host(g0).astype(np_dtype))
    m.float()
    g = m[0].weight.grad
    assert g.is_sparse and g.dtype == F32
    np.testing.assert_array_equal(host(g.values()),
                                  host(before["0.weight"].values()).astype(np.dtype(np_dtype)).astype(np.float32))


def test_float16_row_sparse_tensors_are_storage_on_the_cpu_and_compute_on_the_device():
    """As dense float16: on the cpu a float16 row-sparse tensor is built,
    moved, cast and copied, and what would add its rows (coalesce, to_dense)
    is refused naming float16; on the device it computes."""
    vals = np.arange(12.0).reshape(4, 3) - 5.5
    idx, size = UNCOALESCED[0], UNCOALESCED[2]
    h = sparse("cpu", idx, vals, size).to(cgrad.float16)
    assert h.is_sparse and h.dtype == cgrad.float16 and not h.is_coalesced()
    for op in (h.coalesce, h.to_dense):
        with pytest.raises(TypeError, match="float16"):
            op()
    d = h.to("cuda")
    want = sparse("cpu", idx, vals.astype(np.float16).astype(np.float64), size)
    np.testing.assert_array_equal(host(d.to_dense()), host(want.to_dense()).astype(np.float16))
    np.testing.assert_array_equal(host(d.coalesce().values()), host(want.coalesce().values()).astype(np.float16))
    back = pickle.loads(pickle.dumps(h))
    assert back.dtype == cgrad.float16
    np.testing.assert_array_equal(host(back.values()), host(h.values()))


# ------------------------------------------------------------ saving
@pytest.mark.parametrize("dtype", [F64, F32])
def test_pickling_a_sparse_device_tensor_keeps_its_device(dtype):
    g = sparse("cuda", *UNCOALESCED, dtype=dtype)
    back = pickle.loads(pickle.dumps(g))
    assert_same_sparse(g, back, "cuda")
    c = sparse("cpu", *COALESCED, dtype=dtype)
    assert_same_sparse(c, pickle.loads(pickle.dumps(c)), "cpu")


def test_save_and_load_a_sparse_device_tensor_follow_map_location(tmp_path):
    path = tmp_path / "sp.safetensors"
    g = sparse("cuda", *UNCOALESCED)
    c = sparse("cpu", *COALESCED)
    save({"g": g, "c": c, "dense": cgrad.ones(2, device="cuda")}, path)
    back = load(path)
    assert_same_sparse(g, back["g"], "cuda")
    assert_same_sparse(c, back["c"], "cpu")
    to_cpu = load(path, map_location="cpu")
    assert_same_sparse(g, to_cpu["g"], "cpu")
    assert to_cpu["dense"].device == "cpu"
    by_dict = load(path, map_location={"cuda:0": "cpu", "cpu": "cuda"})
    assert_same_sparse(g, by_dict["g"], "cpu")
    assert_same_sparse(c, by_dict["c"], "cuda")
    seen = []

    def split(t, location):  # indices stay, values move: a sparse tensor cannot straddle
        seen.append(location)
        return t.to("cuda") if t.is_floating_point() else None

    with pytest.raises(RuntimeError, match="indices of a row-sparse tensor on 'cpu' and its values "
                                           "on 'cuda:0'"):
        load(path, map_location=split)
    assert "cpu" in seen


def test_an_optimizer_state_with_a_sparse_device_momentum_saves_and_loads(tmp_path):
    cgrad.manual_seed(0)
    emb = nn.Embedding(6, 2, sparse=True).cuda()
    opt = optim.SGD(emb.parameters(), lr=0.1, momentum=0.5)
    emb(cgrad.tensor([1, 3, 3], device="cuda")).sum().backward()
    opt.step()
    buf = opt.state[emb.weight]["momentum_buffer"]
    assert buf.is_sparse and on_cuda(buf)
    path = tmp_path / "opt.safetensors"
    save(opt.state_dict(), path)
    sd = load(path)
    assert_same_sparse(buf, sd["state"][0]["momentum_buffer"], "cuda")
    sd = load(path, map_location="cpu")
    assert_same_sparse(buf, sd["state"][0]["momentum_buffer"], "cpu")


# ------------------------------------------------------------ the kernel guard
def test_a_sparse_header_never_reaches_a_device_kernel():
    g = sparse("cuda", *COALESCED)
    with pytest.raises(TypeError, match="row-sparse tensor reached a device kernel"):
        g.__cuda_array_interface__
    with pytest.raises(TypeError, match="row-sparse tensor reached a device kernel"):
        g.data_ptr()
    with pytest.raises(TypeError, match="row-sparse"):
        g.__dlpack__()
    np.testing.assert_array_equal(host(g.to_dense()), host(sparse("cpu", *COALESCED).to_dense()))
