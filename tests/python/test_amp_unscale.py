"""_core._amp_unscale_ (cg_amp_unscale_): GradScaler's fused unscale and
inf check against the two passes it replaces (cg_tensor_stats_many, then
mul_ per gradient), bit for bit, on the host (float32/float64) and on the
"cuda" device (float16/float32/float64; the NumPy reference device in CI),
for dense, strided and row-sparse gradients; the errors; GradScaler end to
end; PyTorch's _amp_foreach_non_finite_check_and_unscale_ where it runs."""
import os
import shutil
import subprocess

import numpy as np
import pytest

import cgrad
from cgrad import _core
from cgrad.amp import GradScaler
from cgrad.backends import cuda_kernels
from device_util import host

F16, F32, F64 = cgrad.float16, cgrad.float32, cgrad.float64
NP = {F16: np.float16, F32: np.float32, F64: np.float64}


def grads_like(rng, dtype, dev, shapes=((5, 7), (13,), (2, 3, 4), (1,)), bad=True):
    """Tensors of a few shapes, scaled up as a loss-scaled gradient is,
    with an inf, a -inf and a NaN placed in them when bad."""
    out = []
    for k, s in enumerate(shapes):
        a = (rng.standard_normal(s) * 300.0).astype(NP[dtype])
        if bad and k == 0:
            a.flat[3], a.flat[11] = np.inf, np.nan
        if bad and k == 2:
            a.flat[-1] = -np.inf
        out.append(cgrad.tensor(a, device=dev))
    return out


def two_pass(grads, inv):
    """What GradScaler.unscale_ did before the fused call."""
    st = np.empty((len(grads), 4))
    _core._tensor_stats_many(grads, st)
    with cgrad.no_grad():
        for g in grads:
            g.mul_(inv)
    return int(st[:, 2].sum()) if grads else 0


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    na, nb = np.isnan(a), np.isnan(b)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_array_equal(np.where(na, 0, a).view(u), np.where(nb, 0, b).view(u))


CASES = [("cpu", F32), ("cpu", F64), ("cuda", F16), ("cuda", F32), ("cuda", F64)]


INVS = [2.0 ** -16, 2.0 ** -7, float(np.float32(1 / 3000.0))]


# float16 with an inv_scale that is not a float16 value: mul_ rounds it to
# float16 first, the fused call does not (test_float16_multiplies_in_float32).
@pytest.mark.parametrize("dev,dtype,inv", [(d, t, inv) for d, t in CASES for inv in INVS
                                           if t is not F16 or inv == float(np.float16(inv))])
def test_matches_the_two_passes_bit_for_bit(rng, dev, dtype, inv):
    a = grads_like(rng, dtype, dev)
    b = [g.clone() for g in a]
    versions = [g._version for g in a]
    n_fused = _core._amp_unscale_(a, inv)
    n_ref = two_pass(b, inv)
    assert n_fused == n_ref == 3
    for x, y, v in zip(a, b, versions):
        assert str(x.device).startswith(dev) and x.dtype == dtype
        assert x._version > v
        same_bits(host(x), host(y))


@pytest.mark.parametrize("dtype", [F32, F64])
def test_the_device_gives_the_hosts_bits(rng, dtype):
    a = grads_like(rng, dtype, "cpu")
    d = [g.to("cuda") for g in a]
    assert _core._amp_unscale_(a, 1 / 1024.0) == _core._amp_unscale_(d, 1 / 1024.0) == 3
    for x, y in zip(a, d):
        same_bits(host(x), host(y))


def test_float16_multiplies_in_float32(rng):
    """PyTorch's float32 opmath: x * float32(inv) in float32, rounded to
    float16 once; inv itself is not rounded to float16 (2**-25 is not a
    float16 value: mul_ rounds it to 0 first)."""
    vals = np.concatenate([np.clip(rng.standard_normal(200) * 2e4, -6e4, 6e4).astype(np.float16),
                           np.array([np.inf, -np.inf, np.nan, 65504, 1e-7], np.float16)])
    for inv in (2.0 ** -25, float(np.float32(1 / 3000.0)), 2.0 ** -7):
        g = cgrad.tensor(vals, device="cuda")
        assert _core._amp_unscale_([g], inv) == 3
        with np.errstate(invalid="ignore"):
            want = (vals.astype(np.float32) * np.float32(inv)).astype(np.float16)
        same_bits(host(g), want)
    g = cgrad.tensor(vals, device="cuda")
    _core._amp_unscale_([g], 2.0 ** -25)
    assert np.any(host(g)[np.isfinite(vals)] != 0)


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
def test_nonfinite_counting(dev):
    a = np.array([[1.0, np.inf], [np.nan, -np.inf], [2.0, 3.0]], np.float32)
    gs = [cgrad.tensor(a, device=dev), cgrad.tensor(np.zeros(0, np.float32), device=dev),
          cgrad.tensor(np.full(1000, np.nan), device=dev), cgrad.tensor(np.ones(4), device=dev)]
    assert _core._amp_unscale_(gs, 0.5) == 1003
    np.testing.assert_array_equal(host(gs[0]), a * np.float32(0.5))
    np.testing.assert_array_equal(host(gs[3]), np.full(4, 0.5))
    # counted before scaling: inv = inf turns finite values to inf, uncounted
    g = cgrad.tensor(np.array([1.0, -2.0, 0.0]), device=dev)
    assert _core._amp_unscale_([g], float("inf")) == 0
    h = host(g)
    assert h[0] == np.inf and h[1] == -np.inf and np.isnan(h[2])


def sparse(dev, idx, vals, size, dtype):
    return cgrad.sparse_coo_tensor(cgrad.tensor(np.asarray(idx, np.int64), device=dev),
                                   cgrad.tensor(np.asarray(vals), dtype=dtype, device=dev), size)


@pytest.mark.parametrize("dev,dtype", [c for c in CASES if c[1] is not F16])  # sparse: f32/f64 only
def test_row_sparse_over_the_stored_rows(rng, dev, dtype):
    vals = (rng.standard_normal((5, 3)) * 100).astype(NP[dtype])
    vals[0, 1], vals[3, 1] = np.inf, -np.inf  # row 2 twice: inf + -inf, one NaN coalesced
    vals[4, 2] = np.nan
    idx = [2, 0, 5, 2, 1]
    for coalesce in (False, True):
        mk = lambda: sparse(dev, idx, vals, (7, 3), dtype)
        a, b = mk(), mk()
        if coalesce:
            a, b = a.coalesce(), b.coalesce()
        va = a.values()._version
        n = _core._amp_unscale_([a], 2.0 ** -8)
        assert n == two_pass([b], 2.0 ** -8) == 2
        assert a.values()._version > va
        assert a.is_coalesced() == coalesce
        same_bits(host(a.values()), host(b.values()))
        np.testing.assert_array_equal(host(a.indices()), host(b.indices()))


@pytest.mark.parametrize("dev,dtype", CASES)
@pytest.mark.parametrize("view", ["t", "every third column"])
def test_strided_gradients(rng, dev, dtype, view):
    pick = (lambda t: t.t()) if view == "t" else (lambda t: t[:, ::3])
    base = cgrad.tensor((rng.standard_normal((6, 8)) * 50).astype(NP[dtype]), device=dev)
    ref = base.clone()
    before = host(base)
    v = pick(base)
    assert not v.is_contiguous()
    assert _core._amp_unscale_([v, cgrad.ones(3, dtype=dtype, device=dev)], 0.25) == 0
    two_pass([pick(ref)], 0.25)
    same_bits(host(base), host(ref))  # the base saw the writes, the other elements unchanged
    assert not np.array_equal(host(base), before)
    if view != "t":
        np.testing.assert_array_equal(host(base)[:, 1::3], before[:, 1::3])


def test_empty_list_and_empty_tensors():
    assert _core._amp_unscale_([], 0.5) == 0
    assert _core._amp_unscale_((), 0.5) == 0
    assert _core._amp_unscale_([cgrad.zeros(0, 3), cgrad.zeros(0, device="cuda")], 0.5) == 0


def test_host_and_device_gradients_in_one_list(rng):
    """Each device's gradients run where they live (one kernel on the
    device, the host loop for the rest); the count is the total."""
    c = grads_like(rng, F32, "cpu")
    d = grads_like(rng, F64, "cuda")
    mixed = [c[0], d[0], c[1], d[2]]  # inf + NaN, inf + NaN, none, -inf
    refs = [t.clone() for t in mixed]
    assert _core._amp_unscale_(mixed, 1 / 512.0) == two_pass(refs, 1 / 512.0) == 5
    for x, y in zip(mixed, refs):
        assert x.device == y.device
        same_bits(host(x), host(y))


def test_errors_name_the_index_and_value(rng):
    good = cgrad.ones(3)
    with pytest.raises(TypeError, match=r"grads\[1\].*int64"):
        _core._amp_unscale_([good, cgrad.tensor([1, 2])], 0.5)
    with pytest.raises(TypeError, match=r"grads\[0\].*float16.*host"):
        _core._amp_unscale_([cgrad.ones(2, dtype=F16)], 0.5)
    with pytest.raises(TypeError, match=r"grads\[2\] must be a cgrad.Tensor, got list"):
        _core._amp_unscale_([good, good, [1.0]], 0.5)
    with pytest.raises(ValueError, match="inv_scale is NaN"):
        _core._amp_unscale_([good], float("nan"))
    with pytest.raises(ValueError, match=r"grads\[1\].*stride 0.*dimension 0 of size 4"):
        _core._amp_unscale_([good, cgrad.ones(1, 3).expand(4, 3)], 0.5)
    with pytest.raises(ValueError, match=r"grads\[0\].*stride 0"):
        _core._amp_unscale_([cgrad.ones(1, device="cuda").expand(5)], 0.5)
    with pytest.raises(TypeError, match=r"grads\[0\].*int64.*device"):
        _core._amp_unscale_([cgrad.tensor([1, 2], device="cuda")], 0.5)
    np.testing.assert_array_equal(good.numpy(), np.ones(3))  # refused lists are untouched


def test_not_recorded_and_versions_bumped():
    w = cgrad.tensor([1.0, 2.0], requires_grad=True)
    _core._amp_unscale_([w], 0.5)  # not recorded, even with grad mode on
    assert w.grad_fn is None and w.is_leaf
    np.testing.assert_array_equal(w.detach().numpy(), [0.5, 1.0])
    a = cgrad.tensor([1.0, 2.0], requires_grad=True)
    b = a.exp()  # saves its output
    with cgrad.no_grad():
        _core._amp_unscale_([b], 0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation|version"):
        b.sum().backward()


# ------------------------------------------------------------ GradScaler
class _OldScaler(GradScaler):
    """GradScaler with the two-pass unscale_ it had before the fused call."""

    def unscale_(self, optimizer):
        state = self._per_optimizer_states[id(optimizer)]
        inv = float(np.float32(1.0 / self._scale))
        n = two_pass(self._grads(optimizer), inv)
        state.update(found_inf=1 if n else 0, nonfinite=n, stage="unscaled")


@pytest.mark.parametrize("dev", ["cpu", "cuda"])
def test_grad_scaler_end_to_end_unchanged(rng, dev):
    import cgrad.nn as nn
    import cgrad.optim as optim
    x = cgrad.tensor(rng.standard_normal((16, 8)).astype(np.float32), device=dev)
    runs = []
    for cls in (GradScaler, _OldScaler):
        cgrad.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1)).to(dev)
        opt = optim.SGD(model.parameters(), lr=0.1)
        reports = []
        opt.register_report_hook(lambda o, r: reports.append((r.skipped, r.nonfinite, r.loss_scale)))
        scaler = cls(init_scale=2.0 ** 20, growth_interval=2, device=dev)
        for k in range(8):
            opt.zero_grad()
            loss = model(x).pow(2).mean() * (float("inf") if k in (2, 5) else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        runs.append(([host(p) for p in model.parameters()], reports, scaler.get_scale()))
    (pa, ra, sa), (pb, rb, sb) = runs
    assert ra == rb and sa == sb
    assert [r[0] for r in ra].count(True) == 2
    for a, b in zip(pa, pb):
        same_bits(a, b)


# ----------------------------------------------------------------- torch
@pytest.mark.parametrize("dev,dtype", CASES)
def test_matches_torch(torch, rng, dev, dtype):
    op = getattr(torch, "_amp_foreach_non_finite_check_and_unscale_", None)
    if op is None:
        pytest.skip("this torch has no _amp_foreach_non_finite_check_and_unscale_")
    inv = float(np.float32(1 / 3000.0))
    cg = grads_like(rng, dtype, dev)
    tg = [torch.from_numpy(host(g)) for g in cg]
    found = torch.zeros(1)
    op(tg, found, torch.tensor(inv, dtype=torch.float32))
    n = _core._amp_unscale_(cg, inv)
    assert (n > 0) == bool(found.item())
    for c, t in zip(cg, tg):
        same_bits(host(c), t.numpy())
    clean = grads_like(rng, dtype, dev, bad=False)
    found.zero_()
    op([torch.from_numpy(host(g)) for g in clean], found, torch.tensor(inv))
    assert _core._amp_unscale_(clean, inv) == 0 and found.item() == 0.0


# ------------------------------------------------------------------ nvcc
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc")
                                else None)


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA toolkit) is not installed")
def test_float16_source_compiles(tmp_path):
    """float32/float64 are compiled by test_cuda_kernels_nvcc.py with the
    other kernels; float16 is amp_unscale's alone."""
    src = tmp_path / "amp_f16.cu"
    src.write_text(cuda_kernels.source("amp_unscale", "float16"))
    ptx = tmp_path / "amp_f16.ptx"
    r = subprocess.run([NVCC, "--ptx", "-arch=sm_80", *cuda_kernels.NVCC_OPTIONS, str(src), "-o",
                        str(ptx)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    text = ptx.read_text()
    assert ".entry cg_amp_unscale_f16" in text and "fma.rn" not in text
    with pytest.raises(KeyError, match="no float16 source"):
        cuda_kernels.source("adam_update", "float16")


@pytest.mark.parametrize("dev,dtype", CASES)
def test_large_gradients_release_the_gil(rng, dev, dtype):
    """Past 32768 elements the call runs without the GIL (device kernels
    take it back in the backend's trampolines)."""
    a = [cgrad.tensor((rng.standard_normal(70001) * 100).astype(NP[dtype]), device=dev)
         for _ in range(2)]
    hv = host(a[1])
    hv[[5, 70000]] = np.inf
    a[1] = cgrad.tensor(hv, device=dev)
    b = [g.clone() for g in a]
    assert _core._amp_unscale_(a, 2.0 ** -10) == two_pass(b, 2.0 ** -10) == 2
    for x, y in zip(a, b):
        same_bits(host(x), host(y))
