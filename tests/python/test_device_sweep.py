"""Every public op called with "cuda" tensors either gives what the CPU
gives or raises a clear Python exception: nothing reads device memory as
host memory, nothing crashes the interpreter. The list also documents which
ops have device kernels (the `ported` set must only grow)."""
import numpy as np
import pytest

import cgrad
import cgrad.nn.functional as F
from device_util import host


def _x(shape=(2, 3, 4, 5), seed=0, positive=False):
    a = np.random.default_rng(seed).standard_normal(shape)
    return np.abs(a) + 0.5 if positive else a


def _cases():
    idx = np.array([0, 2, 1])
    return {
        # elementwise / shape (ported with the foundation)
        "exp": lambda t: t(_x()).exp(),
        "add_broadcast": lambda t: t(_x()) + t(_x((5,), 1)),
        "where": lambda t: cgrad.where(t(_x()) > 0, t(_x()), t(_x(seed=2))),
        "reshape_noncontig": lambda t: t(_x()).transpose(0, 3).reshape(-1),
        "permute": lambda t: t(_x()).permute(3, 2, 1, 0).contiguous(),
        "slice_step": lambda t: t(_x())[:, 1:, ::2],
        "select": lambda t: t(_x())[1, 2],
        "cat": lambda t: cgrad.cat([t(_x()), t(_x(seed=3))], dim=2),
        "stack": lambda t: cgrad.stack([t(_x()), t(_x(seed=3))], dim=1),
        "to_float32": lambda t: t(_x()).to(cgrad.float32),
        "clamp": lambda t: t(_x()).clamp(-0.5, 0.5),
        # reductions / matmul
        "sum": lambda t: t(_x()).sum(),
        "sum_dim": lambda t: t(_x()).sum(dim=(1, 3), keepdim=True),
        "mean": lambda t: t(_x()).mean(dim=1),
        "var": lambda t: t(_x()).var(dim=2),
        "max": lambda t: t(_x()).amax(dim=-1),
        "argmax": lambda t: t(_x()).argmax(dim=1),
        "logsumexp": lambda t: t(_x()).logsumexp(dim=1),
        "softmax": lambda t: t(_x()).softmax(dim=-1),
        "log_softmax": lambda t: t(_x()).log_softmax(dim=0),
        "matmul": lambda t: t(_x((4, 5))) @ t(_x((5, 3), 1)),
        "matmul_batched": lambda t: t(_x((2, 4, 5))) @ t(_x((5, 3), 1)),
        # indexing / nn
        "index_select": lambda t: t(_x()).index_select(1, cgrad.tensor(idx[:2]).to(_dev(t))),
        "gather": lambda t: t(_x((3, 4))).gather(1, cgrad.tensor([[0], [3], [1]]).to(_dev(t))),
        "getitem_tensor": lambda t: t(_x((4, 3)))[cgrad.tensor(idx).to(_dev(t))],
        "getitem_mask": lambda t: t(_x((4, 3)))[t(_x((4, 3))) > 0],
        "embedding": lambda t: F.embedding(cgrad.tensor([1, 0, 2]).to(_dev(t)), t(_x((4, 3)))),
        "conv2d": lambda t: F.conv2d(t(_x((2, 3, 6, 6))), t(_x((4, 3, 3, 3), 1)), padding=1),
        "max_pool2d": lambda t: F.max_pool2d(t(_x((2, 3, 6, 6))), 2),
        "avg_pool2d": lambda t: F.avg_pool2d(t(_x((2, 3, 6, 6))), 2),
        "cross_entropy": lambda t: F.cross_entropy(t(_x((4, 5))), cgrad.tensor([0, 4, 2, 1]).to(_dev(t))),
        "mse_loss": lambda t: F.mse_loss(t(_x((4, 5))), t(_x((4, 5), 1))),
        "layer_norm": lambda t: F.layer_norm(t(_x((4, 5))), (5,)),
        "linear": lambda t: F.linear(t(_x((4, 5))), t(_x((3, 5), 1)), t(_x((3,), 2))),
        # row-sparse tensors (duplicated rows summed by coalesce)
        "sparse_coo": lambda t: cgrad.sparse_coo_tensor(cgrad.tensor([[2, 0, 2]]).to(_dev(t)),
                                                        t(_x((3, 3))), (4, 3)).coalesce().to_dense(),
        "sparse_embedding_grad": lambda t: _sparse_embedding_grad(t),
        "sparse_linear": lambda t: F.sparse_linear(t(_x((4, 5))), cgrad.tensor([0, 2, 2, 5]).to(_dev(t)),
                                                   cgrad.tensor([0, 4, 1, 2, 4]).to(_dev(t)),
                                                   t(_x((5,), 1)), t(_x((3,), 2)), 3),
    }


def _dev(t):
    return t.device


def _sparse_embedding_grad(t):
    w = t(_x((5, 3))).requires_grad_()
    F.embedding(cgrad.tensor([[4, 1], [1, 0]]).to(_dev(t)), w, sparse=True).pow(2).sum().backward()
    return w.grad.to_dense()


def _maker(device):
    def t(a):
        return cgrad.tensor(a, dtype=cgrad.float64, device=device)
    t.device = device
    return t


@pytest.mark.parametrize("name", sorted(_cases()))
def test_op_on_device_matches_cpu_or_raises_clearly(name):
    fn = _cases()[name]
    expect = fn(_maker("cpu"))
    try:
        got = fn(_maker("cuda"))
    except NotImplementedError as e:
        assert "cuda" in str(e) and "not supported" in str(e), str(e)
        pytest.xfail(f"no device kernel yet: {e}")
    except (ValueError, TypeError) as e:  # clean errors only, e.g. an index check
        pytest.fail(f"{name} on cuda raised {type(e).__name__}: {e}")
    assert got.device == "cuda", got.device
    assert got.shape == expect.shape and got.dtype == expect.dtype
    a, b = host(expect), host(got)
    if a.dtype.kind in "biu":
        np.testing.assert_array_equal(b, a)
    else:
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda ps: cgrad.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: cgrad.optim.Adam(ps, lr=0.1),
    lambda ps: cgrad.optim.RMSprop(ps, lr=0.1),
    lambda ps: cgrad.optim.Adagrad(ps, lr=0.1),
], ids=["sgd", "adam", "rmsprop", "adagrad"])
def test_training_kernels_on_device_match_cpu(make):
    """Optimizer steps and clipping on device parameters do what they do on
    the cpu (and keep everything on the device)."""
    result = {}
    for dev in ("cpu", "cuda"):
        p = cgrad.nn.Parameter(cgrad.tensor(_x((3, 4)), dtype=cgrad.float64, device=dev))
        p.grad = cgrad.tensor(_x((3, 4), 1), dtype=cgrad.float64, device=dev)
        norm = cgrad.nn.utils.clip_grad_norm_([p], 0.1)
        cgrad.nn.utils.clip_grad_value_([p], 0.01)
        make([p]).step()
        assert p.device == dev and p.grad.device == dev
        result[dev] = (float(norm), host(p))
    assert result["cuda"][0] == pytest.approx(result["cpu"][0], rel=1e-12)
    np.testing.assert_allclose(result["cuda"][1], result["cpu"][1], rtol=1e-12, atol=1e-14)
