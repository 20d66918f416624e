"""float16: a storage type on the cpu (creation, casts, views, copies, device
moves), computed on 'cuda'; dynamic loss scaling and float32 master weights
for float16 models. In CI 'cuda' is the NumPy reference device."""
import numpy as np
import pytest

import cgrad
from device_util import host


def _bits(a):
    return np.asarray(a, dtype=np.float16).view(np.uint16)


def test_casts_round_like_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    vals = np.concatenate([
        rng.standard_normal(2000) * 10.0 ** rng.integers(-9, 6, 2000),
        [0.0, -0.0, np.inf, -np.inf, 65504.0, 65519.99, 65520.0, 1e6, -1e6,
         2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * 1.0000001, 2.0 ** -14, 2.0 ** -14 * (1 - 2 ** -11),
         1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1e-8, -3e-5],
    ])
    for src in (cgrad.float64, cgrad.float32):
        t = cgrad.tensor(vals, dtype=src)
        h = t.half()
        assert h.dtype == cgrad.float16 and h.device == "cpu"
        with np.errstate(over="ignore"):
            ref = vals.astype(np.float64 if src is cgrad.float64 else np.float32).astype(np.float16)
        np.testing.assert_array_equal(_bits(h.numpy()), _bits(ref))
        np.testing.assert_array_equal(h.float().numpy(), ref.astype(np.float32))  # exact back
    nan = cgrad.tensor([np.nan]).half()
    assert np.isnan(nan.numpy()[0])


def test_host_float16_is_storage_only_with_a_clear_error():
    h = cgrad.tensor([1.0, 2.0]).half()
    for bad in (lambda: h + h, lambda: h.exp(), lambda: h.sum(), lambda: h @ h, lambda: h * 2.0,
                lambda: h.mul_(0.5), lambda: h.add_(1.0), lambda: h.div_(2.0)):
        with pytest.raises(TypeError, match="float16.*device only.*cuda.*float\\(\\)"):
            bad()
    np.testing.assert_array_equal(h.numpy(), [1.0, 2.0])  # nothing was written
    # what works on the host: creation, views, copies, casts, numpy, item
    z = cgrad.zeros(2, 3, dtype=cgrad.float16)
    assert z.numpy().dtype == np.float16 and z.numpy().sum() == 0
    f = cgrad.full((2,), 1.5, dtype=cgrad.float16)
    np.testing.assert_array_equal(f.numpy(), [1.5, 1.5])
    cgrad.manual_seed(1)
    r = cgrad.randn(100, dtype=cgrad.float16)
    cgrad.manual_seed(1)
    np.testing.assert_array_equal(r.numpy(), cgrad.randn(100).numpy().astype(np.float16))
    a = cgrad.tensor(np.arange(12, dtype=np.float16).reshape(3, 4))
    assert a.dtype == cgrad.float16
    np.testing.assert_array_equal(a.t().contiguous().numpy(), np.arange(12, dtype=np.float16).reshape(3, 4).T)
    np.testing.assert_array_equal(cgrad.cat([a, a]).numpy()[3:], a.numpy())
    assert a[1, 2].item() == 6.0
    b = cgrad.zeros(3, 4, dtype=cgrad.float16)
    b.copy_(a.float())  # float32 -> float16 copy on the host
    np.testing.assert_array_equal(b.numpy(), a.numpy())
    b.copy_(cgrad.tensor([0.1, 2.0, 3.0, 65519.0], dtype=cgrad.float64))  # broadcast, rounded
    np.testing.assert_array_equal(_bits(b.numpy()), _bits(np.tile(np.array([0.1, 2.0, 3.0, 65519.0]).astype(np.float16), (3, 1))))
    c = cgrad.zeros(3, 4)
    c.copy_(a)  # float16 -> float32 on the host
    np.testing.assert_array_equal(c.numpy(), a.numpy().astype(np.float32))


def test_float16_on_device_computes_and_differentiates():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((4, 5)).astype(np.float16)
    b = rng.standard_normal((5, 3)).astype(np.float16)
    x = cgrad.tensor(a, device="cuda", requires_grad=True)
    w = cgrad.tensor(b, device="cuda", requires_grad=True)
    y = ((x @ w).tanh() * 2.0 + 1.0).sum()
    assert y.dtype == cgrad.float16
    y.backward()
    assert x.grad.dtype == cgrad.float16 and x.grad.device == "cuda"
    # the same in float32 on the cpu: float16 precision (about 1e-3 relative)
    x32 = cgrad.tensor(a.astype(np.float32), requires_grad=True)
    w32 = cgrad.tensor(b.astype(np.float32), requires_grad=True)
    y32 = ((x32 @ w32).tanh() * 2.0 + 1.0).sum()
    y32.backward()
    np.testing.assert_allclose(float(host(y)), float(y32.item()), rtol=5e-3)
    np.testing.assert_allclose(host(x.grad).astype(np.float32), x32.grad.numpy(), rtol=2e-2, atol=5e-3)
    assert (x.half() is x) and x.float().dtype == cgrad.float32


def test_mixed_float16_float32_promotes_to_float32():
    h = cgrad.tensor([1.0, 2.0], device="cuda").half()
    f = cgrad.tensor([0.5, 0.25], device="cuda")
    assert (h + f).dtype == cgrad.float32
    assert (h * 3).dtype == cgrad.float16  # a Python scalar keeps the tensor's dtype
    np.testing.assert_array_equal(host(h * 3), [3.0, 6.0])


def _f16_model():
    cgrad.manual_seed(0)
    lin = cgrad.nn.Linear(4, 1)
    lin.to("cuda")
    lin.to(cgrad.float16)
    return lin


def test_grad_scaler_rescues_float16_gradients_that_would_underflow():
    lin = _f16_model()
    x = cgrad.full((8, 4), 1e-4, dtype=cgrad.float16, device="cuda")
    want = 8 * 1e-4 * 1e-4  # d/dw of sum(1e-4 * lin(x)): 8e-8, at float16's smallest subnormal
    loss = (lin(x) * 1e-4).sum()
    loss.backward(retain_graph=True)
    plain = host(lin.weight.grad).astype(np.float64)
    assert np.abs(plain / want - 1).max() > 0.1  # lost to underflow / subnormal rounding
    lin.zero_grad()
    # The scale must fit float16 when the loss itself is float16 (65504 at most);
    # with a float32 loss (loss.float()) the default 2**16 is fine.
    scaler = cgrad.amp.GradScaler(init_scale=2.0 ** 12, device="cuda")
    scaler.scale(loss).backward()
    g = host(lin.weight.grad).astype(np.float64) / scaler.get_scale()
    np.testing.assert_allclose(g, np.full((1, 4), want), rtol=2e-3)


def test_grad_scaler_skips_inf_steps_and_halves_the_scale_in_float16():
    lin = _f16_model()
    opt = cgrad.amp.MasterWeights(cgrad.optim.SGD(lin.parameters(), lr=0.1))
    scaler = cgrad.amp.GradScaler(init_scale=2.0 ** 16, growth_interval=2, device="cuda")
    w0 = host(lin.weight).copy()
    x = cgrad.full((2, 4), 1000.0, dtype=cgrad.float16, device="cuda")
    scaler.scale(lin(x).sum()).backward()  # 1000 * 2 * 65536 overflows float16: inf
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 15
    np.testing.assert_array_equal(host(lin.weight), w0)  # skipped
    for _ in range(2):
        opt.zero_grad()
        x1 = cgrad.full((1, 4), 0.25, dtype=cgrad.float16, device="cuda")  # gradients stay below 65504
        scaler.scale(lin(x1).sum()).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() == 2.0 ** 16  # grew after growth_interval clean steps
    assert not np.array_equal(host(lin.weight), w0)


def test_master_weights_keep_updates_float16_would_round_away():
    w = cgrad.nn.Parameter(cgrad.ones(4, dtype=cgrad.float16, device="cuda"))
    plain = cgrad.nn.Parameter(cgrad.ones(4, dtype=cgrad.float16, device="cuda"))
    opt = cgrad.amp.MasterWeights(cgrad.optim.SGD([w], lr=1e-4))
    opt_plain = cgrad.optim.SGD([plain], lr=1e-4)
    for _ in range(20):
        for p, o in ((w, opt), (plain, opt_plain)):
            o.zero_grad()
            p.sum().backward()  # gradient 1: each step moves by 1e-4 < float16's spacing at 1 (9.8e-4 / 2)
            o.step()
    np.testing.assert_array_equal(host(plain), np.ones(4, np.float16))  # pure float16 never moves
    assert opt.masters[0].dtype == cgrad.float32 and opt.masters[0].device == "cuda"
    np.testing.assert_allclose(host(opt.masters[0]), np.full(4, 1 - 20e-4), rtol=1e-6)
    np.testing.assert_array_equal(host(w), np.full(4, 1 - 20e-4, np.float32).astype(np.float16))
    assert w.dtype == cgrad.float16


def test_master_weights_training_tracks_float32_training():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((64, 8)).astype(np.float32)
    Y = (X @ rng.standard_normal((8, 1))).astype(np.float32)

    def train(half):
        cgrad.manual_seed(0)
        model = cgrad.nn.Sequential(cgrad.nn.Linear(8, 16), cgrad.nn.Tanh(), cgrad.nn.Linear(16, 1))
        model.to("cuda")
        if half:
            model.to(cgrad.float16)
        inner = cgrad.optim.Adam(model.parameters(), lr=1e-2)
        opt = cgrad.amp.MasterWeights(inner) if half else inner
        scaler = cgrad.amp.GradScaler(init_scale=1024.0, device="cuda", enabled=half)
        dt = cgrad.float16 if half else cgrad.float32
        x = cgrad.tensor(X, device="cuda").to(dt)
        y = cgrad.tensor(Y, device="cuda").to(dt)
        losses = []
        for _ in range(60):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.float().item()))
        return losses

    l16, l32 = train(True), train(False)
    assert l16[-1] < 0.2 * l16[0]
    np.testing.assert_allclose(l16[-1], l32[-1], rtol=0.15, atol=0.02)


def test_master_weights_refuses_an_optimizer_without_float16_params():
    p = cgrad.nn.Parameter(cgrad.ones(2))
    with pytest.raises(ValueError, match="no float16 parameters"):
        cgrad.amp.MasterWeights(cgrad.optim.SGD([p], lr=0.1))


def test_float16_tensors_save_and_load(tmp_path):
    h = cgrad.tensor([1.5, -2.0, 65504.0]).half()
    hd = h.cuda()
    cgrad.save({"h": h, "hd": hd}, tmp_path / "f16.safetensors")
    back = cgrad.load(tmp_path / "f16.safetensors")
    assert back["h"].dtype == cgrad.float16 and back["h"].device == "cpu"
    assert back["hd"].dtype == cgrad.float16 and back["hd"].device == "cuda"
    np.testing.assert_array_equal(_bits(host(back["hd"])), _bits(h.numpy()))
