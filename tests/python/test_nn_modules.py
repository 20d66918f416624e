"""nn.Module and nn.Parameter: registration, iteration, modes, dtype
conversion, state_dict, hooks (forward and full backward, against torch),
module-scoped backward overrides, containers, and a small training run."""
import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
from cgrad.nn import Parameter
from nn_compare import copy_to_torch


class Block(nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.lin = nn.Linear(n, n)
        self.scale = Parameter(cgrad.ones(n))
        self.register_buffer("count", cgrad.zeros(n))
        self.register_buffer("scratch", cgrad.zeros(2), persistent=False)

    def forward(self, x):
        return self.lin(x).relu() * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Block()
        self.b = Block()
        self.head = nn.Linear(3, 1)

    def forward(self, x):
        return self.head(self.b(self.a(x)))


# ---------------------------------------------------------------- Parameter
def test_parameter_basics():
    data = cgrad.arange(3, dtype=cgrad.float32)
    p = Parameter(data)
    assert isinstance(p, cgrad.Tensor) and p.is_leaf and p.requires_grad and p.grad_fn is None
    assert repr(p).startswith("Parameter containing:\ntensor([0., 1., 2.]")
    with cgrad.no_grad():
        data.add_(1.0)  # shares storage with data
    np.testing.assert_array_equal(p.detach().numpy(), [1, 2, 3])
    q = Parameter(cgrad.arange(3, dtype=cgrad.float32))
    d = {p: "p", q: "q"}  # identity hash: equal values, distinct keys
    assert d[p] == "p" and d[q] == "q" and len({p, q, p}) == 2
    assert not Parameter(cgrad.ones(2), requires_grad=False).requires_grad
    assert Parameter().shape == (0,)
    with pytest.raises(TypeError, match="list"):
        Parameter([1.0, 2.0])
    with pytest.raises(TypeError, match="int64"):
        Parameter(cgrad.tensor([1, 2]))


def test_parameter_from_non_leaf_is_a_leaf():
    x = cgrad.ones(2, requires_grad=True)
    p = Parameter(x * 2)
    assert p.is_leaf and p.grad_fn is None
    (p * 3).sum().backward()
    np.testing.assert_array_equal(p.grad.numpy(), [3, 3])
    assert x.grad is None


def test_parameter_deepcopy_and_pickle():
    p = Parameter(cgrad.randn(3))
    (p * 2).sum().backward()
    q = copy.deepcopy(p)
    assert type(q) is Parameter and q is not p and q.requires_grad
    np.testing.assert_array_equal(q.detach().numpy(), p.detach().numpy())
    np.testing.assert_array_equal(q.grad.numpy(), [2, 2, 2])
    r = pickle.loads(pickle.dumps(p))
    assert type(r) is Parameter and r.requires_grad
    np.testing.assert_array_equal(r.detach().numpy(), p.detach().numpy())


# ---------------------------------------------------------------- registration
def test_setattr_registers_parameters_modules_buffers():
    m = Block()
    assert list(m._parameters) == ["scale"] and list(m._modules) == ["lin"]
    assert list(m._buffers) == ["count", "scratch"]
    assert m.lin.weight is dict(m.named_parameters())["lin.weight"]
    assert "scale" not in m.__dict__ and "lin" not in m.__dict__
    m.extra = 5  # plain attributes stay plain
    assert m.__dict__["extra"] == 5
    m.count = cgrad.ones(3)  # assigning a tensor to a buffer name replaces the buffer
    np.testing.assert_array_equal(m._buffers["count"].numpy(), [1, 1, 1])
    m.scale = None
    assert m.scale is None and "scale" not in dict(m.named_parameters())
    del m.lin
    assert "lin" not in m._modules
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'lin'"):
        m.lin
    del m.count
    assert "count" not in m._buffers
    m.other = nn.ReLU()
    m.other = Parameter(cgrad.ones(1))  # a Parameter replaces a module of the same name
    assert "other" not in m._modules and "other" in m._parameters


def test_registration_errors():
    class Early(nn.Module):
        def __init__(self):
            self.w = Parameter(cgrad.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    m = Block()
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        m.scale = cgrad.ones(3)
    with pytest.raises(TypeError, match="cannot assign 'int' as child module 'lin'"):
        m.lin = 3
    with pytest.raises(TypeError, match="cannot assign 'list' as buffer 'count'"):
        m.count = [1, 2]
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", cgrad.ones(1))
    with pytest.raises(KeyError, match="empty string"):
        m.register_parameter("", None)
    with pytest.raises(KeyError, match="attribute 'extra' already exists"):
        m.extra = 1
        m.register_buffer("extra", cgrad.ones(1))
    with pytest.raises(TypeError, match="buffer name should be a string. Got int"):
        m.register_buffer(3, cgrad.ones(1))
    with pytest.raises(TypeError, match="cannot assign 'ndarray' object to buffer 'b'"):
        m.register_buffer("b", np.ones(2))
    with pytest.raises(TypeError, match="cannot assign 'Tensor' object to parameter 'q'"):
        m.register_parameter("q", cgrad.ones(2))
    with pytest.raises(TypeError, match="int is not a Module subclass"):
        m.add_module("z", 3)
    with pytest.raises(NotImplementedError, match=r'Module \[Module\] is missing the required "forward"'):
        nn.Module()(cgrad.ones(1))


def test_get_submodule_parameter_buffer():
    n = Net()
    assert n.get_submodule("a.lin") is n.a.lin
    assert n.get_parameter("b.lin.bias") is n.b.lin.bias
    assert n.get_buffer("a.count") is n.a.count
    with pytest.raises(AttributeError, match="no attribute `zz`"):
        n.get_submodule("a.zz")


# ---------------------------------------------------------------- iteration
def test_named_parameters_buffers_modules():
    n = Net()
    names = [k for k, _ in n.named_parameters()]
    assert names == ["a.scale", "a.lin.weight", "a.lin.bias", "b.scale", "b.lin.weight", "b.lin.bias",
                     "head.weight", "head.bias"]
    assert [p for p in n.parameters()] == [p for _, p in n.named_parameters()]
    assert [k for k, _ in n.named_parameters(prefix="net")][0] == "net.a.scale"
    assert list(n.named_parameters(recurse=False)) == []
    assert [k for k, _ in n.a.named_parameters(recurse=False)] == ["scale"]
    assert [k for k, _ in n.named_buffers()] == ["a.count", "a.scratch", "b.count", "b.scratch"]
    assert len(list(n.buffers())) == 4
    assert [k for k, _ in n.named_children()] == ["a", "b", "head"]
    assert list(n.children()) == [n.a, n.b, n.head]
    assert [k for k, _ in n.named_modules()] == ["", "a", "a.lin", "b", "b.lin", "head"]
    assert list(n.modules())[0] is n


def test_shared_parameters_and_modules_listed_once(torch):
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert [k for k, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert len(list(seq.named_parameters(remove_duplicate=False))) == 4
    assert [k for k, _ in seq.named_modules()] == ["", "0", "1"]
    tlin = torch.nn.Linear(2, 2)
    tseq = torch.nn.Sequential(tlin, torch.nn.ReLU(), tlin)
    assert [k for k, _ in seq.named_parameters()] == [k for k, _ in tseq.named_parameters()]
    assert list(seq.state_dict()) == list(tseq.state_dict())  # state_dict repeats shared ones
    tied = nn.Module()
    tied.enc = nn.Embedding(5, 3)
    tied.dec = nn.Linear(3, 5, bias=False)
    tied.dec.weight = tied.enc.weight
    assert len(list(tied.parameters())) == 1


# ---------------------------------------------------------------- modes and grads
def test_train_eval_requires_grad_zero_grad_apply():
    n = Net()
    assert n.training and n.a.lin.training
    assert n.eval() is n and not n.training and not n.b.lin.training
    n.train()
    assert n.a.training
    with pytest.raises(ValueError, match="boolean"):
        n.train("yes")
    n.requires_grad_(False)
    assert not any(p.requires_grad for p in n.parameters())
    n.requires_grad_()
    n(cgrad.randn(4, 3)).sum().backward()
    assert all(p.grad is not None for p in n.parameters())
    n.zero_grad(set_to_none=False)
    for p in n.parameters():
        assert p.grad is not None and not np.any(p.grad.numpy())
    n.zero_grad()
    assert all(p.grad is None for p in n.parameters())
    seen = []
    assert n.apply(lambda m: seen.append(type(m).__name__)) is n
    assert seen == ["Linear", "Block", "Linear", "Block", "Linear", "Net"]


def test_zero_grad_keeps_accumulating_in_place():
    m = nn.Linear(2, 1)
    m(cgrad.ones(1, 2)).sum().backward()
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    m(cgrad.ones(1, 2)).sum().backward()
    np.testing.assert_array_equal(m.weight.grad.numpy(), [[1, 1]])
    np.testing.assert_array_equal(g.numpy(), [[1, 1]])  # the same gradient tensor


# ---------------------------------------------------------------- dtype conversion
def test_to_float64_keeps_identity_and_gradient():
    n = Net()
    params = list(n.parameters())  # what an optimizer holds
    ids = [id(p) for p in params]
    n(cgrad.randn(4, 3)).sum().backward()
    grads = [p.grad.numpy().copy() for p in params]
    assert n.to(cgrad.float64) is n
    assert [id(p) for p in n.parameters()] == ids
    for p, g in zip(params, grads):
        assert type(p) is Parameter and p.dtype == cgrad.float64 and p.requires_grad and p.is_leaf
        assert p.grad.dtype == cgrad.float64
        np.testing.assert_allclose(p.grad.numpy(), g)
    assert n.a.count.dtype == cgrad.float64 and n.a.scratch.dtype == cgrad.float64
    out = n(cgrad.randn(4, 3, dtype=cgrad.float64))
    assert out.dtype == cgrad.float64
    out.sum().backward()  # accumulates onto the converted gradient
    with cgrad.no_grad():  # an optimizer step through the held references still works
        for p in params:
            p -= 0.1 * p.grad
    n.float()
    assert all(p.dtype == cgrad.float32 and p.grad.dtype == cgrad.float32 for p in params)
    n.double()
    assert n.head.weight.dtype == cgrad.float64
    n.to(dtype=cgrad.float32, device="cpu")
    assert n.head.weight.dtype == cgrad.float32
    assert n.cpu() is n


def test_to_keeps_integer_buffers():
    bn = nn.BatchNorm1d(3)
    bn.double()
    assert bn.running_mean.dtype == cgrad.float64 and bn.num_batches_tracked.dtype == cgrad.int64


def test_to_errors():
    n = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'cuda:1': only index 0"):  # moving to 'cuda': test_device_modules.py
        n.to(device="cuda:1")
    with pytest.raises(ValueError, match="unknown device type 'tpu'"):
        n.to("tpu")
    with pytest.raises(TypeError, match="floating point dtypes.*int64"):
        n.to(cgrad.int64)
    with pytest.raises(TypeError, match="expects a dtype"):
        n.to(3.5)


# ---------------------------------------------------------------- state dict
def _arch(lib):
    n = lib.nn
    return n.Sequential(OrderedDict([
        ("conv", n.Conv2d(2, 4, 3, padding=1)),
        ("pool", n.MaxPool2d(2)),
        ("flat", n.Flatten()),
        ("fc", n.Linear(16, 6)),
        ("bn", n.BatchNorm1d(6)),
        ("act", n.GELU()),
        ("ln", n.LayerNorm(6)),
        ("out", n.Linear(6, 3)),
    ]))


def test_state_dict_keys_and_shapes_equal_torch(torch):
    ours, theirs = _arch(cgrad), _arch(torch)
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == list(tsd)
    for k in sd:
        assert tuple(sd[k].shape) == tuple(tsd[k].shape), k
        assert not sd[k].requires_grad
    assert "0.scratch" not in Block().state_dict() and "count" in Block().state_dict()
    kv = ours.state_dict(keep_vars=True)
    assert kv["fc.weight"] is ours.fc.weight
    assert list(ours.state_dict(prefix="model.")) == ["model." + k for k in sd]
    emb = (nn.Embedding(4, 2), torch.nn.Embedding(4, 2))
    lstm = (nn.LSTM(3, 2, 2), torch.nn.LSTM(3, 2, 2))
    for o, t in (emb, lstm):
        assert list(o.state_dict()) == list(t.state_dict())


def test_torch_state_dict_loads_and_reproduces_torch_outputs(torch, rng):
    theirs = _arch(torch).double()
    x = rng.standard_normal((5, 2, 4, 4))
    theirs.train()
    theirs(torch.tensor(x))  # move the running statistics away from their init
    theirs.eval()
    expected = theirs(torch.tensor(x)).detach().numpy()
    ours = _arch(cgrad).double()
    sd = {k: cgrad.tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()}
    result = ours.load_state_dict(sd)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    ours.eval()
    np.testing.assert_allclose(ours(cgrad.tensor(x)).detach().numpy(), expected, atol=1e-12, rtol=1e-10)
    assert ours.bn.num_batches_tracked.item() == 1


def test_load_state_dict_copies_in_place_and_round_trips():
    a, b = Net(), Net()
    ids = [id(p) for p in b.parameters()]
    weight = b.head.weight
    b.load_state_dict(a.state_dict())
    assert [id(p) for p in b.parameters()] == ids and b.head.weight is weight
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(v.numpy(), w.numpy())
    x = cgrad.randn(2, 3)
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())
    # a float32 state dict loads into a float64 model (values cast, dtype kept)
    b.double()
    b.load_state_dict(a.state_dict())
    assert b.head.weight.dtype == cgrad.float64


def test_load_state_dict_errors():
    n = Net()
    sd = n.state_dict()
    del sd["a.lin.bias"]
    sd["a.extra"] = cgrad.ones(1)
    with pytest.raises(RuntimeError) as e:
        n.load_state_dict(sd)
    msg = str(e.value)
    assert "Error(s) in loading state_dict for Net" in msg
    assert 'Missing key(s) in state_dict: "a.lin.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "a.extra"' in msg
    res = n.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["a.lin.bias"] and res.unexpected_keys == ["a.extra"]
    missing, unexpected = res
    assert missing == ["a.lin.bias"]
    bad = n.state_dict()
    bad["head.weight"] = cgrad.ones(2, 3)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=r"size mismatch for head.weight: copying a param with shape "
                                               r"\(2, 3\) from checkpoint, the shape in current model is "
                                               r"\(1, 3\)"):
            n.load_state_dict(bad, strict=strict)
    bad["head.weight"] = np.ones((1, 3))
    with pytest.raises(RuntimeError, match='"head.weight", expected cgrad.Tensor.*ndarray'):
        n.load_state_dict(bad)
    with pytest.raises(TypeError, match="dict-like, got list"):
        n.load_state_dict([1, 2])


def test_batchnorm_loads_without_num_batches_tracked():
    bn = nn.BatchNorm1d(2)
    sd = bn.state_dict()
    del sd["num_batches_tracked"]
    assert bn.load_state_dict(sd).missing_keys == []


def test_deepcopy_module_is_independent():
    n = Net()
    m = copy.deepcopy(n)
    assert m.head.weight is not n.head.weight
    with cgrad.no_grad():
        m.head.weight.fill_(0)
    assert np.any(n.head.weight.detach().numpy() != 0)
    assert [k for k, _ in m.named_parameters()] == [k for k, _ in n.named_parameters()]


# ---------------------------------------------------------------- forward hooks
def test_forward_pre_and_post_hooks():
    m = nn.Linear(2, 2)
    calls = []

    def pre(mod, args):
        calls.append(("pre", mod))
        return (args[0] * 2,)

    def post(mod, args, out):
        calls.append(("post", args[0].shape))
        return out + 1

    h1 = m.register_forward_pre_hook(pre)
    h2 = m.register_forward_hook(post)
    x = cgrad.ones(1, 2)
    expected = (x * 2 @ m.weight.t() + m.bias + 1).detach().numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), expected)
    assert calls == [("pre", m), ("post", (1, 2))]
    h1.remove()
    h2.remove()
    h2.remove()  # twice is fine
    np.testing.assert_allclose(m(x).detach().numpy(), (x @ m.weight.t() + m.bias).detach().numpy())
    assert len(calls) == 2


def test_forward_hooks_order_prepend_kwargs_and_context():
    m = nn.Identity()
    order = []
    m.register_forward_hook(lambda mod, a, o: order.append("first"))
    m.register_forward_hook(lambda mod, a, o: order.append("prepended"), prepend=True)
    with m.register_forward_pre_hook(lambda mod, a: a[0] + 10):  # non-tuple: wrapped
        assert m(cgrad.ones(1)).item() == 11
    assert m(cgrad.ones(1)).item() == 1
    assert order == ["prepended", "first"] * 2

    class KW(nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    k = KW()
    k.register_forward_pre_hook(lambda mod, a, kw: (a, {"scale": 3.0}), with_kwargs=True)
    k.register_forward_hook(lambda mod, a, kw, out: out + kw["scale"], with_kwargs=True)
    assert k(cgrad.ones(1), scale=2.0).item() == 6.0
    k2 = KW()
    k2.register_forward_pre_hook(lambda mod, a, kw: 5, with_kwargs=True)
    with pytest.raises(RuntimeError, match="tuple of"):
        k2(cgrad.ones(1))
    with pytest.raises(TypeError, match="callable"):
        k2.register_forward_hook(3)


def test_always_call_forward_hook_runs_when_forward_raises():
    m = nn.Linear(3, 2)
    seen = []
    m.register_forward_hook(lambda mod, a, out: seen.append(("always", out)), always_call=True)
    m.register_forward_hook(lambda mod, a, out: seen.append(("normal", out)))
    with pytest.raises(ValueError, match="in_features=3"):
        m(cgrad.ones(1, 4))
    assert seen == [("always", None)]
    m(cgrad.ones(1, 3))
    assert [k for k, _ in seen] == ["always", "always", "normal"]


# ---------------------------------------------------------------- backward hooks
def TwoIn(lib):
    """A module with two tensor inputs, a non-tensor one and two outputs."""

    class TwoIn(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 2)

        def forward(self, x, y, k):
            h = self.lin(x * y)
            return h * k, (h * h).sum(1)

    return TwoIn()


def _record(store):
    def hook(mod, grad_input, grad_output):
        store.append((tuple(None if g is None else np.array(g.detach().numpy(), copy=True) for g in grad_input),
                      tuple(None if g is None else np.array(g.detach().numpy(), copy=True) for g in grad_output)))
    return hook


def _assert_same_grads(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("y_grad", [True, False])
def test_full_backward_hook_matches_torch(torch, rng, y_grad):
    ours, theirs = TwoIn(cgrad).double(), TwoIn(torch).double()
    copy_to_torch(ours, theirs, torch)
    xs, ys = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    got, want = [], []
    ours.register_full_backward_hook(_record(got))
    theirs.register_full_backward_hook(_record(want))
    cx = cgrad.tensor(xs, requires_grad=True)
    cy = cgrad.tensor(ys, requires_grad=y_grad)
    tx = torch.tensor(xs, requires_grad=True)
    ty = torch.tensor(ys, requires_grad=y_grad)
    a, b = ours(cx, cy, 2.0)
    ta, tb = theirs(tx, ty, 2.0)
    (a.sum() + (b * 3).sum()).backward()
    (ta.sum() + (tb * 3).sum()).backward()
    assert len(got) == len(want) == 1
    _assert_same_grads(got[0][0], want[0][0])  # grad_input: (x, y or None, None for k)
    _assert_same_grads(got[0][1], want[0][1])  # grad_output
    np.testing.assert_allclose(cx.grad.numpy(), tx.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.lin.weight.grad.numpy(), theirs.lin.weight.grad.numpy(), atol=1e-12)


def test_full_backward_hook_one_output_used_matches_torch(torch, rng):
    ours, theirs = TwoIn(cgrad).double(), TwoIn(torch).double()
    copy_to_torch(ours, theirs, torch)
    got, want = [], []
    ours.register_full_backward_hook(_record(got))
    theirs.register_full_backward_hook(_record(want))
    xs = rng.standard_normal((2, 3))
    ours(cgrad.tensor(xs, requires_grad=True), cgrad.tensor(xs), 1.0)[1].sum().backward()
    theirs(torch.tensor(xs, requires_grad=True), torch.tensor(xs), 1.0)[1].sum().backward()
    _assert_same_grads(got[0][0], want[0][0])
    _assert_same_grads(got[0][1], want[0][1])  # the unused output's gradient is None


def test_full_backward_hook_replaces_grad_input(torch):
    for lib, dt in ((cgrad, cgrad.float64), (torch, torch.float64)):
        m = lib.nn.Tanh()
        m.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 10,))
        x = lib.tensor([0.5, -1.0], dtype=dt, requires_grad=True)
        m(x).sum().backward()
        np.testing.assert_allclose(x.grad.detach().numpy(), 10 * (1 - np.tanh([0.5, -1.0]) ** 2))


def test_full_backward_hook_sees_layer_gradients_like_torch(torch, rng):
    ours, theirs = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), \
        torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ours.double()
    theirs.double()
    copy_to_torch(ours, theirs, torch)
    got, want = [], []
    for o, t in zip(ours, theirs):
        o.register_full_backward_hook(_record(got))
        t.register_full_backward_hook(_record(want))
    x = rng.standard_normal((5, 3))
    ours(cgrad.tensor(x)).sum().backward()  # the input needs no grad: first layer sees None
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        theirs(torch.tensor(x)).sum().backward()
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        _assert_same_grads(g[0], w[0])
        _assert_same_grads(g[1], w[1])


def test_full_backward_hook_no_input_requires_grad_must_return_none():
    m = nn.Linear(2, 2)
    seen = []
    h = m.register_full_backward_hook(lambda mod, gi, go: seen.append(gi))
    m(cgrad.ones(1, 2)).sum().backward()
    assert seen == [(None,)]
    h.remove()
    m.register_full_backward_hook(lambda mod, gi, go: (cgrad.ones(1, 2),))
    with pytest.raises(RuntimeError, match="no input requires gradient"):
        m(cgrad.ones(1, 2)).sum().backward()


def test_full_backward_hook_bad_return_and_removal():
    m = nn.Sigmoid()
    h = m.register_full_backward_hook(lambda mod, gi, go: (gi[0], gi[0]))
    x = cgrad.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid number of grad_input, got 2, but expected 1"):
        m(x).sum().backward()
    h.remove()
    x.grad = None
    m(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.19661193] * 2, rtol=1e-6)
    m.register_full_backward_hook(lambda mod, gi, go: ("no",))
    with pytest.raises(TypeError, match="str for grad_input"):
        m(x).sum().backward()


def test_full_backward_hook_per_call_and_double_backward():
    lin = nn.Linear(2, 2).double()
    seen = []
    lin.register_full_backward_hook(lambda mod, gi, go: seen.append(gi[0].shape))
    a = cgrad.randn(3, 2, dtype=cgrad.float64, requires_grad=True)
    (lin(a) + lin(a * 2)).sum().backward()
    assert seen == [(3, 2), (3, 2)]  # one call per forward
    m = nn.Tanh()
    x = cgrad.tensor([0.3, -0.7], dtype=cgrad.float64, requires_grad=True)
    (g_plain,) = cgrad.autograd.grad(m(x).sum(), [x], create_graph=True)
    (h_plain,) = cgrad.autograd.grad(g_plain.sum(), [x])
    m.register_full_backward_hook(lambda mod, gi, go: None)
    (g,) = cgrad.autograd.grad(m(x).sum(), [x], create_graph=True)
    (h,) = cgrad.autograd.grad(g.sum(), [x])
    np.testing.assert_allclose(g.detach().numpy(), g_plain.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(h.numpy(), h_plain.numpy(), rtol=1e-14)
    t = np.tanh([0.3, -0.7])
    np.testing.assert_allclose(h.numpy(), -2 * t * (1 - t * t), rtol=1e-12)


def test_full_backward_pre_hook_replaces_grad_output(torch):
    for lib, dt in ((cgrad, cgrad.float64), (torch, torch.float64)):
        m = lib.nn.Linear(2, 1).double()
        with lib.no_grad():
            m.weight.fill_(2.0)
        m.register_full_backward_pre_hook(lambda mod, go: (go[0] * 3,))
        x = lib.tensor([[1.0, 1.0]], dtype=dt, requires_grad=True)
        m(x).sum().backward()
        np.testing.assert_allclose(x.grad.detach().numpy(), [[6.0, 6.0]])


# ---------------------------------------------------------------- module-scoped override
class Inner(nn.Module):
    def forward(self, x):
        return x.relu()


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return self.inner(x).relu() + x.relu()


def _ste(ctx, g):
    return g  # straight-through: relu's derivative replaced by 1


def test_module_override_only_inside_the_module():
    x0 = np.array([-1.0, 2.0, -3.0])
    m = Outer()
    h = m.inner.override_backward("relu", _ste)
    x = cgrad.tensor(x0, requires_grad=True)
    outside = x.relu()  # recorded outside any module: untouched
    (m(x).sum() + outside.sum()).backward()
    # inner relu passes 1 everywhere; the outer relu of inner's output has
    # mask (relu(x) > 0); the two plain relus have the mask (x > 0)
    mask = (x0 > 0).astype(float)
    inner_out = np.maximum(x0, 0)
    np.testing.assert_allclose(x.grad.numpy(), (inner_out > 0) * 1.0 + mask + mask)
    h.remove()
    x.grad = None
    m(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * mask)


def test_module_override_covers_children_and_counts_calls():
    m = Outer()
    calls = []

    def fn(ctx, g):
        calls.append(ctx.op)
        return g * 0

    with m.override_backward("relu", fn):
        x = cgrad.tensor([1.0, 2.0], requires_grad=True)
        m(x).sum().backward()
    assert calls == ["relu", "relu", "relu"]
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0])
    x.grad = None
    m(x).sum().backward()  # handle exited: built-in derivative again
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2])
    with pytest.raises(TypeError, match="op must be an op name"):
        m.override_backward("", fn)
    with pytest.raises(TypeError, match="callable"):
        m.override_backward("relu", 3)


# ---------------------------------------------------------------- containers
def test_sequential_indexing_slicing_and_editing():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c] and list(sub._modules) == ["1", "2"]
    x = cgrad.randn(4, 2)
    np.testing.assert_allclose(s(x).detach().numpy(), c(b(a(x))).detach().numpy())
    t = nn.Tanh()
    s.append(t)
    assert s[3] is t and len(s) == 4
    s[1] = nn.Sigmoid()
    assert isinstance(s[1], nn.Sigmoid)
    del s[1]
    assert len(s) == 3 and list(s._modules) == ["0", "1", "2"] and s[1] is c
    s.insert(0, nn.Identity())
    assert isinstance(s[0], nn.Identity) and s[1] is a
    assert s.pop(0).__class__ is nn.Identity
    named = nn.Sequential(OrderedDict([("enc", a), ("act", b)]))
    assert named.enc is a and [k for k, _ in named.named_parameters()] == ["enc.weight", "enc.bias"]
    assert len(s + named) == len(s) + 2


def test_sequential_errors():
    with pytest.raises(TypeError, match=r"argument 1 must be a Module, got function"):
        nn.Sequential(nn.ReLU(), lambda x: x)
    with pytest.raises(TypeError, match="must be a Module, got int"):
        nn.Sequential(OrderedDict([("a", 3)]))
    s = nn.Sequential(nn.ReLU())
    with pytest.raises(IndexError, match="index 5 is out of range"):
        s[5]
    with pytest.raises(TypeError, match="got str"):
        s.append("relu")
    with pytest.raises(TypeError, match="indices must be integers"):
        s["0"]


def test_modulelist_and_moduledict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and [k for k, _ in layers.named_parameters()][0] == "0.weight"
    layers.append(nn.ReLU())
    layers.extend([nn.Tanh()])
    layers += [nn.Sigmoid()]
    assert len(layers) == 6 and isinstance(layers[-1], nn.Sigmoid)
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    del layers[0]
    assert list(layers._modules) == [str(i) for i in range(5)]
    layers.insert(1, nn.Identity())
    assert isinstance(layers[1], nn.Identity)
    with pytest.raises(TypeError, match="must be a Module, got int"):
        layers.append(3)
    with pytest.raises(NotImplementedError, match="iterate"):
        layers(cgrad.ones(1))

    d = nn.ModuleDict({"enc": nn.Linear(2, 3), "dec": nn.Linear(3, 2)})
    assert list(d) == ["enc", "dec"] and "enc" in d and len(d) == 2
    d["act"] = nn.ReLU()
    assert list(d.keys()) == ["enc", "dec", "act"]
    assert [k for k, _ in d.named_parameters()] == ["enc.weight", "enc.bias", "dec.weight", "dec.bias"]
    d.update([("out", nn.Tanh())])
    assert isinstance(d.pop("out"), nn.Tanh) and "out" not in d
    with pytest.raises(TypeError, match="must be a Module, got str"):
        d["x"] = "relu"
    with pytest.raises(ValueError, match="element #0"):
        d.update([1])

    class Owner(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    o = Owner()
    assert len(list(o.parameters())) == 4 and list(o.state_dict())[0] == "blocks.0.weight"


def test_nested_repr_equals_torch(torch):
    def build(n):
        return n.Sequential(n.Conv2d(1, 2, 3), n.ModuleList([n.ReLU(), n.ReLU()]),
                            n.ModuleDict({"a": n.Linear(2, 3)}), n.Sequential(n.Flatten(), n.Dropout(0.1)))
    assert repr(build(nn)) == repr(build(torch.nn))


# ---------------------------------------------------------------- end to end
def test_mlp_sgd_training_lowers_the_loss():
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((64, 4))
    y_np = np.sin(x_np.sum(1, keepdims=True))
    x, y = cgrad.tensor(x_np, dtype=cgrad.float32), cgrad.tensor(y_np, dtype=cgrad.float32)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    params = list(model.parameters())
    losses = []
    for _ in range(60):
        model.zero_grad()
        diff = model(x) - y
        loss = (diff * diff).mean()
        loss.backward()
        with cgrad.no_grad():
            for p in params:
                p -= 0.1 * p.grad
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(p is q for p, q in zip(params, model.parameters()))
