"""RNN/GRU/LSTM and their cells against torch.nn with the same weights,
gradcheck on small sizes, parameter names and bad input."""
import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
from cgrad.autograd import gradcheck
from nn_compare import compare_module

F64 = dict(dtype="float64", atol=1e-10, rtol=1e-8)
F32 = dict(dtype="float32", atol=1e-4, rtol=1e-3)


@pytest.fixture(params=["f64", "f32"])
def prec(request):
    return F64 if request.param == "f64" else F32


CONFIGS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(bias=False, batch_first=True),
]


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("kw", CONFIGS)
def test_recurrent_matches_torch_without_h0(torch, rng, cls, kw, prec):
    shape = (2, 5, 3) if kw.get("batch_first") else (5, 2, 3)
    ours, theirs = getattr(nn, cls)(3, 4, **kw), getattr(torch.nn, cls)(3, 4, **kw)
    compare_module(ours, theirs, torch, [rng.standard_normal(shape)], **prec)


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("kw", [dict(num_layers=2, bidirectional=True), dict(batch_first=True)])
def test_recurrent_matches_torch_with_h0(torch, rng, cls, kw):
    d = 2 if kw.get("bidirectional") else 1
    layers = kw.get("num_layers", 1)
    x = rng.standard_normal((2, 4, 3) if kw.get("batch_first") else (4, 2, 3))
    h0 = rng.standard_normal((layers * d, 2, 5))
    ours, theirs = getattr(nn, cls)(3, 5, **kw), getattr(torch.nn, cls)(3, 5, **kw)
    if cls == "LSTM":
        c0 = rng.standard_normal((layers * d, 2, 5))
        compare_module(ours, theirs, torch, [x, h0, c0], call=lambda m, x, h, c: m(x, (h, c)), **F64)
    else:
        compare_module(ours, theirs, torch, [x, h0], **F64)


def test_rnn_relu_and_positional_nonlinearity(torch, rng):
    ours, theirs = nn.RNN(3, 4, 2, "relu"), torch.nn.RNN(3, 4, 2, "relu")
    assert ours.nonlinearity == "relu" and ours.num_layers == 2
    compare_module(ours, theirs, torch, [rng.standard_normal((6, 2, 3))], **F64)
    compare_module(nn.RNN(3, 4, nonlinearity="relu", bidirectional=True),
                   torch.nn.RNN(3, 4, nonlinearity="relu", bidirectional=True), torch,
                   [rng.standard_normal((6, 2, 3))], **F64)


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
def test_recurrent_unbatched_matches_torch(torch, rng, cls):
    x, h0 = rng.standard_normal((5, 3)), rng.standard_normal((2, 4))
    ours, theirs = getattr(nn, cls)(3, 4, num_layers=2), getattr(torch.nn, cls)(3, 4, num_layers=2)
    compare_module(ours, theirs, torch, [x], **F64)
    if cls == "LSTM":
        compare_module(ours, theirs, torch, [x, h0, h0 * 0.5], call=lambda m, x, h, c: m(x, (h, c)), **F64)
    else:
        compare_module(ours, theirs, torch, [x, h0], **F64)


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
def test_recurrent_state_dict_keys_equal_torch(torch, cls):
    kw = dict(num_layers=3, bidirectional=True)
    ours, theirs = getattr(nn, cls)(3, 4, **kw), getattr(torch.nn, cls)(3, 4, **kw)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert tuple(ours.state_dict()[k].shape) == tuple(v.shape), k
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("cls,gates", [("RNN", 1), ("GRU", 3), ("LSTM", 4)])
def test_recurrent_default_init_bounds(cls, gates):
    m = getattr(nn, cls)(10, 16, num_layers=2)
    bound = 1 / np.sqrt(16)
    for name, p in m.named_parameters():
        v = p.detach().numpy()
        assert v.shape[0] == gates * 16, name
        assert np.all(np.abs(v) <= bound), name
    allv = np.concatenate([p.detach().numpy().ravel() for p in m.parameters()])
    # U(-b, b): mean 0, std b / sqrt(3)
    assert abs(allv.mean()) < 5 * (bound / np.sqrt(3)) / np.sqrt(allv.size)  # 5 standard errors
    assert abs(allv.std() - bound / np.sqrt(3)) < 0.03 * bound


def test_dropout_between_layers():
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5)
    x = cgrad.randn(5, 2, 3)
    a = m(x)[0].detach().numpy()
    b = m(x)[0].detach().numpy()
    assert not np.allclose(a, b)  # training: dropout masks differ
    m.eval()
    np.testing.assert_array_equal(m(x)[0].detach().numpy(), m(x)[0].detach().numpy())
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.GRU(3, 4, dropout=0.2)


def test_dropout_zero_in_eval_matches_torch(torch, rng):
    ours, theirs = nn.GRU(3, 4, num_layers=2, dropout=0.3), torch.nn.GRU(3, 4, num_layers=2, dropout=0.3)
    ours.eval()
    theirs.eval()
    compare_module(ours, theirs, torch, [rng.standard_normal((5, 2, 3))], **F64)


@pytest.mark.parametrize("cls", ["RNN", "GRU", "LSTM"])
def test_recurrent_gradcheck(rng, cls):
    m = getattr(nn, cls)(2, 3, num_layers=2, bidirectional=True).double()
    x = cgrad.tensor(rng.standard_normal((3, 2, 2)), dtype=cgrad.float64, requires_grad=True)
    h = cgrad.tensor(rng.standard_normal((4, 2, 3)), dtype=cgrad.float64, requires_grad=True)
    if cls == "LSTM":
        c = cgrad.tensor(rng.standard_normal((4, 2, 3)), dtype=cgrad.float64, requires_grad=True)
        assert gradcheck(lambda x, h, c, w: m(x, (h, c))[0] * 1 + m(x, (h, c))[1][1].sum(),
                         (x, h, c, m.weight_hh_l1_reverse))
    else:
        assert gradcheck(lambda x, h, w: m(x, h)[0].sum() + m(x, h)[1].sum(), (x, h, m.weight_ih_l0))


@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_cells_match_torch(torch, rng, cls, bias, prec):
    x, h = rng.standard_normal((4, 3)), rng.standard_normal((4, 5))
    ours, theirs = getattr(nn, cls)(3, 5, bias=bias), getattr(torch.nn, cls)(3, 5, bias=bias)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    compare_module(ours, theirs, torch, [x], **prec)
    if cls == "LSTMCell":
        compare_module(ours, theirs, torch, [x, h, h * 0.3], call=lambda m, x, h, c: m(x, (h, c)), **prec)
        compare_module(ours, theirs, torch, [x[0], h[0], h[1]], call=lambda m, x, h, c: m(x, (h, c)), **prec)
    else:
        compare_module(ours, theirs, torch, [x, h], **prec)
        compare_module(ours, theirs, torch, [x[0], h[0]], **prec)
    assert repr(ours) == repr(theirs)


def test_rnncell_relu_matches_torch(torch, rng):
    ours, theirs = nn.RNNCell(3, 5, nonlinearity="relu"), torch.nn.RNNCell(3, 5, nonlinearity="relu")
    compare_module(ours, theirs, torch, [rng.standard_normal((4, 3)), rng.standard_normal((4, 5))], **F64)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("cls", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cells_gradcheck(rng, cls):
    m = getattr(nn, cls)(2, 3).double()
    x = cgrad.tensor(rng.standard_normal((2, 2)), dtype=cgrad.float64, requires_grad=True)
    h = cgrad.tensor(rng.standard_normal((2, 3)), dtype=cgrad.float64, requires_grad=True)
    if cls == "LSTMCell":
        assert gradcheck(lambda x, h, b: m(x, (h, h * 2))[1] + m(x, (h, h))[0], (x, h, m.bias_ih))
    else:
        assert gradcheck(lambda x, h, w: m(x, h), (x, h, m.weight_hh))


def test_lstm_gate_order_is_ifgo():
    """With W = 0 the gates are sigmoid/tanh of the biases alone: set one
    gate block at a time and check which output changes, as PyTorch's
    (i, f, g, o) layout dictates."""
    m = nn.LSTMCell(1, 1).double()
    for p in m.parameters():
        cgrad.nn.init.zeros_(p)
    x = cgrad.zeros(1, 1, dtype=cgrad.float64)
    c0 = cgrad.ones(1, 1, dtype=cgrad.float64)
    with cgrad.no_grad():
        m.bias_ih.copy_(cgrad.tensor([0.0, 0.0, 2.0, 0.0], dtype=cgrad.float64))  # g = tanh(2)
    h, c = m(x, (c0 * 0, c0))
    i, f, g, o = 0.5, 0.5, np.tanh(2.0), 0.5
    np.testing.assert_allclose(c.item(), f * 1 + i * g)
    np.testing.assert_allclose(h.item(), o * np.tanh(f + i * g))


@pytest.mark.parametrize("make,exc,match", [
    (lambda: nn.RNN(3, 4, nonlinearity="gelu"), ValueError, "Unknown nonlinearity 'gelu'"),
    (lambda: nn.LSTM(3, 0), ValueError, "hidden_size must be >= 1, got 0"),
    (lambda: nn.GRU(-3, 4), ValueError, "input_size must be >= 0, got -3"),
    (lambda: nn.GRU(3, 4, num_layers=0), ValueError, "num_layers must be >= 1, got 0"),
    (lambda: nn.LSTM(3, 4, dropout=1.5), ValueError, "dropout"),
    (lambda: nn.LSTM(3, 4, proj_size=2), NotImplementedError, "proj_size"),
    (lambda: nn.GRU(3, 4, proj_size=2), ValueError, "only supported for LSTM"),
    (lambda: nn.RNNCell(3, 4, nonlinearity="x"), ValueError, "Unknown nonlinearity"),
])
def test_bad_constructor_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_forward_inputs():
    m = nn.GRU(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"Expected 3, got input of shape \(5, 2, 2\)"):
        m(cgrad.randn(5, 2, 2))
    with pytest.raises(ValueError, match=r"hx of size \(2, 2, 4\), got \(1, 2, 4\)"):
        m(cgrad.randn(5, 2, 3), cgrad.randn(1, 2, 4))
    with pytest.raises(ValueError, match="2D .unbatched. or 3D"):
        m(cgrad.randn(5, 2, 3, 1))
    with pytest.raises(TypeError, match="float64 does not match"):
        m(cgrad.randn(5, 2, 3, dtype=cgrad.float64))
    lstm = nn.LSTM(3, 4)
    with pytest.raises(TypeError, match=r"tuple \(h_0, c_0\)"):
        lstm(cgrad.randn(5, 2, 3), cgrad.randn(1, 2, 4))
    with pytest.raises(ValueError, match="c_0 of size"):
        lstm(cgrad.randn(5, 2, 3), (cgrad.randn(1, 2, 4), cgrad.randn(1, 3, 4)))
    cell = nn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match="inconsistent input_size"):
        cell(cgrad.randn(2, 5))
    with pytest.raises(ValueError, match=r"hidden state 1 has shape \(3, 4\)"):
        cell(cgrad.randn(2, 3), (cgrad.randn(2, 4), cgrad.randn(3, 4)))
    with pytest.raises(ValueError, match="1D or 2D"):
        nn.GRUCell(3, 4)(cgrad.randn(1, 2, 3))
