"""Reductions, softmax family, shape ops and views, indexing, gather /
index_select / cat / stack, numpy interop, and their error cases."""
import numpy as np
import pytest

import cgrad
from oracle import Const, check_op, lib, to_numpy

# -------------------------------------------------------------- reductions
DIMS = [None, 0, 1, -1, 2, (0, 2), (-1, 0), (0, 1, 2)]


def _red(name, dim, keepdim, **kw):
    if dim is None:
        return lambda x: getattr(x, name)(**kw)
    return lambda x: getattr(x, name)(dim=dim, keepdim=keepdim, **kw)


@pytest.mark.parametrize("dim,keepdim", [(d, k) for d in DIMS for k in (False, True)
                                         if d is not None or not k], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean(name, dim, keepdim):
    check_op([(2, 3, 4)], _red(name, dim, keepdim))


def test_sum_positional_dim(): check_op([(2, 3, 4)], lambda x: x.sum(1))
def test_sum_positional_keepdim(): check_op([(2, 3, 4)], lambda x: x.sum(-2, True))
def test_mean_function(): check_op([(3, 4)], lambda x: lib(x).mean(x, 0))
def test_sum_function(): check_op([(3, 4)], lambda x: lib(x).sum(x, dim=(0, 1)))
def test_sum_0d(): check_op([()], lambda x: x.sum())
def test_sum_1d(): check_op([(7,)], lambda x: x.sum(0))
def test_sum_then_broadcast(): check_op([(3, 4)], lambda x: x - x.mean(1, keepdim=True))


@pytest.mark.parametrize("correction", [1, 0])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), (-1, True), ((0, 2), False)],
                         ids=str)
def test_var(dim, keepdim, correction):
    if dim is None:
        fn = lambda x: x.var(correction=correction)
    else:
        fn = lambda x: x.var(dim=dim, correction=correction, keepdim=keepdim)
    check_op([(2, 3, 4)], fn)


def test_var_function(): check_op([(3, 4)], lambda x: lib(x).var(x, 1))
def test_var_default_is_unbiased():
    x = np.arange(5.0)
    assert abs(cgrad.tensor(x).var().item() - np.var(x, ddof=1)) < 1e-12


def test_max_min_no_dim():
    check_op([(3, 4)], lambda x: x.max())
    check_op([(3, 4)], lambda x: x.min())
    check_op([(3, 4)], lambda x: lib(x).max(x))


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, False), (-1, True), (2, True)], ids=str)
def test_max_min_dim(name, dim, keepdim):
    check_op([(2, 3, 4)], lambda x: getattr(x, name)(dim, keepdim=keepdim)[0])
    check_op([(2, 3, 4)], lambda x: getattr(x, name)(dim=dim, keepdim=keepdim).values)
    check_op([(2, 3, 4)], lambda x: getattr(x, name)(dim, keepdim).indices)


def test_max_dim_namedtuple():
    x = cgrad.tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.5]])
    values, indices = x.max(1)
    np.testing.assert_array_equal(to_numpy(values), [5.0, 7.5])
    np.testing.assert_array_equal(to_numpy(indices), [1, 2])
    assert indices.dtype == cgrad.int64
    r = x.min(dim=0)
    np.testing.assert_array_equal(to_numpy(r.values), [1.0, 0.0, 2.0])
    np.testing.assert_array_equal(to_numpy(r.indices), [0, 1, 0])


@pytest.mark.parametrize("name", ["amax", "amin"])
@pytest.mark.parametrize("dim,keepdim", [(0, False), (-1, True), ((0, 2), False)], ids=str)
def test_amax_amin(name, dim, keepdim):
    check_op([(2, 3, 4)], lambda x: getattr(x, name)(dim, keepdim=keepdim))


def test_max_ties_gradient():
    # Full reduction and amax split the gradient evenly among ties (PyTorch);
    # max(dim) sends it to the returned index.
    x = cgrad.tensor([1.0, 3.0, 3.0], requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [0.0, 0.5, 0.5])
    x = cgrad.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    x.amax(1).sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), [[0.0, 0.5, 0.5]])
    x = cgrad.tensor([[1.0, 3.0, 3.0]], requires_grad=True)
    values, indices = x.max(1)
    values.sum().backward()
    g = to_numpy(x.grad)
    assert g.sum() == 1.0 and g[0, int(indices.item())] == 1.0


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("kw", [{}, {"dim": 0}, {"dim": -1}, {"dim": 1, "keepdim": True}], ids=str)
def test_argmax_argmin(name, kw):
    out = check_op([(3, 4, 5)], lambda x: getattr(x, name)(**kw))
    assert out.dtype == cgrad.int64


def test_argmax_first_of_ties_and_function():
    x = cgrad.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    np.testing.assert_array_equal(to_numpy(x.argmax(1)), [1, 0])
    np.testing.assert_array_equal(to_numpy(x.argmin(1)), [0, 2])
    assert cgrad.argmax(x).item() == 1


# ------------------------------------------------------- softmax family
@pytest.mark.parametrize("dim", [0, 1, -1], ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax(name, dim):
    check_op([(3, 4, 5)], lambda x: getattr(x, name)(dim))
    check_op([(3, 4)], lambda x: getattr(lib(x), name)(x, dim % 2 if dim >= 0 else dim))


@pytest.mark.parametrize("dim,keepdim", [(0, False), (1, True), (-1, False), ((0, 2), False),
                                         ((1, -1), True)], ids=str)
def test_logsumexp(dim, keepdim):
    check_op([(3, 4, 5)], lambda x: x.logsumexp(dim, keepdim=keepdim))


def test_logsumexp_function(): check_op([(3, 4)], lambda x: lib(x).logsumexp(x, 1))


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_softmax_family_large_inputs_stable(name):
    # shifting by 1000 must not overflow (max subtraction inside)
    check_op([(3, 5)], lambda x: getattr(x * 50 + 1000, name)(1), fwd_rtol=1e-9, f32_atol=1e-2)
    check_op([(3, 5)], lambda x: getattr(x * 50 - 1000, name)(1), fwd_rtol=1e-9, f32_atol=1e-2)


def test_softmax_rows_sum_to_one():
    x = cgrad.randn(4, 7)
    np.testing.assert_allclose(to_numpy(x.softmax(1).sum(1)), np.ones(4), rtol=1e-6)


def test_logsumexp_infinities():
    ninf = -float("inf")
    x = cgrad.tensor([[ninf, ninf], [0.0, ninf], [float("inf"), 1.0]], dtype=cgrad.float64)
    out = to_numpy(x.logsumexp(1))
    assert out[0] == -np.inf and out[1] == 0.0 and out[2] == np.inf


def test_softmax_nan_stays_in_its_row():
    x = cgrad.tensor([[1.0, float("nan")], [1.0, 2.0]])
    out = to_numpy(x.softmax(1))
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], np.exp([1, 2]) / np.exp([1, 2]).sum(), rtol=1e-6)


# ------------------------------------------------------------ shape ops
SHAPE_OPS = {
    "reshape_tuple": lambda x: x.reshape((4, 6)),
    "reshape_varargs": lambda x: x.reshape(3, 8),
    "reshape_minus1": lambda x: x.reshape(-1, 2),
    "reshape_flat": lambda x: x.reshape(-1),
    "reshape_0d_like": lambda x: x.reshape(1, 24, 1),
    "view": lambda x: x.view(6, 4),
    "view_minus1": lambda x: x.view(2, -1, 3),
    "permute": lambda x: x.permute(2, 0, 1),
    "permute_tuple": lambda x: x.permute((1, 2, 0)),
    "permute_negative": lambda x: x.permute(-1, -3, -2),
    "transpose": lambda x: x.transpose(0, 2),
    "transpose_negative": lambda x: x.transpose(-1, -2),
    "expand": lambda x: x[:, :1].expand(2, 5, 4),
    "expand_leading": lambda x: x[0].expand(3, 3, 4),
    "expand_minus1": lambda x: x[:, :, :1].expand(-1, -1, 6),
    "unsqueeze0": lambda x: x.unsqueeze(0),
    "unsqueeze_mid": lambda x: x.unsqueeze(2),
    "unsqueeze_neg": lambda x: x.unsqueeze(-1),
    "squeeze_dim": lambda x: x[:, :1].squeeze(1),
    "squeeze_negative": lambda x: x[:, :, :1].squeeze(-1),
    "squeeze_all": lambda x: x[:1, :, :1].squeeze(),
    "squeeze_noop": lambda x: x.squeeze(1),
    "flatten": lambda x: x.flatten(),
    "flatten_start": lambda x: x.flatten(1),
    "flatten_range": lambda x: x.flatten(0, 1),
    "flatten_neg": lambda x: x.flatten(start_dim=-2, end_dim=-1),
    "contiguous": lambda x: x.permute(2, 0, 1).contiguous(),
    "clone": lambda x: x.clone() * 2,
    "transposed_reshape": lambda x: x.transpose(0, 2).reshape(4, 6),
    "permuted_sum": lambda x: x.permute(1, 2, 0).sum(0),
    "double_transpose": lambda x: x.transpose(0, 1).transpose(1, 2),
    "expand_then_reshape": lambda x: x[:, :1].expand(2, 4, 4).reshape(8, 4),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_op(name):
    check_op([(2, 3, 4)], SHAPE_OPS[name])


def test_t_and_T():
    check_op([(3, 4)], lambda x: x.t())
    check_op([(3, 4)], lambda x: x.T)
    check_op([(5,)], lambda x: x.t())


def test_view_after_transpose_matmul_chain():
    check_op([(3, 4), (3, 4)], lambda a, b: (a.T.reshape(3, 4) * b).transpose(0, 1).sum(0))


def test_shape_attributes():
    x = cgrad.zeros(2, 3, 4)
    assert x.shape == (2, 3, 4) and isinstance(x.shape, tuple)
    assert x.ndim == 3 and x.dim() == 3
    assert x.size() == (2, 3, 4) and x.size(1) == 3 and x.size(-1) == 4
    assert x.numel() == 24
    assert cgrad.tensor(3.0).shape == () and cgrad.tensor(3.0).numel() == 1


def test_reshape_shares_memory_when_contiguous():
    base = cgrad.zeros(2, 3)
    view = base.reshape(3, 2)
    view.fill_(2.0)
    np.testing.assert_array_equal(to_numpy(base), np.full((2, 3), 2.0))


def test_slice_is_a_view():
    base = cgrad.zeros(3, 4)
    row = base[1]
    row.fill_(5.0)
    col = base[:, 2]
    col.add_(cgrad.ones(3))
    expect = np.zeros((3, 4))
    expect[1] = 5.0
    expect[:, 2] += 1.0
    np.testing.assert_array_equal(to_numpy(base), expect)


def test_transpose_is_a_view_and_contiguous_copies():
    base = cgrad.zeros(2, 3)
    t = base.transpose(0, 1)
    c = t.contiguous()
    c.fill_(1.0)
    assert to_numpy(base).sum() == 0.0
    t.fill_(3.0)
    assert (to_numpy(base) == 3.0).all()


def test_expanded_gradient_sums_over_broadcast_dims():
    x = cgrad.tensor([[1.0], [2.0]], requires_grad=True)
    x.expand(2, 3).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [[3.0], [3.0]])


# ------------------------------------------------------------- indexing
IDX_REPEAT = Const(np.array([0, 2, 0, 3, 2]))
IDX_NEG = Const(np.array([-1, 0, -3, -1]))
MASK_2D = Const(np.random.default_rng(7).random((4, 5)) > 0.4)
MASK_ROWS = Const(np.array([True, False, True, True]))

INDEXING = {
    "int": ([(4, 5)], lambda x: x[1]),
    "negative_int": ([(4, 5)], lambda x: x[-1]),
    "two_ints": ([(4, 5)], lambda x: x[2, 3]),
    "int_then_slice": ([(4, 5)], lambda x: x[1, 1:4]),
    "slice": ([(4, 5)], lambda x: x[1:3]),
    "slice_step": ([(4, 5)], lambda x: x[::2]),
    "slice_step_both": ([(4, 5)], lambda x: x[1:, ::3]),
    "slice_negative": ([(4, 5)], lambda x: x[-3:-1, -2:]),
    "slice_clamped": ([(4, 5)], lambda x: x[-10:100]),
    "slice_col": ([(4, 5)], lambda x: x[:, 2]),
    "none_front": ([(4, 5)], lambda x: x[None]),
    "none_mid": ([(4, 5)], lambda x: x[:, None, 1:]),
    "none_end": ([(4, 5)], lambda x: x[..., None]),
    "ellipsis_last": ([(2, 3, 4)], lambda x: x[..., 1]),
    "ellipsis_mid": ([(2, 3, 4)], lambda x: x[0, ..., 2]),
    "ellipsis_only": ([(2, 3, 4)], lambda x: x[...]),
    "index_tensor_repeated": ([(4, 5), IDX_REPEAT], lambda x, i: x[i]),
    "index_tensor_negative": ([(4, 5), IDX_NEG], lambda x, i: x[i]),
    "index_tensor_dim1": ([(5, 4), IDX_REPEAT], lambda x, i: x[:, i]),
    "index_tensor_2d": ([(4, 5), Const(np.array([[0, 1], [3, 0]]))], lambda x, i: x[i]),
    "index_list": ([(4, 5)], lambda x: x[[0, 2, 0]]),
    "bool_mask_full": ([(4, 5), MASK_2D], lambda x, m: x[m]),
    "bool_mask_rows": ([(4, 5), MASK_ROWS], lambda x, m: x[m]),
    "mask_from_comparison": ([(4, 5)], lambda x: x[x > 0]),
    "index_chain": ([(4, 5)], lambda x: x[1:][:, ::2][0]),
    "index_1d_to_0d": ([(6,)], lambda x: x[3]),
}


@pytest.mark.parametrize("name", list(INDEXING))
def test_indexing(name):
    specs, fn = INDEXING[name]
    check_op(specs, fn)


def test_repeated_index_accumulates_gradient():
    x = cgrad.zeros(3, requires_grad=True)
    x[cgrad.tensor([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [3.0, 0.0, 1.0])


def test_gradient_through_overlapping_slices():
    check_op([(6, 3)], lambda x: x[:4] * x[2:])


GATHER_IDX = Const(np.array([[0, 1, 1, 0], [2, 2, 0, 1], [1, 0, 2, 2]]))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_gather(dim):
    if dim == 0:
        idx = Const(np.array([[0, 2, 1, 2, 0], [2, 2, 0, 1, 0]]))
    else:
        idx = Const(np.array([[0, 4, 4], [1, 1, 3], [2, 0, 0]]))
    check_op([(3, 5), idx], lambda x, i: x.gather(dim, i))


def test_gather_3d(): check_op([(2, 3, 4), Const(np.random.default_rng(2).integers(0, 3, (2, 5, 4)))],
                               lambda x, i: lib(x).gather(x, 1, i))


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_index_select(dim):
    check_op([(4, 5, 3), Const(np.array([1, 0, 1, 2, 2]))], lambda x, i: x.index_select(dim, i))


def test_index_select_function():
    check_op([(4, 5), Const(np.array([3, 3, 0]))], lambda x, i: lib(x).index_select(x, 0, i))


def test_index_select_empty_index():
    check_op([(4, 5), Const(np.zeros(0, np.int64))], lambda x, i: x.index_select(0, i))


CAT_CASES = {
    "dim0": ([(2, 3), (4, 3)], 0),
    "dim1": ([(2, 3), (2, 1), (2, 4)], 1),
    "dim_neg": ([(2, 3, 1), (2, 3, 2)], -1),
    "1d": ([(3,), (5,)], 0),
    "single": ([(2, 3)], 1),
    "with_empty": ([(0, 3), (2, 3)], 0),
}


@pytest.mark.parametrize("name", list(CAT_CASES))
def test_cat(name):
    shapes, dim = CAT_CASES[name]
    check_op(shapes, lambda *ts: lib(ts[0]).cat(list(ts), dim))


def test_cat_tuple_and_kw(): check_op([(2, 2), (2, 2)], lambda a, b: lib(a).cat((a, b), dim=1))
def test_cat_same_tensor_twice(): check_op([(2, 3)], lambda a: lib(a).cat([a, a * 2, a], 0))


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(dim):
    check_op([(2, 3), (2, 3), (2, 3)], lambda a, b, c: lib(a).stack([a, b, c], dim))


def test_stack_same_tensor_twice(): check_op([(3,)], lambda a: lib(a).stack((a, a), dim=1))
def test_stack_0d(): check_op([(), ()], lambda a, b: lib(a).stack([a, b]))


# ------------------------------------------------------- numpy interop
def test_tensor_copies_numpy():
    arr = np.arange(6.0).reshape(2, 3)
    t = cgrad.tensor(arr)
    arr[0, 0] = 100.0
    assert to_numpy(t)[0, 0] == 0.0


def test_from_numpy_shares_memory():
    arr = np.arange(6.0).reshape(2, 3)
    t = cgrad.from_numpy(arr)
    assert t.dtype == cgrad.float64
    arr[0, 0] = 100.0
    assert to_numpy(t)[0, 0] == 100.0
    t.mul_(cgrad.tensor(2.0, dtype=cgrad.float64))
    assert arr[1, 2] == 10.0


def test_numpy_is_zero_copy():
    t = cgrad.zeros(2, 3)
    a = t.numpy()
    a[1, 1] = 4.0
    assert to_numpy(t)[1, 1] == 4.0
    b = np.asarray(t)
    assert b.dtype == np.float32 and b.shape == (2, 3)


def test_numpy_of_view_has_right_values():
    t = cgrad.tensor(np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(t[:, 1:3].numpy(), np.arange(12.0).reshape(3, 4)[:, 1:3])
    np.testing.assert_array_equal(t.T.numpy(), np.arange(12.0).reshape(3, 4).T)


def test_numpy_refuses_requires_grad():
    t = cgrad.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="detach|grad"):
        t.numpy()
    assert t.detach().numpy().shape == (2,)


NONCONTIG = {
    "strided": lambda a: a[:, ::2],
    "transposed": lambda a: a.T,
    "negative_stride": lambda a: a[::-1],
    "fortran": lambda a: np.asfortranarray(a),
    "column": lambda a: a[:, 1],
}


@pytest.mark.parametrize("name", list(NONCONTIG))
def test_tensor_from_noncontiguous_numpy(name):
    arr = NONCONTIG[name](np.arange(20.0).reshape(4, 5))
    t = cgrad.tensor(arr)
    assert t.shape == arr.shape
    np.testing.assert_array_equal(to_numpy(t), arr)
    np.testing.assert_array_equal(to_numpy(t.contiguous().reshape(-1)), arr.reshape(-1))


@pytest.mark.parametrize("name", list(NONCONTIG))
def test_from_numpy_noncontiguous(name):
    # Either a correct zero-copy view or a clear ValueError; never wrong data.
    arr = NONCONTIG[name](np.arange(20.0).reshape(4, 5))
    try:
        t = cgrad.from_numpy(arr)
    except ValueError as e:
        assert "contiguous" in str(e) or "stride" in str(e)
        return
    np.testing.assert_array_equal(to_numpy(t), arr)
    arr[0, ...] = -1.0
    np.testing.assert_array_equal(to_numpy(t), arr)


def test_from_numpy_unsupported_dtype():
    for arr in (np.zeros(3, np.int32), np.zeros(3, np.complex128), np.array(["a", "b"])):
        with pytest.raises(TypeError, match="dtype|type"):
            cgrad.from_numpy(arr)
    h = np.array([1.5, -2.0], np.float16)  # float16 is a dtype (storage on the cpu)
    assert cgrad.from_numpy(h).dtype == cgrad.float16 and np.shares_memory(cgrad.from_numpy(h).numpy(), h)
    with pytest.raises(TypeError):
        cgrad.tensor(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        cgrad.tensor(["a", "b"])


def test_tensor_ragged_list_raises():
    with pytest.raises(ValueError):
        cgrad.tensor([[1.0, 2.0], [3.0]])


def test_tolist_item():
    t = cgrad.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert t.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert t[1, 0].item() == 3.0 and isinstance(t[1, 0].item(), float)
    assert cgrad.tensor([7]).item() == 7 and isinstance(cgrad.tensor([7]).item(), int)
    with pytest.raises((ValueError, RuntimeError), match="element|one|item"):
        t.item()


# ----------------------------------------------------------------- errors
def test_bad_dim_raises_index_error():
    x = cgrad.ones(2, 3)
    cases = [lambda: x.sum(2), lambda: x.sum(-3), lambda: x.sum((0, 5)), lambda: x.mean(3),
             lambda: x.var(2), lambda: x.max(2), lambda: x.amax(4), lambda: x.argmax(2),
             lambda: x.softmax(2), lambda: x.log_softmax(-3), lambda: x.logsumexp(2),
             lambda: x.transpose(0, 2), lambda: x.squeeze(3), lambda: x.unsqueeze(4),
             lambda: x.unsqueeze(-4), lambda: x.flatten(0, 3), lambda: cgrad.cat([x, x], 2),
             lambda: cgrad.stack([x, x], 4), lambda: x.index_select(2, cgrad.tensor([0])),
             lambda: x.gather(2, cgrad.zeros(2, 3, dtype=cgrad.int64))]
    for i, case in enumerate(cases):
        with pytest.raises(IndexError, match="dim|range"):
            case()


def test_repeated_reduction_dim_raises():
    with pytest.raises((ValueError, RuntimeError), match="dim|repeat|multiple|twice"):
        cgrad.ones(2, 3).sum((0, 0))
    with pytest.raises((ValueError, RuntimeError), match="dim|repeat|multiple|twice"):
        cgrad.ones(2, 3).sum((1, -1))


def test_shape_op_errors():
    x = cgrad.ones(2, 3)
    for case in (lambda: x.reshape(4, 2), lambda: x.reshape(-1, -1), lambda: x.view(5),
                 lambda: x.permute(0), lambda: x.permute(0, 0), lambda: x.permute(0, 1, 2),
                 lambda: x.expand(4, 3), lambda: x.expand(3), lambda: x.expand(2, 3, 3)):
        with pytest.raises((ValueError, RuntimeError, IndexError)):
            case()


def test_reshape_numel_mismatch_message():
    with pytest.raises(ValueError) as info:
        cgrad.ones(2, 3).reshape(4, 2)
    assert "6" in str(info.value) or "(2, 3)" in str(info.value)


def test_out_of_range_indexing_raises_index_error():
    x = cgrad.ones(3, 4)
    cases = [lambda: x[3], lambda: x[-4], lambda: x[0, 4], lambda: x[0, 0, 0],
             lambda: x[cgrad.tensor([0, 3])], lambda: x[cgrad.tensor([-4])], lambda: x[[5]],
             lambda: x[:, cgrad.tensor([4])],
             lambda: x[cgrad.tensor([True, False])],
             lambda: x.index_select(0, cgrad.tensor([0, 3])),
             lambda: x.gather(1, cgrad.tensor([[0], [4], [1]]))]
    for case in cases:
        with pytest.raises(IndexError):
            case()


def test_out_of_range_message_names_index():
    with pytest.raises(IndexError) as info:
        cgrad.ones(3, 4)[cgrad.tensor([0, 7])]
    assert "7" in str(info.value)


def test_bad_index_types():
    x = cgrad.ones(3, 4)
    with pytest.raises((TypeError, IndexError)):
        x[1.5]
    with pytest.raises((TypeError, IndexError)):
        x["a"]
    with pytest.raises((TypeError, IndexError)):
        x[cgrad.tensor([0.0, 1.0])]
    with pytest.raises(TypeError):
        x.index_select(0, cgrad.tensor([0.0]))
    with pytest.raises(TypeError):
        x.gather(1, cgrad.tensor([[0.0], [1.0], [0.0]]))


def test_negative_slice_step_raises():
    with pytest.raises(ValueError, match="step"):
        cgrad.ones(4)[::-1]


def test_gather_and_index_select_shape_errors():
    x = cgrad.ones(3, 4)
    with pytest.raises((ValueError, RuntimeError)):
        x.gather(1, cgrad.tensor([0, 1]))  # index ndim != input ndim
    with pytest.raises((ValueError, RuntimeError)):
        x.index_select(0, cgrad.tensor([[0, 1]]))  # index must be 1-D


def test_cat_stack_errors():
    a, b = cgrad.ones(2, 3), cgrad.ones(2, 4)
    with pytest.raises(ValueError, match="size|shape"):
        cgrad.cat([a, b], 0)
    with pytest.raises(ValueError):
        cgrad.cat([a, cgrad.ones(3)], 0)
    with pytest.raises((ValueError, RuntimeError)):
        cgrad.cat([], 0)
    with pytest.raises(ValueError, match="size|shape"):
        cgrad.stack([a, b])
    with pytest.raises((ValueError, RuntimeError)):
        cgrad.stack([])


# ------------------------------------------------------------ empty, NaN
def test_empty_reductions():
    x = cgrad.zeros(0, 3, requires_grad=True)
    assert x.sum().item() == 0.0
    assert x.sum(0).shape == (3,) and to_numpy(x.sum(0)).tolist() == [0.0, 0.0, 0.0]
    assert x.sum(1).shape == (0,)
    assert np.isnan(to_numpy(x.mean(0))).all()
    (x.sum() * 2).backward()
    assert x.grad.shape == (0, 3)
    for case in (lambda: x.max(), lambda: x.argmax(), lambda: x.amax(0)):
        with pytest.raises((ValueError, IndexError, RuntimeError), match="empty|zero|0"):
            case()
    assert x.amax(1).shape == (0,)


def test_empty_shapes_and_slices():
    x = cgrad.ones(3, 4, requires_grad=True)
    e = x[5:]
    assert e.shape == (0, 4)
    assert x[1:1].shape == (0, 4)
    assert e.reshape(4, 0).shape == (4, 0)
    assert e.T.shape == (4, 0)
    (e.sum() + x[0, 0]).backward()
    np.testing.assert_array_equal(to_numpy(x.grad)[1:], 0.0)
    assert cgrad.cat([cgrad.ones(0, 2), cgrad.ones(3, 2)]).shape == (3, 2)
    assert cgrad.stack([cgrad.ones(0), cgrad.ones(0)]).shape == (2, 0)
    assert cgrad.zeros(0).softmax(0).shape == (0,)


def test_nan_reductions():
    nan = float("nan")
    x = cgrad.tensor([[1.0, nan], [2.0, 3.0]])
    assert np.isnan(x.sum().item())
    np.testing.assert_array_equal(np.isnan(to_numpy(x.sum(1))), [True, False])
    np.testing.assert_array_equal(np.isnan(to_numpy(x.amax(1))), [True, False])
    assert np.isnan(x.max().item())
    assert np.isnan(x.mean().item())


# ------------------------------------------- ops on non-contiguous views
VIEWS = {
    "transposed": lambda x: x.transpose(0, 1),
    "strided": lambda x: x[:, ::2],
    "offset": lambda x: x[1:, 1:],
    "both_strided": lambda x: x.T[::2].T[::2],
    "expanded": lambda x: x[:1].expand(3, 6) * 1.0 + x[:, :1].expand(3, 6),
}
VIEW_OPS = {
    "exp": lambda y: y.exp(),
    "mul_self_T": lambda y: y * y,
    "add_row": lambda y: y + y[0],
    "sum0": lambda y: y.sum(0),
    "mean1": lambda y: y.mean(1, keepdim=True),
    "amax1": lambda y: y.amax(1),
    "var0": lambda y: y.var(0),
    "softmax0": lambda y: y.softmax(0),
    "log_softmax1": lambda y: y.log_softmax(1),
    "logsumexp0": lambda y: y.logsumexp(0),
    "matmul": lambda y: y @ y.T,
    "gather": lambda y: y.gather(0, lib(y).zeros(1, y.shape[1], dtype=lib(y).int64)),
    "index_select": lambda y: y.index_select(1, lib(y).tensor([0, 0, 1])),
    "cat": lambda y: lib(y).cat([y, y * 2], 1),
    "reshape": lambda y: y.reshape(-1),
    "clamp": lambda y: y.clamp(-0.5, 0.5),
}


@pytest.mark.parametrize("op", list(VIEW_OPS))
@pytest.mark.parametrize("view", list(VIEWS))
def test_op_on_noncontiguous_view(view, op):
    check_op([(3, 6)], lambda x: VIEW_OPS[op](VIEWS[view](x)), f32=False)


# ---------------------------------------------- larger sizes, vs NumPy
@pytest.mark.parametrize("shape,dim", [((1000,), 0), ((64, 300), 1), ((300, 64), 0),
                                       ((7, 129, 33), (0, 2))], ids=str)
def test_large_reductions_match_numpy(shape, dim):
    x = np.random.default_rng(0).standard_normal(shape)
    t = cgrad.tensor(x)
    np.testing.assert_allclose(to_numpy(t.sum(dim)), x.sum(dim), rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(to_numpy(t.mean(dim)), x.mean(dim), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(to_numpy(t.var(dim)), x.var(dim, ddof=1), rtol=1e-11)
    np.testing.assert_allclose(to_numpy(t.amax(dim)), x.max(dim))
    m = x.max(dim, keepdims=True)
    lse = np.log(np.exp(x - m).sum(dim, keepdims=True)) + m
    np.testing.assert_allclose(to_numpy(t.logsumexp(dim)), np.squeeze(lse, dim), rtol=1e-12)
    if isinstance(dim, int):
        sm = np.exp(x - lse)
        np.testing.assert_allclose(to_numpy(t.softmax(dim)), sm, rtol=1e-11, atol=1e-15)
        np.testing.assert_array_equal(to_numpy(t.argmax(dim)), x.argmax(dim))


def test_float32_sum_is_accurate():
    # a naive float32 running sum drifts by ~1e-4 here; pairwise/blocked sums don't
    a = np.random.default_rng(0).random(10 ** 6).astype(np.float32)
    exact = a.astype(np.float64).sum()
    assert abs(cgrad.tensor(a).sum().item() - exact) / exact < 1e-6
    assert abs(cgrad.tensor(a.reshape(1000, 1000)).sum(0).sum().item() - exact) / exact < 1e-6
    assert cgrad.ones(2 ** 25).sum().item() == 2 ** 25


# --------------------------------------------- special values, integers
def test_softmax_with_minus_inf_has_finite_gradient():
    ninf = -float("inf")
    for name in ("softmax", "log_softmax"):
        z = cgrad.tensor([[0.0, ninf, 1.0], [ninf, 2.0, ninf]], dtype=cgrad.float64,
                         requires_grad=True)
        y = getattr(z, name)(1)
        keep = cgrad.tensor([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]], dtype=cgrad.float64)
        yv = to_numpy(y)
        assert np.isfinite(yv[[0, 0, 1], [0, 2, 1]]).all()
        (cgrad.where(keep > 0, y, cgrad.zeros_like(y)) * keep).sum().backward()
        assert np.isfinite(to_numpy(z.grad)).all(), (name, to_numpy(z.grad))


def test_integer_and_bool_reductions():
    i = cgrad.tensor([[1, 5, 3], [2, 2, 7]])
    assert i.sum().dtype == cgrad.int64 and i.sum().item() == 20
    np.testing.assert_array_equal(to_numpy(i.sum(0)), [3, 7, 10])
    assert i.max().item() == 7 and i.amin(1).tolist() == [1, 2]
    np.testing.assert_array_equal(to_numpy(i.argmax(1)), [1, 2])
    b = cgrad.tensor([True, False, True])
    assert b.sum().dtype == cgrad.int64 and b.sum().item() == 2


def test_var_of_single_element_is_nan():
    assert np.isnan(cgrad.tensor([1.0]).var().item())
    assert cgrad.tensor([1.0]).var(correction=0).item() == 0.0


def test_detach_cuts_the_graph():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.grad_fn is None
    (d * x).sum().backward()
    np.testing.assert_array_equal(to_numpy(x.grad), [1.0, 2.0])


def test_numpy_index_types():
    x = cgrad.tensor([10.0, 20.0, 30.0])
    assert x[np.int64(1)].item() == 20.0
    np.testing.assert_array_equal(to_numpy(x[np.array([2, 0, 2])]), [30.0, 10.0, 30.0])
    np.testing.assert_array_equal(to_numpy(x[np.array([True, False, True])]), [10.0, 30.0])
