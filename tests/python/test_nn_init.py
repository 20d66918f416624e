"""cgrad.nn.init and the layers' default initialisation: distributions over
many samples, fans and gains against torch's, in place and unrecorded."""
import math

import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
from cgrad.nn import init


def _big(*shape, dtype=cgrad.float64):
    return cgrad.empty(*shape, dtype=dtype, requires_grad=True)


def _stats(t):
    v = t.detach().numpy().astype(np.float64).ravel()
    return v, v.mean(), v.std()


@pytest.mark.parametrize("shape", [(3, 4), (5, 2, 3), (6, 4, 3, 2), (2, 7, 1, 1, 3)])
def test_fan_in_and_fan_out_equal_torch(torch, shape):
    ours = init._calculate_fan_in_and_fan_out(cgrad.empty(*shape))
    theirs = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*shape))
    assert ours == theirs


def test_fan_needs_two_dims():
    with pytest.raises(ValueError, match=r"fewer than 2 dimensions \(got shape \(4,\)\)"):
        init._calculate_fan_in_and_fan_out(cgrad.empty(4))


@pytest.mark.parametrize("args", [("linear",), ("conv2d",), ("sigmoid",), ("tanh",), ("relu",),
                                  ("leaky_relu",), ("leaky_relu", 0.2), ("leaky_relu", 3), ("selu",)])
def test_calculate_gain_equals_torch(torch, args):
    assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args), rel=1e-15)


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity swish"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", True)


def _check_uniform(t, lo, hi):
    v, mean, std = _stats(t)
    n = v.size
    assert v.min() >= lo and v.max() <= hi
    assert v.min() < lo + (hi - lo) * 0.01 and v.max() > hi - (hi - lo) * 0.01
    sd = (hi - lo) / math.sqrt(12)
    assert abs(mean - (lo + hi) / 2) < 5 * sd / math.sqrt(n)
    assert abs(std - sd) < 0.02 * sd


def _check_normal(t, mean, sd):
    v, m, s = _stats(t)
    assert abs(m - mean) < 5 * sd / math.sqrt(v.size)
    assert abs(s - sd) < 0.02 * sd
    # tails like a Gaussian: about 4.55% beyond 2 sd
    assert abs(np.mean(np.abs(v - mean) > 2 * sd) - 0.0455) < 0.01


def test_uniform_normal_constant_in_place_without_recording():
    t = _big(100, 200)
    same = init.uniform_(t, -2.0, 3.0)
    assert same is t and t.is_leaf and t.grad_fn is None and t.requires_grad
    _check_uniform(t, -2.0, 3.0)
    init.normal_(t, 1.5, 0.5)
    _check_normal(t, 1.5, 0.5)
    init.constant_(t, 0.25)
    assert np.all(t.detach().numpy() == 0.25)
    init.ones_(t)
    assert np.all(t.detach().numpy() == 1)
    init.zeros_(t)
    assert np.all(t.detach().numpy() == 0)
    t32 = _big(10, 10, dtype=cgrad.float32)
    init.normal_(t32)
    assert t32.dtype == cgrad.float32


def test_trunc_normal_bounds_and_moments(torch):
    t = _big(200, 250)
    init.trunc_normal_(t, mean=0.5, std=2.0, a=-1.0, b=3.0)
    v, m, s = _stats(t)
    assert v.min() >= -1.0 and v.max() <= 3.0
    ref = torch.nn.init.trunc_normal_(torch.empty(400, 500, dtype=torch.float64), 0.5, 2.0, -1.0, 3.0)
    # the truncated distribution's moments: torch's sample as the reference
    assert abs(m - ref.mean().item()) < 0.02
    assert abs(s - ref.std().item()) < 0.02
    # a density check: the truncated density is flat-ish around the mean
    hist, _ = np.histogram(v, bins=8, range=(-1, 3))
    thist, _ = np.histogram(ref.numpy(), bins=8, range=(-1, 3))
    np.testing.assert_allclose(hist / v.size, thist / ref.numel(), atol=0.01)


def test_eye_and_dirac_equal_torch(torch):
    t = _big(3, 5)
    init.eye_(t)
    np.testing.assert_array_equal(t.detach().numpy(), torch.nn.init.eye_(torch.empty(3, 5)).numpy())
    w = _big(4, 2, 3, 3)
    init.dirac_(w, groups=2)
    np.testing.assert_array_equal(w.detach().numpy(),
                                  torch.nn.init.dirac_(torch.empty(4, 2, 3, 3), groups=2).numpy())
    with pytest.raises(ValueError, match="2 dimensions"):
        init.eye_(_big(2, 2, 2))


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
def test_xavier_and_kaiming_match_torch_formulas(shape):
    t = _big(*shape)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(t)
    init.xavier_uniform_(t, gain=2.0)
    a = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    _check_uniform(t, -a, a)
    init.xavier_normal_(t, gain=0.5)
    _check_normal(t, 0.0, 0.5 * math.sqrt(2.0 / (fan_in + fan_out)))
    init.kaiming_uniform_(t, a=math.sqrt(5))
    bound = math.sqrt(6 / ((1 + 5) * fan_in))  # gain sqrt(2/(1+a^2)) * sqrt(3/fan_in)
    _check_uniform(t, -bound, bound)
    init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
    _check_normal(t, 0.0, math.sqrt(2.0 / fan_out))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_normal_(t, mode="fan_avg")


def test_kaiming_zero_element_warns():
    with pytest.warns(UserWarning, match="zero-element"):
        init.kaiming_uniform_(cgrad.empty(0, 3))


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (5, 2, 3)])
def test_orthogonal(shape):
    t = _big(*shape)
    init.orthogonal_(t, gain=1.5)
    m = t.detach().numpy().reshape(shape[0], -1)
    rows, cols = m.shape
    if rows <= cols:
        np.testing.assert_allclose(m @ m.T, 2.25 * np.eye(rows), atol=1e-12)
    else:
        np.testing.assert_allclose(m.T @ m, 2.25 * np.eye(cols), atol=1e-12)
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(_big(3))


def test_init_rejects_non_tensors_and_bad_ranges():
    with pytest.raises(TypeError, match="list"):
        init.uniform_([1.0, 2.0])
    with pytest.raises(TypeError, match="floating"):
        init.normal_(cgrad.tensor([1, 2]))
    with pytest.raises(ValueError, match="std >= 0.0, but found std -1"):
        init.normal_(_big(3), std=-1)
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(_big(3), 2, 1)


def test_init_follows_cgrad_seed():
    cgrad.manual_seed(5)
    a = nn.Linear(4, 3).weight.detach().numpy().copy()
    cgrad.manual_seed(5)
    b = nn.Linear(4, 3).weight.detach().numpy().copy()
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- default init
def _layer_bounds(fan_in):
    return 1 / math.sqrt(fan_in)


def test_linear_default_init_distribution():
    m = nn.Linear(400, 300).double()
    b = _layer_bounds(400)  # kaiming_uniform_(a=sqrt(5)) gives the same bound as the bias
    _check_uniform(m.weight, -b, b)
    v = m.bias.detach().numpy()
    assert np.all(np.abs(v) <= b) and v.std() == pytest.approx(b / math.sqrt(3), rel=0.15)


def test_conv2d_default_init_distribution():
    m = nn.Conv2d(32, 64, 5, groups=2)
    fan_in = 16 * 25
    b = _layer_bounds(fan_in)
    _check_uniform(m.weight, -b, b)
    assert np.all(np.abs(m.bias.detach().numpy()) <= b)


def test_embedding_layernorm_batchnorm_default_init():
    e = nn.Embedding(500, 200, padding_idx=3)
    w = e.weight.detach().numpy()
    assert np.all(w[3] == 0)
    np.testing.assert_allclose(np.delete(w, 3, 0).std(), 1.0, rtol=0.02)
    ln = nn.LayerNorm((3, 4))
    assert np.all(ln.weight.detach().numpy() == 1) and np.all(ln.bias.detach().numpy() == 0)
    bn = nn.BatchNorm1d(5)
    assert np.all(bn.weight.detach().numpy() == 1) and np.all(bn.bias.detach().numpy() == 0)
    assert np.all(bn.running_mean.numpy() == 0) and np.all(bn.running_var.numpy() == 1)
    assert bn.num_batches_tracked.item() == 0 and bn.num_batches_tracked.dtype == cgrad.int64


def test_default_dtype_and_dtype_argument():
    assert nn.Linear(2, 3).weight.dtype == cgrad.float32
    assert nn.Linear(2, 3, dtype=cgrad.float64).weight.dtype == cgrad.float64
    assert nn.LSTM(2, 3, dtype=cgrad.float64).weight_hh_l0.dtype == cgrad.float64
    with pytest.raises(TypeError, match="float32, float64 or float16"):
        nn.Linear(2, 3, dtype=cgrad.int64)
