"""Layers against torch.nn with the same weights: forward values, input and
parameter gradients (float64 tight, float32 loose), gradcheck, bad input."""
import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
import cgrad.nn.functional as F
from cgrad.autograd import gradcheck
from nn_compare import compare_module

F64 = dict(dtype="float64", atol=1e-10, rtol=1e-8)
F32 = dict(dtype="float32", atol=1e-4, rtol=1e-3)


@pytest.fixture(params=["f64", "f32"])
def prec(request):
    return F64 if request.param == "f64" else F32


def test_linear_matches_torch(torch, rng, prec):
    compare_module(nn.Linear(5, 3), torch.nn.Linear(5, 3), torch, [rng.standard_normal((4, 5))], **prec)
    compare_module(nn.Linear(5, 3, bias=False), torch.nn.Linear(5, 3, bias=False), torch,
                   [rng.standard_normal((2, 4, 5))], **prec)


def test_identity_flatten_unflatten(torch, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    compare_module(nn.Identity(3, k=1), torch.nn.Identity(3, k=1), torch, [x], **F64)
    compare_module(nn.Flatten(), torch.nn.Flatten(), torch, [x], **F64)
    compare_module(nn.Flatten(0, 2), torch.nn.Flatten(0, 2), torch, [x], **F64)
    compare_module(nn.Unflatten(1, (3, 1)), torch.nn.Unflatten(1, (3, 1)), torch, [x], **F64)
    compare_module(nn.Unflatten(-1, (-1, 5)), torch.nn.Unflatten(-1, (-1, 5)), torch, [x], **F64)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(stride=2, padding=1),
    dict(padding=2, dilation=2, bias=False),
    dict(groups=2, stride=(2, 1), padding=(1, 0)),
    dict(padding="same"),
    dict(padding="same", dilation=(1, 2)),
    dict(padding="valid"),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own note on even kernels
def test_conv2d_matches_torch(torch, rng, kw, prec):
    ks = (3, 2) if kw.get("padding") == "same" else 3
    x = rng.standard_normal((2, 4, 7, 6))
    compare_module(nn.Conv2d(4, 6, ks, **kw), torch.nn.Conv2d(4, 6, ks, **kw), torch, [x], **prec)


def test_conv2d_unbatched_and_repr(torch, rng):
    ours, theirs = nn.Conv2d(2, 3, 3, padding=1, groups=1, bias=False), torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    compare_module(ours, theirs, torch, [rng.standard_normal((2, 5, 5))], **F64)
    assert repr(ours) == repr(theirs)
    assert repr(nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)) == \
        repr(torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2))


@pytest.mark.parametrize("cls,kw", [
    ("MaxPool2d", dict(kernel_size=2)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("AvgPool2d", dict(kernel_size=2)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1)),
    ("AvgPool2d", dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=2, divisor_override=3)),
    ("MaxPool2d", dict(kernel_size=2, ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("MaxPool2d", dict(kernel_size=(2, 3), stride=(3, 2), ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=2, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ("AvgPool2d", dict(kernel_size=(2, 3), stride=(3, 2), ceil_mode=True, divisor_override=2)),
])
def test_pooling_matches_torch(torch, rng, cls, kw, prec):
    x = rng.standard_normal((2, 3, 6, 7))
    compare_module(getattr(nn, cls)(**kw), getattr(torch.nn, cls)(**kw), torch, [x], **prec)
    compare_module(getattr(nn, cls)(**kw), getattr(torch.nn, cls)(**kw), torch, [x[0]], **prec)


@pytest.mark.parametrize("name,args", [
    ("ReLU", ()), ("LeakyReLU", (0.2,)), ("ELU", (0.7,)), ("GELU", ()), ("GELU", ("tanh",)),
    ("Sigmoid", ()), ("Tanh", ()), ("Softplus", (2.0, 1.0)), ("Softmax", (1,)), ("LogSoftmax", (-1,)),
    ("Softmax", (0,)),
])
def test_activations_match_torch(torch, rng, name, args, prec):
    x = rng.standard_normal((4, 5)) * 2
    ours, theirs = getattr(nn, name)(*args), getattr(torch.nn, name)(*args)
    compare_module(ours, theirs, torch, [x], **prec)
    assert repr(ours) == repr(theirs)


def test_softmax_implicit_dim_warns_like_torch(torch, rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.warns(UserWarning):
        ours = nn.Softmax()(cgrad.tensor(x))
    with pytest.warns(UserWarning):
        theirs = torch.nn.Softmax()(torch.tensor(x))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)


def test_dropout_train_and_eval():
    d = nn.Dropout(0.3)
    x = cgrad.ones(2000, dtype=cgrad.float64, requires_grad=True)
    y = d(x)
    vals = np.unique(np.round(y.detach().numpy(), 6))
    assert set(vals) <= {0.0, round(1 / 0.7, 6)}
    kept = float((y.detach().numpy() != 0).mean())
    assert abs(kept - 0.7) < 0.05  # 2000 Bernoulli(0.7) draws: sd 0.01
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.detach().numpy())  # mask / (1 - p)
    d.eval()
    np.testing.assert_array_equal(d(x).detach().numpy(), np.ones(2000))
    assert repr(d) == "Dropout(p=0.3, inplace=False)"
    with pytest.raises(ValueError, match="1.5"):
        nn.Dropout(1.5)


def test_embedding_matches_torch(torch, prec):
    idx = np.array([[1, 2, 0, 4], [4, 3, 2, 9]])
    compare_module(nn.Embedding(10, 3), torch.nn.Embedding(10, 3), torch, [idx], **prec)


def test_embedding_padding_idx_matches_torch(torch):
    idx = np.array([[1, 2, 0, 4], [4, 3, 0, 2]])
    ours = nn.Embedding(6, 3, padding_idx=0)
    np.testing.assert_array_equal(ours.weight.detach().numpy()[0], 0)
    with cgrad.no_grad():  # a nonzero padding row: still returned, still no gradient
        ours.weight[0].fill_(0.5)
    compare_module(ours, torch.nn.Embedding(6, 3, padding_idx=0), torch, [idx], **F64)
    np.testing.assert_array_equal(ours.weight.grad.numpy()[0], 0)
    neg = nn.Embedding(6, 3, padding_idx=-1)
    assert neg.padding_idx == 5


def test_embedding_scale_grad_by_freq_and_max_norm_match_torch(torch):
    idx = np.array([[1, 2, 1, 1], [4, 3, 2, 1]])
    compare_module(nn.Embedding(6, 3, scale_grad_by_freq=True),
                   torch.nn.Embedding(6, 3, scale_grad_by_freq=True), torch, [idx], **F64)
    ours, theirs = nn.Embedding(6, 3, max_norm=1.0), torch.nn.Embedding(6, 3, max_norm=1.0)
    compare_module(ours, theirs, torch, [idx], **F64)
    np.testing.assert_allclose(ours.weight.detach().numpy(), theirs.weight.detach().numpy(), atol=1e-12)


def test_embedding_errors():
    # sparse=True is supported now (tests/python/test_sparse.py)
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match="num_embeddings must be >= 0, got -1"):
        nn.Embedding(-1, 2)
    e = nn.Embedding(5, 2)
    with pytest.raises(IndexError):
        e(cgrad.tensor([1, 7]))


def test_embedding_from_pretrained():
    w = cgrad.randn(4, 3)
    e = nn.Embedding.from_pretrained(w)
    assert not e.weight.requires_grad
    np.testing.assert_array_equal(e(cgrad.tensor([2])).numpy()[0], w.numpy()[2])


@pytest.mark.parametrize("kw", [dict(), dict(elementwise_affine=False), dict(bias=False), dict(eps=1e-2)])
def test_layernorm_matches_torch(torch, rng, kw, prec):
    x = rng.standard_normal((3, 4, 5)) * 3 + 1
    ours, theirs = nn.LayerNorm(5, **kw), torch.nn.LayerNorm(5, **kw)
    for p in ours.parameters():  # non-trivial affine parameters
        cgrad.nn.init.uniform_(p, -1, 2)
    compare_module(ours, theirs, torch, [x], **prec)
    compare_module(nn.LayerNorm((4, 5), **kw), torch.nn.LayerNorm((4, 5), **kw), torch, [x], **prec)


def test_layernorm_gradcheck(rng):
    x = cgrad.tensor(rng.standard_normal((3, 4)), dtype=cgrad.float64, requires_grad=True)
    w = cgrad.tensor(rng.standard_normal(4), dtype=cgrad.float64, requires_grad=True)
    b = cgrad.tensor(rng.standard_normal(4), dtype=cgrad.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (4,), w, b), (x, w, b))
    m = nn.LayerNorm((3, 4)).double()
    assert gradcheck(lambda x: m(x), (x,))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
@pytest.mark.parametrize("kw", [dict(), dict(momentum=None), dict(affine=False), dict(momentum=0.3, eps=1e-3),
                                dict(bias=False)])
def test_batchnorm1d_matches_torch_train_and_eval(torch, rng, shape, kw, prec):
    ours, theirs = nn.BatchNorm1d(3, **kw), torch.nn.BatchNorm1d(3, **kw)
    for step in range(3):
        x = rng.standard_normal(shape) * 2 + step
        compare_module(ours, theirs, torch, [x], seed=step, **prec)
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(getattr(ours, name).numpy(), getattr(theirs, name).numpy(),
                                       rtol=prec["rtol"], atol=prec["atol"])
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == step + 1
        ours.zero_grad()
        theirs.zero_grad()
    ours.eval()
    theirs.eval()
    compare_module(ours, theirs, torch, [rng.standard_normal(shape)], **prec)


def test_batchnorm1d_no_running_stats_matches_torch(torch, rng):
    ours, theirs = nn.BatchNorm1d(3, track_running_stats=False), torch.nn.BatchNorm1d(3, track_running_stats=False)
    assert ours.running_mean is None and "running_mean" not in ours.state_dict()
    compare_module(ours, theirs, torch, [rng.standard_normal((5, 3))], **F64)
    ours.eval()
    theirs.eval()  # still batch statistics
    compare_module(ours, theirs, torch, [rng.standard_normal((5, 3))], **F64)


def test_batchnorm1d_gradcheck_train_mode(rng):
    m = nn.BatchNorm1d(3).double()
    cgrad.nn.init.uniform_(m.weight, 0.5, 1.5)
    x = cgrad.tensor(rng.standard_normal((4, 3, 2)), dtype=cgrad.float64, requires_grad=True)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, True), (x, m.weight, m.bias))
    assert gradcheck(lambda x: m(x), (x,))


def test_batchnorm1d_errors():
    m = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(cgrad.randn(1, 3))
    with pytest.raises(ValueError, match=r"2D or 3D input \(got 4D"):
        m(cgrad.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="3 features"):
        m(cgrad.randn(2, 4))
    m.eval()
    assert m(cgrad.randn(1, 3)).shape == (1, 3)  # eval: running stats, one sample is fine


def test_layer_reprs_match_torch(torch):
    pairs = [
        (nn.Linear(3, 4), torch.nn.Linear(3, 4)),
        (nn.Linear(3, 4, bias=False), torch.nn.Linear(3, 4, bias=False)),
        (nn.LayerNorm(5), torch.nn.LayerNorm(5)),
        (nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)),
        (nn.Embedding(5, 3, padding_idx=1), torch.nn.Embedding(5, 3, padding_idx=1)),
        (nn.Flatten(), torch.nn.Flatten()),
        (nn.LeakyReLU(0.1), torch.nn.LeakyReLU(0.1)),
        (nn.Softplus(), torch.nn.Softplus()),
        (nn.Sequential(nn.Linear(2, 3), nn.Tanh()), torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh())),
        (nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Tanh()]),
         torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.Tanh()])),
    ]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("make,match", [
    (lambda: nn.Linear(-1, 3), "in_features must be >= 0, got -1"),
    (lambda: nn.Linear(3, -2), "out_features must be >= 0, got -2"),
    (lambda: nn.Conv2d(3, 4, 0), "kernel_size must be >= 1, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), r"in_channels \(3\) must be divisible by groups \(2\)"),
    (lambda: nn.Conv2d(4, 3, 3, groups=2), r"out_channels \(3\) must be divisible by groups \(2\)"),
    (lambda: nn.Conv2d(4, 4, 3, stride=2, padding="same"), "strided"),
    (lambda: nn.Conv2d(4, 4, 3, padding="full"), "'full'"),
    (lambda: nn.MaxPool2d(2, padding=2), "at most half"),
    (lambda: nn.AvgPool2d(3, padding=2), "at most half"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), "divisor_override must be a positive int, got 0"),
    (lambda: nn.LayerNorm(-3), "normalized_shape must be >= 0, got -3"),
    (lambda: nn.BatchNorm1d(-1), "num_features must be >= 0, got -1"),
    (lambda: nn.GELU("fast"), "'fast'"),
])
def test_bad_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_forward_inputs():
    with pytest.raises(ValueError, match=r"in_features=5, got input of shape \(2, 4\)"):
        nn.Linear(5, 3)(cgrad.randn(2, 4))
    with pytest.raises(TypeError, match="list"):
        nn.Linear(5, 3)([1.0] * 5)
    with pytest.raises(ValueError, match=r"3 channels, got input of shape \(1, 2, 5, 5\)"):
        nn.Conv2d(3, 4, 3)(cgrad.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="4-D"):
        nn.Conv2d(3, 4, 3)(cgrad.randn(3, 5))
    with pytest.raises(ValueError, match=r"normalized_shape=\[4\]"):
        nn.LayerNorm(4)(cgrad.randn(2, 3))
    with pytest.raises(ValueError, match="kernel size 5"):
        nn.MaxPool2d(5, ceil_mode=True)(cgrad.randn(1, 1, 3, 3))
    with pytest.raises(NotImplementedError, match="return_indices"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(NotImplementedError, match="reflect"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="Linear: device 'cuda:1': only index 0"):
        nn.Linear(2, 2, device="cuda:1")
    with pytest.raises(ValueError, match="Linear: unknown device type 'tpu'"):
        nn.Linear(2, 2, device="tpu")
