"""nn on the "cuda" device: Module.to / cuda / cpu (parameter identity,
gradients, buffers), layers built with device=, every layer's forward and
gradients on "cuda" against the CPU backend, losses, init, DataLoader,
clipping, the benchmark and the errors a user gets.

In CI "cuda" is the NumPy reference device (device_util.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
import cgrad.nn.functional as F
from cgrad.nn import init
from device_util import assert_same_values, host

F64 = cgrad.float64


def _seeded(make, seed=0):
    cgrad.manual_seed(seed)
    return make()


def _pair(make, dtype=F64):
    """The same module (same seed) on the cpu and on "cuda"."""
    cpu = _seeded(make).to(dtype)
    dev = _seeded(make).to("cuda", dtype)
    return cpu, dev


def _flat(out):
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat(o)]
    return [] if out is None else [out]


def compare_layer(make, shape=None, *, data=None, dtype=F64, grad_input=True, rtol=1e-10, atol=1e-12,
                  call=None):
    """Runs make() on the cpu and on "cuda" with the same weights and input,
    and compares outputs, the input's gradient and every parameter's
    gradient of sum(out * v) for a random v (backward with v as the
    gradient: no reduction needed)."""
    cpu, dev = _pair(make, dtype)
    rng = np.random.default_rng(1)
    arr = rng.standard_normal(shape) if data is None else data
    x = cgrad.tensor(arr, dtype=dtype if grad_input else None, requires_grad=grad_input)
    xd = cgrad.tensor(arr, dtype=dtype if grad_input else None, requires_grad=grad_input, device="cuda")
    call = call or (lambda m, t: m(t))
    cgrad.manual_seed(11)  # random layers (dropout) draw the same host stream on both devices
    outs = _flat(call(cpu, x))
    cgrad.manual_seed(11)
    outs_d = _flat(call(dev, xd))
    assert len(outs) == len(outs_d)
    for o, od in zip(outs, outs_d):
        assert_same_values(o, od, rtol=rtol, atol=atol)
    v = rng.standard_normal(tuple(outs[0].shape))
    outs[0].backward(cgrad.tensor(v, dtype=outs[0].dtype))
    outs_d[0].backward(cgrad.tensor(v, dtype=outs[0].dtype, device="cuda"))
    if grad_input:
        assert xd.grad.device == "cuda"
        assert_same_values(x.grad, xd.grad, rtol=rtol, atol=atol)
    for (name, p), (name_d, pd) in zip(cpu.named_parameters(), dev.named_parameters()):
        assert name == name_d and pd.device == "cuda"
        if p.grad is None:
            assert pd.grad is None, name
            continue
        assert pd.grad.device == "cuda", name
        assert_same_values(p.grad, pd.grad, rtol=rtol, atol=atol)
    return cpu, dev


class Scale(nn.Module):
    """A layer made of elementwise ops only (runs on main's device ops)."""

    def __init__(self, n):
        super().__init__()
        self.scale = nn.Parameter(cgrad.tensor(np.linspace(0.5, 1.5, n), dtype=F64))
        self.register_buffer("shift", cgrad.full((n,), 0.25, dtype=F64))
        self.register_buffer("count", cgrad.tensor(3))

    def forward(self, x):
        return (x * self.scale + self.shift).tanh()


# ----------------------------------------------------------------- Module.to
def test_to_cuda_keeps_parameter_identity_and_moves_buffers():
    m = nn.Sequential(Scale(4), nn.ReLU(), Scale(4))
    params = list(m.parameters())
    ids = [id(p) for p in params]
    values = [host(p) for p in params]
    assert m.cuda() is m
    assert [id(p) for p in m.parameters()] == ids
    for p, v in zip(m.parameters(), values):
        assert type(p) is nn.Parameter and p.device == "cuda" and p.is_leaf and p.requires_grad
        np.testing.assert_array_equal(host(p), v)
    assert all(b.device == "cuda" for b in m.buffers())
    assert m[0].count.dtype == cgrad.int64 and m[0].count.item() == 3  # integer buffers move too
    assert m.cpu() is m and all(p.device == "cpu" for p in m.parameters())
    assert all(b.device == "cpu" for b in m.buffers())
    assert [id(p) for p in m.parameters()] == ids


def test_gradients_move_with_their_parameters():
    m = Scale(3)
    x = cgrad.tensor([0.1, -0.4, 2.0], dtype=F64)
    m(x).backward(cgrad.ones(3, dtype=F64))
    g = host(m.scale.grad)
    m.cuda()
    assert m.scale.grad is not None and m.scale.grad.device == "cuda"
    np.testing.assert_array_equal(host(m.scale.grad), g)
    # a backward on the device accumulates onto the moved gradient
    m(x.cuda()).backward(cgrad.ones(3, dtype=F64, device="cuda"))
    np.testing.assert_allclose(host(m.scale.grad), 2 * g, rtol=1e-12)
    m.to(cgrad.float32)  # dtype only: stays on the device, gradient cast too
    assert m.scale.device == "cuda" and m.scale.dtype == cgrad.float32
    assert m.scale.grad.device == "cuda" and m.scale.grad.dtype == cgrad.float32
    m.cpu()
    assert m.scale.grad.device == "cpu"
    np.testing.assert_allclose(host(m.scale.grad), 2 * g, rtol=1e-6)


def test_to_device_and_dtype_forms():
    m = Scale(2).float()
    m.to("cuda", F64)
    assert m.scale.device == "cuda" and m.scale.dtype == F64 and m.shift.dtype == F64
    assert m.count.dtype == cgrad.int64  # a dtype conversion leaves integer buffers
    m.to(device="cpu", dtype=cgrad.float32)
    assert m.scale.device == "cpu" and m.scale.dtype == cgrad.float32
    m.to(cgrad.zeros(1, dtype=F64, device="cuda"))  # to(tensor): its device and dtype
    assert m.scale.device == "cuda" and m.scale.dtype == F64
    m.cpu().cuda(0)
    assert m.scale.device == "cuda:0"
    m.cpu().to(0)  # an int is a cuda index, as in PyTorch
    assert m.scale.device == "cuda"
    m.cpu().to(cgrad.device("cuda", 0))
    assert m.scale.device == "cuda"
    m.cpu().cuda("cuda:0")
    assert m.scale.device == "cuda"
    m.to(non_blocking=True)  # nothing to do
    assert m.scale.device == "cuda"


def test_hooks_and_optimizer_references_survive_the_move():
    m = Scale(3)
    opt = cgrad.optim.SGD(m.parameters(), lr=0.1)
    seen = []
    m.scale.register_hook(lambda g: seen.append(g.device))
    m.cuda()
    assert opt.param_groups[0]["params"][0] is m.scale and m.scale.device == "cuda"
    m(cgrad.ones(3, dtype=F64, device="cuda")).backward(cgrad.ones(3, dtype=F64, device="cuda"))
    assert seen == [cgrad.device("cuda")]


def test_optimizer_steps_after_the_move():
    m = Scale(3)
    ref = Scale(3)
    opt = cgrad.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    ref_opt = cgrad.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    m.cuda()
    x = cgrad.tensor([0.3, -1.0, 0.5], dtype=F64)
    for _ in range(3):
        opt.zero_grad()
        ref_opt.zero_grad()
        m(x.cuda()).backward(cgrad.ones(3, dtype=F64, device="cuda"))
        ref(x).backward(cgrad.ones(3, dtype=F64))
        opt.step()
        ref_opt.step()
    assert_same_values(ref.scale, m.scale, rtol=1e-12)


def test_zero_grad_on_the_device():
    m = Scale(2).cuda()
    m(cgrad.ones(2, dtype=F64, device="cuda")).backward(cgrad.ones(2, dtype=F64, device="cuda"))
    m.zero_grad(set_to_none=False)
    assert m.scale.grad.device == "cuda"
    np.testing.assert_array_equal(host(m.scale.grad), [0, 0])
    m.zero_grad()
    assert m.scale.grad is None


def test_state_dict_across_devices():
    src = Scale(3).cuda()
    with cgrad.no_grad():
        src.scale.mul_(3.0)
    sd = src.state_dict()
    assert all(v.device == "cuda" for v in sd.values())
    dst = Scale(3)  # on the cpu: values copied over, the model stays where it is
    dst.load_state_dict(sd)
    assert dst.scale.device == "cpu"
    np.testing.assert_array_equal(host(dst.scale), host(src.scale))
    back = Scale(3).cuda()
    with cgrad.no_grad():
        dst.scale.add_(1.0)
    back.load_state_dict(dst.state_dict())
    assert back.scale.device == "cuda"
    np.testing.assert_array_equal(host(back.scale), host(dst.scale))


def test_bad_device_arguments_change_nothing():
    m = Scale(2)
    with pytest.raises(ValueError, match=r"'cuda:1': only index 0"):
        m.to("cuda:1")
    with pytest.raises(ValueError, match="only index 0"):
        m.cuda(1)
    with pytest.raises(ValueError, match="unknown device type 'tpu'"):
        m.to("tpu")
    with pytest.raises(ValueError, match="cuda\\(\\): device must be a 'cuda' device"):
        m.cuda("cpu")
    with pytest.raises(TypeError, match="at most 2 positional"):
        m.to("cuda", F64, False)
    with pytest.raises(TypeError, match="unexpected keyword"):
        m.to(devise="cuda")
    assert m.scale.device == "cpu" and m.shift.device == "cpu"


def test_a_row_sparse_gradient_moves_with_its_parameter():
    m = nn.Sequential(Scale(2), nn.Embedding(5, 2, sparse=True))
    out = m[1](cgrad.tensor([1, 3]))
    out.backward(cgrad.ones(2, 2))
    g = m[1].weight.grad
    assert g.is_sparse
    m.cuda()
    assert all(p.device == "cuda" for p in m.parameters())
    gd = m[1].weight.grad
    assert gd.is_sparse and gd.device == "cuda" and gd.indices().device == "cuda"
    np.testing.assert_array_equal(host(gd.to_dense()), host(g.to_dense()))


def test_cpu_module_on_a_cuda_input_names_both_devices():
    m = Scale(3)
    with pytest.raises(ValueError, match="one device.*'cuda'.*'cpu'|one device.*'cpu'.*'cuda'"):
        m(cgrad.ones(3, dtype=F64, device="cuda"))


# ----------------------------------------------------------------- device= at construction
FACTORIES = {
    "Linear": lambda **kw: nn.Linear(4, 3, **kw),
    "Conv2d": lambda **kw: nn.Conv2d(2, 3, 3, **kw),
    "LayerNorm": lambda **kw: nn.LayerNorm((3, 4), **kw),
    "BatchNorm1d": lambda **kw: nn.BatchNorm1d(3, **kw),
    "Embedding": lambda **kw: nn.Embedding(6, 3, padding_idx=2, **kw),
    "RNN": lambda **kw: nn.RNN(3, 4, num_layers=2, **kw),
    "LSTM": lambda **kw: nn.LSTM(3, 4, bidirectional=True, **kw),
    "GRU": lambda **kw: nn.GRU(3, 4, **kw),
    "RNNCell": lambda **kw: nn.RNNCell(3, 4, **kw),
    "LSTMCell": lambda **kw: nn.LSTMCell(3, 4, **kw),
    "GRUCell": lambda **kw: nn.GRUCell(3, 4, **kw),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_layers_built_on_the_device_match_the_cpu_ones(name):
    make = FACTORIES[name]
    cpu = _seeded(lambda: make(dtype=F64))
    dev = _seeded(lambda: make(device="cuda", dtype=F64))
    assert [n for n, _ in cpu.named_parameters()] == [n for n, _ in dev.named_parameters()]
    for (n, p), (_, pd) in zip(cpu.named_parameters(), dev.named_parameters()):
        assert type(pd) is nn.Parameter and pd.is_leaf and pd.requires_grad, n
        assert_same_values(p, pd, rtol=0, atol=0)  # same draws: init runs on the host stream
    for (n, b), (_, bd) in zip(cpu.named_buffers(), dev.named_buffers()):
        assert_same_values(b, bd, rtol=0, atol=0)
    assert_same_values(cpu.state_dict()[next(iter(cpu.state_dict()))],
                       dev.state_dict()[next(iter(dev.state_dict()))], rtol=0, atol=0)


def test_device_argument_errors_name_the_layer():
    with pytest.raises(ValueError, match="Conv2d: device 'cuda:2': only index 0"):
        nn.Conv2d(1, 1, 1, device="cuda:2")
    with pytest.raises(TypeError, match="LSTM: device must be a str"):
        nn.LSTM(2, 2, device=1.5)
    assert nn.SparseLinear(4, 3, density=0.5, device="cuda").indptr.device == "cuda"
    assert nn.Linear(2, 2, device="cpu").weight.device == "cpu"
    assert nn.Linear(2, 2, device=cgrad.device("cuda")).weight.device == "cuda"


@pytest.mark.parametrize("fn,args", [
    ("uniform_", (-0.5, 2.0)), ("normal_", (0.3, 2.0)), ("trunc_normal_", (0.0, 1.0, -1.0, 1.5)),
    ("xavier_uniform_", ()), ("xavier_normal_", ()), ("kaiming_uniform_", ()), ("kaiming_normal_", ()),
    ("orthogonal_", ()), ("eye_", ()), ("constant_", (0.7,)), ("ones_", ()), ("zeros_", ()),
])
def test_init_fills_device_tensors_like_host_ones(fn, args):
    a = cgrad.empty(5, 4, dtype=F64)
    b = cgrad.empty(5, 4, dtype=F64, device="cuda")
    cgrad.manual_seed(7)
    getattr(init, fn)(a, *args)
    cgrad.manual_seed(7)
    out = getattr(init, fn)(b, *args)
    assert out is b and b.device == "cuda"
    assert_same_values(a, b, rtol=1e-12, atol=1e-12)


def test_dirac_init_on_the_device():
    a = cgrad.empty(4, 2, 3, 3, dtype=F64)
    b = cgrad.empty(4, 2, 3, 3, dtype=F64, device="cuda")
    init.dirac_(a, groups=2)
    init.dirac_(b, groups=2)
    assert_same_values(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------- layers: values and gradients
ELEMENTWISE_LAYERS = {
    "ReLU": nn.ReLU, "LeakyReLU": lambda: nn.LeakyReLU(0.2), "ELU": lambda: nn.ELU(0.7),
    "GELU": nn.GELU, "GELU-tanh": lambda: nn.GELU("tanh"), "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
    "Softplus": lambda: nn.Softplus(2.0, 1.5), "Identity": nn.Identity,
    "Flatten": nn.Flatten, "Unflatten": lambda: nn.Unflatten(1, (2, 6)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_LAYERS))
def test_elementwise_layers_match_the_cpu(name):
    compare_layer(ELEMENTWISE_LAYERS[name], (5, 12) if name != "Flatten" else (5, 3, 4))


def test_a_parameterised_stack_matches_the_cpu():
    # the parameters have the input's shape: no broadcast, so no reduction in backward
    compare_layer(lambda: nn.Sequential(nn.Flatten(0), Scale(12), nn.GELU(), nn.Unflatten(0, (3, 4))),
                  (3, 4))


def test_elementwise_layers_in_float32():
    compare_layer(lambda: nn.Sequential(Scale(6), nn.GELU(), nn.Softplus()), (6,), dtype=cgrad.float32,
                  rtol=1e-6, atol=1e-6)


def test_a_parameter_broadcast_over_the_batch_matches_the_cpu():
    compare_layer(lambda: nn.Sequential(Scale(6), nn.Tanh()), (5, 6))


def test_dropout_in_eval_mode_is_the_identity_on_the_device():
    compare_layer(lambda: nn.Dropout(0.3).eval(), (4, 5))


def test_full_backward_hooks_on_a_device_module():
    m = nn.Tanh().cuda()
    seen = []
    m.register_full_backward_hook(lambda mod, gi, go: seen.append((gi[0].device, go[0].device)))
    m.register_full_backward_pre_hook(lambda mod, go: (go[0] * 2.0,))
    x = cgrad.tensor([0.2, -0.3], dtype=F64, device="cuda", requires_grad=True)
    m(x).backward(cgrad.ones(2, dtype=F64, device="cuda"))
    assert seen == [(cgrad.device("cuda"), cgrad.device("cuda"))]
    np.testing.assert_allclose(host(x.grad), 2 * (1 - np.tanh([0.2, -0.3]) ** 2), rtol=1e-12)


def test_linear_matches_the_cpu():
    compare_layer(lambda: nn.Linear(5, 3), (4, 5))


def test_linear_without_bias_on_3d_input():
    compare_layer(lambda: nn.Linear(5, 3, bias=False), (2, 4, 5))


def test_layer_norm_matches_the_cpu():
    compare_layer(lambda: nn.LayerNorm(6), (4, 6))


def test_batch_norm_training_updates_the_running_stats_on_the_device():
    cpu, dev = compare_layer(lambda: nn.BatchNorm1d(3), (8, 3))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert getattr(dev, name).device == "cuda"
        assert_same_values(getattr(cpu, name), getattr(dev, name), rtol=1e-12)


def test_batch_norm_eval_matches_the_cpu():
    compare_layer(lambda: nn.BatchNorm1d(3).eval(), (5, 3, 2))


def test_conv2d_matches_the_cpu():
    compare_layer(lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 6), rtol=1e-9)


def test_conv2d_same_padding_and_groups():
    compare_layer(lambda: nn.Conv2d(4, 4, (3, 2), padding="same", groups=2), (1, 4, 5, 5), rtol=1e-9)


def test_max_pool_with_ceil_mode_matches_the_cpu():
    compare_layer(lambda: nn.MaxPool2d(2, ceil_mode=True), (2, 1, 5, 5))


def test_avg_pool_with_divisors_matches_the_cpu():
    compare_layer(lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
                  (1, 2, 6, 5))


def test_embedding_matches_the_cpu():
    compare_layer(lambda: nn.Embedding(7, 3, padding_idx=1), data=np.array([[1, 2, 6], [0, 1, 1]]),
                  grad_input=False)


def test_embedding_max_norm_and_scale_grad_by_freq_on_the_device():
    compare_layer(lambda: nn.Embedding(7, 3, max_norm=0.5, scale_grad_by_freq=True),
                  data=np.array([2, 2, 5, 0]), grad_input=False)


def test_embedding_with_a_python_list_input_lands_on_the_weights_device():
    emb = nn.Embedding(4, 2, device="cuda")
    out = F.embedding([1, 3], emb.weight)
    assert out.device == "cuda"


def test_dropout_training_draws_the_host_stream():
    compare_layer(lambda: nn.Dropout(0.4), (6, 5))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_match_the_cpu(kind):
    compare_layer(FACTORIES[kind], (5, 2, 3), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "GRUCell"])
def test_recurrent_cells_match_the_cpu(kind):
    compare_layer(FACTORIES[kind], (2, 3), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("layer", [nn.Softmax, nn.LogSoftmax])
def test_softmax_layers_match_the_cpu(layer):
    compare_layer(lambda: layer(1), (3, 5))


# ----------------------------------------------------------------- losses
ELEMENTWISE_LOSSES = {
    "MSELoss": nn.MSELoss, "L1Loss": nn.L1Loss, "HuberLoss": lambda **kw: nn.HuberLoss(delta=0.7, **kw),
    "SmoothL1Loss": lambda **kw: nn.SmoothL1Loss(beta=0.5, **kw),
    "BCEWithLogitsLoss": nn.BCEWithLogitsLoss, "BCELoss": nn.BCELoss,
    "KLDivLoss": lambda reduction="batchmean": nn.KLDivLoss(reduction=reduction),
}


def _loss_inputs(name, rng):
    pred = rng.standard_normal((4, 3))
    target = rng.standard_normal((4, 3))
    if name == "BCELoss":
        pred = 1 / (1 + np.exp(-pred))
        target = rng.uniform(size=(4, 3))
    if name == "BCEWithLogitsLoss":
        target = rng.uniform(size=(4, 3))
    if name == "KLDivLoss":
        pred = -np.abs(pred)  # log-probabilities
        target = rng.uniform(size=(4, 3))
    return pred, target


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_LOSSES))
def test_unreduced_losses_match_the_cpu(name):
    pred, target = _loss_inputs(name, np.random.default_rng(3))
    loss = ELEMENTWISE_LOSSES[name](reduction="none")
    x = cgrad.tensor(pred, dtype=F64, requires_grad=True)
    xd = cgrad.tensor(pred, dtype=F64, requires_grad=True, device="cuda")
    out = loss(x, cgrad.tensor(target, dtype=F64))
    out_d = loss(xd, cgrad.tensor(target, dtype=F64, device="cuda"))
    assert_same_values(out, out_d, rtol=1e-12, atol=1e-12)
    v = np.random.default_rng(4).standard_normal(out.shape)
    out.backward(cgrad.tensor(v, dtype=F64))
    out_d.backward(cgrad.tensor(v, dtype=F64, device="cuda"))
    assert_same_values(x.grad, xd.grad, rtol=1e-12, atol=1e-12)


def test_loss_targets_given_as_arrays_land_on_the_input_device():
    xd = cgrad.tensor([[0.2, 0.7]], dtype=F64, device="cuda")
    out = F.binary_cross_entropy(xd, np.array([[0.0, 1.0]]), reduction="none")
    assert out.device == "cuda"
    np.testing.assert_allclose(host(out), [[-np.log(0.8), -np.log(0.7)]], rtol=1e-12)
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):  # the checks read device values
        F.binary_cross_entropy(cgrad.tensor([1.5], dtype=F64, device="cuda"),
                               cgrad.tensor([1.0], dtype=F64, device="cuda"))


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_LOSSES))
def test_mean_reduced_losses_match_the_cpu(name):
    pred, target = _loss_inputs(name, np.random.default_rng(5))
    loss = ELEMENTWISE_LOSSES[name]()
    x = cgrad.tensor(pred, dtype=F64, requires_grad=True)
    xd = cgrad.tensor(pred, dtype=F64, requires_grad=True, device="cuda")
    out = loss(x, cgrad.tensor(target, dtype=F64))
    out_d = loss(xd, cgrad.tensor(target, dtype=F64, device="cuda"))
    assert_same_values(out, out_d, rtol=1e-12)
    out.backward()
    out_d.backward()
    assert_same_values(x.grad, xd.grad, rtol=1e-12)


@pytest.mark.parametrize("loss", [lambda: nn.CrossEntropyLoss(label_smoothing=0.1),
                                  lambda: nn.NLLLoss(ignore_index=1),
                                  lambda: nn.FocalLoss(gamma=2.0, alpha=0.25)])
def test_class_losses_match_the_cpu(loss):
    rng = np.random.default_rng(6)
    pred = rng.standard_normal((5, 4))
    target = np.array([0, 3, 1, 2, 1])
    x = cgrad.tensor(pred, dtype=F64, requires_grad=True)
    xd = cgrad.tensor(pred, dtype=F64, requires_grad=True, device="cuda")
    out = loss()(x, cgrad.tensor(target))
    out_d = loss()(xd, cgrad.tensor(target, device="cuda"))
    assert_same_values(out, out_d, rtol=1e-12)
    out.backward()
    out_d.backward()
    assert_same_values(x.grad, xd.grad, rtol=1e-12)


def test_class_loss_target_checks_read_device_targets():
    xd = cgrad.zeros(2, 3, dtype=F64, device="cuda")
    with pytest.raises(IndexError, match="target 7 is out of bounds for 3 classes"):
        F.nll_loss(xd, cgrad.tensor([0, 7], device="cuda"))
    with pytest.raises(IndexError, match="focal_loss: target -3 is out of bounds"):
        F.focal_loss(xd, cgrad.tensor([-3, 1], device="cuda"))


def test_dice_loss_matches_the_cpu():
    rng = np.random.default_rng(8)
    pred = rng.uniform(size=(2, 3, 4))
    target = np.array([[0, 1, 2, 1], [2, 2, 0, 1]])
    x = cgrad.tensor(pred, dtype=F64, requires_grad=True)
    xd = cgrad.tensor(pred, dtype=F64, requires_grad=True, device="cuda")
    out = nn.DiceLoss()(x, cgrad.tensor(target))
    out_d = nn.DiceLoss()(xd, cgrad.tensor(target, device="cuda"))
    assert_same_values(out, out_d, rtol=1e-12)
    out.backward()
    out_d.backward()
    assert_same_values(x.grad, xd.grad, rtol=1e-12)


# ----------------------------------------------------------------- training, clipping, data
def _mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_training_loop_on_the_device_follows_the_cpu_one():
    cpu, dev = _pair(_mlp)
    rng = np.random.default_rng(9)
    xs = rng.standard_normal((16, 6))
    ys = rng.integers(0, 3, 16)
    losses = []
    for model in (cpu, dev):
        where = model.get_parameter("0.weight").device
        opt = cgrad.optim.Adam(model.parameters(), lr=1e-2)
        x = cgrad.tensor(xs, dtype=F64, device=where)
        y = cgrad.tensor(ys, device=where)
        run = []
        for _ in range(5):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            run.append(loss.item())
        losses.append(run)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-10)
    for p, pd in zip(cpu.parameters(), dev.parameters()):
        assert_same_values(p, pd, rtol=1e-9, atol=1e-12)


def test_clip_grad_norm_returns_the_norm_on_the_gradients_device():
    m = Scale(4).cuda()
    m(cgrad.ones(4, dtype=F64, device="cuda")).backward(cgrad.ones(4, dtype=F64, device="cuda"))
    total = nn.utils.clip_grad_norm_(m.parameters(), 0.1)
    assert total.device == "cuda"
    assert m.scale.grad.device == "cuda"


def test_data_loader_batches_device_tensors_in_order():
    xs = cgrad.arange(10, dtype=F64).reshape(5, 2).cuda()
    ys = cgrad.arange(5).cuda()
    batches = list(cgrad.utils.data.DataLoader((xs, ys), batch_size=2))
    assert [b[0].device for b in batches] == [cgrad.device("cuda")] * 3
    np.testing.assert_array_equal(np.concatenate([host(b[1]) for b in batches]), np.arange(5))


def test_data_loader_shuffles_device_tensors_like_host_ones():
    xs = cgrad.arange(10, dtype=F64).reshape(5, 2)
    host_batches = list(cgrad.utils.data.DataLoader((xs,), batch_size=2, shuffle=True, seed=3))
    dev_batches = list(cgrad.utils.data.DataLoader((xs.cuda(),), batch_size=2, shuffle=True, seed=3))
    for (a,), (b,) in zip(host_batches, dev_batches):
        assert_same_values(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------- gradcheck
GRADCHECK_LAYERS = {
    "Scale": (lambda: Scale(4), (2, 4)),
    "Linear": (lambda: nn.Linear(4, 3), (2, 4)),
    "LayerNorm": (lambda: nn.LayerNorm(4), (3, 4)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3), (4, 3)),
    "GRUCell": (lambda: nn.GRUCell(3, 2), (2, 3)),
    "Softplus-Sequential": (lambda: nn.Sequential(nn.Linear(3, 3), nn.Softplus(), nn.Linear(3, 2)), (2, 3)),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_LAYERS))
def test_layer_gradients_on_the_device_pass_gradcheck(name):
    make, shape = GRADCHECK_LAYERS[name]
    m = _seeded(make).to("cuda", F64)
    x = cgrad.tensor(np.random.default_rng(2).standard_normal(shape), dtype=F64, device="cuda",
                     requires_grad=True)
    params = tuple(m.parameters())
    assert all(p.device == "cuda" for p in params)
    # the parameters are inputs too: gradcheck perturbs them where the module reads them
    assert cgrad.autograd.gradcheck(lambda t, *_: m(t), (x,) + params)


def test_conv2d_gradients_on_the_device_pass_gradcheck():
    m = _seeded(lambda: nn.Conv2d(2, 2, 3, padding=1)).to("cuda", F64)
    x = cgrad.tensor(np.random.default_rng(3).standard_normal((1, 2, 4, 4)), dtype=F64, device="cuda",
                     requires_grad=True)
    assert cgrad.autograd.gradcheck(lambda t, *_: m(t), (x, m.weight, m.bias))


def test_second_derivatives_through_a_device_layer():
    m = _seeded(lambda: nn.Sequential(nn.Linear(3, 3), nn.Tanh())).to("cuda", F64)
    x = cgrad.tensor(np.random.default_rng(4).standard_normal((2, 3)), dtype=F64, device="cuda",
                     requires_grad=True)
    assert cgrad.autograd.gradgradcheck(lambda t: m(t), (x,))


# ----------------------------------------------------------------- the benchmark
def test_bench_gpu_runs_end_to_end_on_the_reference_device():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CGRAD_CUDA_REFERENCE="1")
    proc = subprocess.run([sys.executable, os.path.join(root, "bench", "bench_gpu.py"), "--quick"],
                          env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "REFERENCE device" in out and "CHECK FAILED" not in out
    assert "| MLP 784-512-256-10, batch 128, Adam step |" in out
    assert "| small CNN (2 conv + linear), batch 32, 28x28, Adam step |" in out
    # a training step copies nothing back (nll_loss's target check uses its
    # upload's range), with clip_grad_norm_ too (the norm stays on the device)
    rows = [line for line in out.splitlines()
            if line.startswith(("| MLP 784", "| the same MLP, clip_grad_norm_", "| small CNN"))]
    assert len(rows) == 3 and all(r.endswith("| 0 |") for r in rows), rows
    assert "| cgrad Adam on cuda (fused kernel) |" in out


def test_bench_device_overhead_runs_on_the_reference_device():
    """bench/bench_device_overhead.py --quick: every op's row, with the kernel
    calls it recorded (a benchmark, so only that it runs and reports)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), CGRAD_CUDA_REFERENCE="1")
    proc = subprocess.run([sys.executable, os.path.join(root, "bench", "bench_device_overhead.py"),
                           "--quick"], env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "reference device" in out
    for row in ("| add 64x64 | 1 |", "| matmul 64x64 | 1 |", "| Adam step, 1k param | 1 |",
                "| MLP step (bench_gpu: 784-512-256-10, batch 128) |"):
        assert row in out, out
    assert "- Adam step, 1k param: adam_update_" in out
