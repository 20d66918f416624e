"""Bad input raises a Python exception; it never takes the interpreter down.

Every case runs in a worker subprocess (this file run as a script), so a
segfault or abort inside the C core is reported against the case that
caused it instead of killing pytest. Cases run one after another in one
worker; after a crash a fresh worker carries on with the next case.

A case either demands an exception (`raises`), or accepts a clean exception
or a correct result (`raises_or`) where raising and supporting the input
are both reasonable (e.g. float16 NumPy input).
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cgrad
from cgrad.nn import functional as F

ERRORS = (ValueError, TypeError, IndexError, RuntimeError)
SIZE_ERRORS = ERRORS + (MemoryError, OverflowError)
CASE_TIMEOUT_S = 60

CASES = {}


def case(name, fn):
    assert name not in CASES, name
    CASES[name] = fn


def raises(fn, types=ERRORS):
    try:
        fn()
    except types as error:
        assert str(error).strip(), f"{type(error).__name__} with an empty message"
        return
    except Exception as error:  # the wrong kind of exception still counts as a failure
        raise AssertionError(
            f"raised {type(error).__name__}: {error}; expected one of "
            f"{[t.__name__ for t in types]}") from error
    raise AssertionError("did not raise")


def raises_or(fn, check, types=SIZE_ERRORS):
    try:
        result = fn()
    except types:
        return
    check(result)


def values(t):
    return np.asarray(t.detach().numpy())


def close_to(expected, rtol=1e-6, atol=1e-6):
    def check(result):
        np.testing.assert_allclose(values(result), expected, rtol=rtol, atol=atol)
    return check


def has_shape(shape):
    def check(result):
        assert tuple(result.shape) == tuple(shape), (result.shape, shape)
    return check


def anything(result):
    pass


def f32(*shape, grad=False):
    return cgrad.randn(*shape, requires_grad=grad)


# ------------------------------------------------ binary ops, wrong shapes

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
    "maximum": cgrad.maximum,
    "minimum": cgrad.minimum,
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "where_a": lambda a, b: cgrad.where(a > 0, a, b),
    "where_cond": lambda a, b: cgrad.where(b > 0, a, a),
    "mse_loss": F.mse_loss,
}
for _name, _op in BINARY.items():
    case(f"shape_{_name}", lambda op=_op: raises(lambda: op(f32(2, 3, grad=True), f32(4))))
    case(f"shape_{_name}_reflected",
         lambda op=_op: raises(lambda: op(f32(4), f32(2, 3, grad=True))))

case("shape_add_inplace_cannot_grow_target",
     lambda: raises(lambda: cgrad.zeros(3).add_(cgrad.zeros(2, 3))))
case("shape_mul_inplace_mismatch", lambda: raises(lambda: cgrad.zeros(3).mul_(cgrad.zeros(4))))
case("shape_copy_inplace_mismatch", lambda: raises(lambda: cgrad.zeros(3).copy_(cgrad.zeros(4))))
case("shape_matmul_2d", lambda: raises(lambda: f32(2, 3, grad=True) @ f32(4, 5)))
case("shape_matmul_1d", lambda: raises(lambda: f32(3) @ f32(4)))
case("shape_matmul_1d_2d", lambda: raises(lambda: f32(3) @ f32(4, 2)))
case("shape_matmul_batch", lambda: raises(lambda: f32(2, 3, 4) @ f32(5, 4, 2)))
case("shape_matmul_0d", lambda: raises(lambda: cgrad.tensor(2.0) @ f32(3)))
case("shape_linear", lambda: raises(lambda: F.linear(f32(2, 3), f32(4, 5))))
case("shape_linear_bias", lambda: raises(lambda: F.linear(f32(2, 3), f32(4, 3), f32(5))))

CONV_X = (1, 3, 8, 8)
CONV_BAD = {
    "channels": dict(w=(4, 2, 3, 3)),
    "weight_3d": dict(w=(4, 3, 3)),
    "input_2d": dict(x=(8, 8)),
    "kernel_bigger_than_input": dict(w=(4, 3, 10, 10)),
    "stride_0": dict(stride=0),
    "stride_negative": dict(stride=-1),
    "padding_negative": dict(padding=-1),
    "dilation_0": dict(dilation=0),
    "groups_not_dividing": dict(groups=2),
    "groups_0": dict(groups=0),
    "bias_size": dict(b=(5,)),
    "dtype_int_input": dict(x_int=True),
}
for _name, _kw in CONV_BAD.items():
    def _conv_case(kw=_kw):
        x = f32(*kw.get("x", CONV_X), grad=True)
        if kw.get("x_int"):
            x = cgrad.ones(*CONV_X, dtype=cgrad.int64)
        w = f32(*kw.get("w", (4, 3, 3, 3)), grad=True)
        b = f32(*kw["b"]) if "b" in kw else None
        options = {k: kw[k] for k in ("stride", "padding", "dilation", "groups") if k in kw}
        raises(lambda: F.conv2d(x, w, b, **options))
    case(f"conv2d_{_name}", _conv_case)

for _pool in ("max_pool2d", "avg_pool2d"):
    _fn = getattr(F, _pool)
    case(f"{_pool}_kernel_0", lambda fn=_fn: raises(lambda: fn(f32(1, 1, 4, 4), 0)))
    case(f"{_pool}_kernel_bigger_than_input",
         lambda fn=_fn: raises(lambda: fn(f32(1, 1, 4, 4), 5)))
    case(f"{_pool}_stride_0", lambda fn=_fn: raises(lambda: fn(f32(1, 1, 4, 4), 2, stride=0)))
    case(f"{_pool}_input_2d", lambda fn=_fn: raises(lambda: fn(f32(4, 4), 2)))
    case(f"{_pool}_padding_negative",
         lambda fn=_fn: raises(lambda: fn(f32(1, 1, 4, 4), 2, padding=-1)))
    case(f"{_pool}_padding_over_half_kernel",
         lambda fn=_fn: raises_or(lambda: fn(f32(1, 1, 4, 4, grad=True), 2, padding=2),
                                  anything))

# ------------------------------------------- losses and index-reading ops

case("cross_entropy_batch_mismatch",
     lambda: raises(lambda: F.cross_entropy(f32(4, 10, grad=True), cgrad.zeros(5, dtype=cgrad.int64))))
case("cross_entropy_target_too_big",
     lambda: raises(lambda: F.cross_entropy(f32(4, 10, grad=True), cgrad.tensor([0, 1, 10, 2]))))
case("cross_entropy_target_huge",
     lambda: raises(lambda: F.cross_entropy(f32(2, 10, grad=True), cgrad.tensor([0, 2**40]))))
case("cross_entropy_target_negative",
     lambda: raises(lambda: F.cross_entropy(f32(4, 10, grad=True), cgrad.tensor([0, -1, 2, 3]))))
case("cross_entropy_target_2d",
     lambda: raises(lambda: F.cross_entropy(f32(4, 10), cgrad.zeros(4, 2, dtype=cgrad.int64))))
case("cross_entropy_target_float_wrong_shape",
     lambda: raises(lambda: F.cross_entropy(f32(4, 10), cgrad.zeros(4))))
case("embedding_index_too_big",
     lambda: raises(lambda: F.embedding(cgrad.tensor([[0, 5]]), f32(5, 3, grad=True))))
case("embedding_index_negative",
     lambda: raises_or(lambda: F.embedding(cgrad.tensor([-1]), cgrad.ones(5, 3)),
                       close_to([[1.0, 1.0, 1.0]]), ERRORS))
case("embedding_float_index",
     lambda: raises(lambda: F.embedding(cgrad.tensor([0.0]), f32(5, 3))))
case("gather_index_too_big",
     lambda: raises(lambda: f32(3, 3, grad=True).gather(0, cgrad.tensor([[0, 3, 1]]))))
case("gather_index_negative",
     lambda: raises(lambda: f32(3, 3).gather(1, cgrad.tensor([[-5, 0, 1]]))))
case("gather_index_wrong_ndim",
     lambda: raises(lambda: f32(3, 3).gather(0, cgrad.tensor([0, 1]))))
case("gather_float_index", lambda: raises(lambda: f32(3, 3).gather(0, cgrad.zeros(1, 3))))
case("gather_dim_out_of_range",
     lambda: raises(lambda: f32(3, 3).gather(2, cgrad.tensor([[0, 0, 0]]))))
case("index_select_too_big",
     lambda: raises(lambda: f32(3, 2, grad=True).index_select(0, cgrad.tensor([0, 3]))))
case("index_select_too_negative",
     lambda: raises(lambda: f32(3, 2).index_select(0, cgrad.tensor([-4]))))
case("index_select_huge",
     lambda: raises(lambda: f32(3, 2).index_select(0, cgrad.tensor([2**62]))))
case("index_select_2d_index",
     lambda: raises(lambda: f32(3, 2).index_select(0, cgrad.tensor([[0, 1]]))))
case("index_select_float_index",
     lambda: raises(lambda: f32(3, 2).index_select(0, cgrad.tensor([0.0]))))
case("index_select_dim", lambda: raises(lambda: f32(3, 2).index_select(2, cgrad.tensor([0]))))
case("dropout_p_above_1", lambda: raises(lambda: F.dropout(f32(4), p=1.5)))
case("dropout_p_negative", lambda: raises(lambda: F.dropout(f32(4), p=-0.1)))

# ------------------------------------------------------------- indexing

INDEX_BAD = {
    "int_past_end": (lambda x: x[3], (IndexError,)),
    "int_before_start": (lambda x: x[-4], (IndexError,)),
    "int_huge": (lambda x: x[2**62], (IndexError,)),
    "int_huge_negative": (lambda x: x[-2**62], (IndexError,)),
    "int_over_int64": (lambda x: x[2**63], (IndexError, OverflowError, ValueError)),
    "too_many_indices": (lambda x: x[0, 0, 0], (IndexError,)),
    "second_dim_past_end": (lambda x: x[0, 2], (IndexError,)),
    "tensor_past_end": (lambda x: x[cgrad.tensor([0, 3])], (IndexError, RuntimeError)),
    "tensor_too_negative": (lambda x: x[cgrad.tensor([-4])], (IndexError, RuntimeError)),
    "tensor_huge": (lambda x: x[cgrad.tensor([2**62])], (IndexError, RuntimeError)),
    "list_past_end": (lambda x: x[[0, 7]], (IndexError, RuntimeError)),
    "bool_mask_wrong_shape": (lambda x: x[cgrad.tensor([True, False])], ERRORS),
    "float_tensor_index": (lambda x: x[cgrad.tensor([0.0])], (IndexError, TypeError, RuntimeError)),
    "float_index": (lambda x: x[1.5], (IndexError, TypeError)),
    "string_index": (lambda x: x["a"], (IndexError, TypeError)),
    "none_step_zero": (lambda x: x[::0], (ValueError,)),
    "negative_step": (lambda x: x[::-1], (ValueError,)),
}
for _name, (_fn, _types) in INDEX_BAD.items():
    case(f"index_{_name}",
         lambda fn=_fn, types=_types: raises(lambda: fn(f32(3, 2, grad=True)), types))

case("index_slice_start_huge", lambda: raises_or(lambda: f32(3, 2)[2**62:], has_shape((0, 2)), ERRORS))
case("index_slice_start_huge_negative",
     lambda: raises_or(lambda: f32(3, 2)[-2**62:], has_shape((3, 2)), ERRORS))
case("index_slice_stop_over_int64",
     lambda: raises_or(lambda: f32(3, 2)[:2**63], has_shape((3, 2)), SIZE_ERRORS))
case("index_two_advanced",  # supported (PyTorch's answer) or refused as unsupported
     lambda: raises_or(lambda: cgrad.tensor([[1.0, 2.0], [3.0, 4.0]])[[0, 1], [1, 0]],
                       close_to([2.0, 3.0]), (IndexError, ValueError, RuntimeError)))


def _setitem():
    t = cgrad.zeros(3)
    t[1] = 5.0
    return t


case("index_setitem", lambda: raises_or(_setitem, close_to([0.0, 5.0, 0.0]), ERRORS))
case("inplace_on_view_of_leaf_requiring_grad",
     lambda: raises(lambda: f32(3, 2, grad=True)[0].add_(cgrad.ones(2)), (RuntimeError,)))

# ---------------------------------------------------------- dims out of range

DIM_BAD = {
    "sum_dim": lambda x: x.sum(dim=5),
    "sum_dim_negative": lambda x: x.sum(dim=-3),
    "sum_dim_repeated": lambda x: x.sum(dim=(0, 0)),
    "sum_dim_repeated_negative": lambda x: x.sum(dim=(1, -1)),
    "mean_dim": lambda x: x.mean(dim=2),
    "var_dim": lambda x: x.var(dim=2),
    "max_dim": lambda x: x.max(dim=2),
    "amax_dim": lambda x: x.amax(dim=2),
    "argmax_dim": lambda x: x.argmax(dim=2),
    "argmin_dim": lambda x: x.argmin(dim=-3),
    "logsumexp_dim": lambda x: x.logsumexp(dim=3),
    "softmax_dim": lambda x: x.softmax(dim=2),
    "log_softmax_dim": lambda x: x.log_softmax(dim=-3),
    "transpose_dim": lambda x: x.transpose(0, 5),
    "permute_repeated": lambda x: x.permute(0, 0),
    "permute_short": lambda x: x.permute(0),
    "permute_long": lambda x: x.permute(0, 1, 2),
    "permute_out_of_range": lambda x: x.permute(0, 7),
    "squeeze_dim": lambda x: x.squeeze(5),
    "unsqueeze_dim": lambda x: x.unsqueeze(4),
    "unsqueeze_dim_negative": lambda x: x.unsqueeze(-4),
    "flatten_reversed": lambda x: x.flatten(1, 0),
    "flatten_dim": lambda x: x.flatten(start_dim=5),
    "cat_dim": lambda x: cgrad.cat([x, x], dim=2),
    "stack_dim": lambda x: cgrad.stack([x, x], dim=4),
    "index_select_dim_negative": lambda x: x.index_select(-3, cgrad.tensor([0])),
}
for _name, _fn in DIM_BAD.items():
    case(f"dim_{_name}", lambda fn=_fn: raises(lambda: fn(f32(3, 2, grad=True)), (IndexError, ValueError, RuntimeError)))

case("cat_empty_list", lambda: raises(lambda: cgrad.cat([])))
case("stack_empty_list", lambda: raises(lambda: cgrad.stack([])))
case("cat_shape_mismatch", lambda: raises(lambda: cgrad.cat([f32(2, 3, grad=True), f32(2, 4)])))
case("cat_ndim_mismatch", lambda: raises(lambda: cgrad.cat([f32(2, 3), f32(3)])))
case("stack_shape_mismatch", lambda: raises(lambda: cgrad.stack([f32(2, 3), f32(3, 2)])))
case("cat_not_tensors", lambda: raises(lambda: cgrad.cat([f32(2), "a"])))
case("cat_mixed_dtypes", lambda: raises_or(
    lambda: cgrad.cat([cgrad.ones(2), cgrad.ones(2, dtype=cgrad.float64)]),
    close_to([1.0] * 4), ERRORS))

# ----------------------------------------------------------- shape arguments

case("zeros_negative", lambda: raises(lambda: cgrad.zeros(-1)))
case("ones_negative", lambda: raises(lambda: cgrad.ones(2, -3)))
case("empty_negative", lambda: raises(lambda: cgrad.empty(-1)))
case("full_negative", lambda: raises(lambda: cgrad.full((-1,), 1.0)))
case("randn_negative", lambda: raises(lambda: cgrad.randn(-2)))
case("rand_negative", lambda: raises(lambda: cgrad.rand(3, -1)))
case("randint_negative_shape", lambda: raises(lambda: cgrad.randint(0, 10, (-1,))))
case("randint_empty_range", lambda: raises(lambda: cgrad.randint(5, 5, (3,))))
case("randint_reversed_range", lambda: raises(lambda: cgrad.randint(5, 2, (3,))))
case("arange_step_0", lambda: raises(lambda: cgrad.arange(0, 10, 0)))
case("arange_infinite", lambda: raises(lambda: cgrad.arange(0, float("inf")), SIZE_ERRORS))
case("arange_nan", lambda: raises(lambda: cgrad.arange(0, float("nan")), SIZE_ERRORS))
case("arange_huge", lambda: raises(lambda: cgrad.arange(0, 1e18), SIZE_ERRORS))
case("arange_wrong_direction", lambda: raises_or(lambda: cgrad.arange(10, 0, 1), has_shape((0,)), ERRORS))
case("zeros_huge", lambda: raises(lambda: cgrad.zeros(2**62), SIZE_ERRORS))
case("zeros_huge_bytes", lambda: raises(lambda: cgrad.zeros(2**45), SIZE_ERRORS))
case("zeros_numel_overflows_int64", lambda: raises(lambda: cgrad.zeros(2**31, 2**31, 2**31), SIZE_ERRORS))
case("zeros_bytes_overflow_int64", lambda: raises(lambda: cgrad.zeros(2**61, 8, dtype=cgrad.float64), SIZE_ERRORS))
case("zeros_dim_over_int64", lambda: raises(lambda: cgrad.zeros(2**64), SIZE_ERRORS))
case("randn_huge", lambda: raises(lambda: cgrad.randn(2**40, 2**40), SIZE_ERRORS))
case("zeros_zero_times_huge", lambda: raises_or(lambda: cgrad.zeros(0, 2**62), has_shape((0, 2**62))))
case("zeros_string", lambda: raises(lambda: cgrad.zeros("a")))
case("zeros_float", lambda: raises(lambda: cgrad.zeros(2.5)))
case("zeros_none", lambda: raises(lambda: cgrad.zeros(None)))
case("reshape_numel", lambda: raises(lambda: f32(12, grad=True).reshape(5, 3)))
case("reshape_two_minus_one", lambda: raises(lambda: f32(12).reshape(-1, -1)))
case("reshape_minus_two", lambda: raises(lambda: f32(12).reshape(-2, -6)))
case("reshape_minus_one_no_fit", lambda: raises(lambda: f32(12).reshape(-1, 5)))
case("reshape_negative_numel_match", lambda: raises(lambda: f32(4).reshape(-2, -2)))
case("reshape_huge", lambda: raises(lambda: f32(12).reshape(2**62, 2**62), SIZE_ERRORS))
case("reshape_string", lambda: raises(lambda: f32(12).reshape("a")))
case("view_numel", lambda: raises(lambda: f32(12).view(5, -1)))
case("expand_incompatible", lambda: raises(lambda: f32(3, grad=True).expand(2, 4)))
case("expand_fewer_dims", lambda: raises(lambda: f32(2, 3).expand(3)))
case("expand_new_leading_minus_one", lambda: raises(lambda: f32(3).expand(-1, 3)))
case("expand_negative", lambda: raises(lambda: f32(1).expand(-5)))

# --------------------------------------------------------------- 9-D (max 8)

NINE = (1,) * 9
EIGHT = (1,) * 8


def _nested(depth):
    data = [1.0]
    for _ in range(depth - 1):
        data = [data]
    return data


NINE_D = {
    "zeros": lambda: cgrad.zeros(*NINE),
    "randn": lambda: cgrad.randn(*NINE),
    "full": lambda: cgrad.full(NINE, 2.0),
    "tensor_nested_list": lambda: cgrad.tensor(_nested(9)),
    "tensor_numpy": lambda: cgrad.tensor(np.zeros(NINE)),
    "from_numpy": lambda: cgrad.from_numpy(np.zeros(NINE)),
    "reshape": lambda: f32(1).reshape(*NINE),
    "view": lambda: f32(1).view(*NINE),
    "unsqueeze": lambda: cgrad.zeros(*EIGHT).unsqueeze(0),
    "getitem_none": lambda: cgrad.zeros(*EIGHT)[None],
    "expand": lambda: cgrad.zeros(*EIGHT).expand(*NINE),
    "stack": lambda: cgrad.stack([cgrad.zeros(*EIGHT), cgrad.zeros(*EIGHT)]),
    "broadcast_add": lambda: cgrad.zeros(*EIGHT) + cgrad.zeros(2, *EIGHT),
}
for _name, _fn in NINE_D.items():
    case(f"ndim9_{_name}", lambda fn=_fn: raises(fn))

case("ndim8_works", lambda: has_shape(EIGHT)(cgrad.zeros(*EIGHT) + 1.0))
case("tensor_nested_10000_deep", lambda: raises(lambda: cgrad.tensor(_nested(10000))))


def _self_referencing_list():
    data = [1.0]
    data.append(data)
    return cgrad.tensor(data)


case("tensor_self_referencing_list", lambda: raises(_self_referencing_list))

# ----------------------------------------------- Python data of the wrong kind

PY_BAD = {
    "ragged": [[1.0, 2.0], [3.0]],
    "ragged_deeper": [[1.0, 2.0], [3.0, [4.0]]],
    "scalar_and_list": [1.0, [2.0]],
    "string": "abc",
    "string_in_list": [1.0, "a"],
    "none": None,
    "none_in_list": [1.0, None],
    "dict": {1: 2},
    "object": object(),
    "complex": 1 + 2j,
}
for _name, _data in PY_BAD.items():
    case(f"tensor_{_name}", lambda data=_data: raises(lambda: cgrad.tensor(data)))

case("tensor_int_over_int64",
     lambda: raises(lambda: cgrad.tensor(2**63), SIZE_ERRORS))
case("tensor_int_list_over_int64",
     lambda: raises(lambda: cgrad.tensor([1, 2**64]), SIZE_ERRORS))
case("tensor_empty_nested", lambda: has_shape((1, 0))(cgrad.tensor([[]])))
case("tensor_dtype_string",
     lambda: raises_or(lambda: cgrad.tensor([1.0], dtype="float32"), close_to([1.0]), ERRORS))
case("tensor_dtype_numpy",
     lambda: raises_or(lambda: cgrad.tensor([1.0], dtype=np.float32), close_to([1.0]), ERRORS))
case("tensor_nan_to_int", lambda: raises_or(lambda: cgrad.tensor(float("nan"), dtype=cgrad.int64), anything))
case("tensor_inf_to_int", lambda: raises_or(lambda: cgrad.tensor([float("inf")]).long(), anything))
case("from_numpy_list", lambda: raises(lambda: cgrad.from_numpy([1.0, 2.0])))
case("from_numpy_scalar", lambda: raises_or(lambda: cgrad.from_numpy(np.float32(2.0)), close_to(2.0), ERRORS))

# ------------------------------------------------------------ NumPy dtypes

NP_UNSUPPORTED = {
    "complex64": np.array([1 + 2j], dtype=np.complex64),
    "complex128": np.array([1 + 2j]),
    "str": np.array(["a", "b"]),
    "bytes": np.array([b"a", b"b"]),
    "object_str": np.array(["a", 1], dtype=object),
    "object_none": np.array([None, 1.0], dtype=object),
    "datetime": np.array(["2024-01-01"], dtype="datetime64[D]"),
    "timedelta": np.array([1], dtype="timedelta64[s]"),
    "structured": np.zeros(2, dtype=[("a", np.float32), ("b", np.int64)]),
    "void": np.zeros(2, dtype="V8"),
}
for _name, _arr in NP_UNSUPPORTED.items():
    case(f"numpy_{_name}_tensor", lambda arr=_arr: raises(lambda: cgrad.tensor(arr)))
    case(f"numpy_{_name}_from_numpy", lambda arr=_arr: raises(lambda: cgrad.from_numpy(arr)))

NP_MAYBE = {  # converted with the right values, or refused cleanly
    "float16": np.array([1.5, -2.0], dtype=np.float16),
    "int8": np.array([-3, 7], dtype=np.int8),
    "int16": np.array([-3, 7], dtype=np.int16),
    "int32": np.array([-3, 7], dtype=np.int32),
    "uint8": np.array([3, 250], dtype=np.uint8),
    "uint32": np.array([3, 2**32 - 1], dtype=np.uint32),
    "uint64": np.array([3, 2**63 + 5], dtype=np.uint64),
    "big_endian_f4": np.array([1.5, -2.25], dtype=">f4"),
    "big_endian_f8": np.array([1.5, -2.25], dtype=">f8"),
    "big_endian_i8": np.array([-3, 2**40], dtype=">i8"),
    "bool": np.array([True, False]),
    "object_numbers": np.array([1.5, 2], dtype=object),
    "longdouble": np.array([1.5, 2.0], dtype=np.longdouble),
}


def _same_values_as(arr):
    def check(t):
        got = values(t)
        assert got.shape == arr.shape, (got.shape, arr.shape)
        expected = arr.astype(np.float64)
        assert np.array_equal(got.astype(np.float64), expected), (got, arr)
    return check


for _name, _arr in NP_MAYBE.items():
    case(f"numpy_{_name}_tensor",
         lambda arr=_arr: raises_or(lambda: cgrad.tensor(arr), _same_values_as(arr), ERRORS))
    case(f"numpy_{_name}_from_numpy",
         lambda arr=_arr: raises_or(lambda: cgrad.from_numpy(arr), _same_values_as(arr), ERRORS))



def _keeps_float64(arr):
    t = cgrad.tensor(arr)
    assert t.dtype == cgrad.float64, (arr.dtype, t.dtype)
    np.testing.assert_array_equal(values(t), arr)


case("numpy_float64_native_keeps_float64", lambda: _keeps_float64(np.array([0.1, -2.25])))
case("numpy_float64_big_endian_keeps_float64",
     lambda: _keeps_float64(np.array([0.1, -2.25], dtype=">f8")))

_BASE = np.arange(24, dtype=np.float32).reshape(4, 6)


def _read_only(arr):
    arr = arr.copy()
    arr.flags.writeable = False
    return arr


def _unaligned():
    raw = np.zeros(4 * 6 + 1, dtype=np.uint8)
    arr = raw[1:].view(np.float32)
    arr[:] = np.arange(6)
    return arr


NP_LAYOUTS = {
    "reversed": lambda: _BASE[::-1],
    "every_other_column": lambda: _BASE[:, ::2],
    "transposed": lambda: _BASE.T,
    "negative_and_step": lambda: _BASE[::2, ::-3],
    "fortran": lambda: np.asfortranarray(_BASE),
    "broadcast_zero_stride": lambda: np.broadcast_to(_BASE[0], (3, 6)),
    "read_only": lambda: _read_only(_BASE),
    "unaligned": _unaligned,
    "zero_size": lambda: np.zeros((0, 3), dtype=np.float32),
    "zero_d": lambda: np.array(3.5, dtype=np.float32),
    "float64_reversed": lambda: np.linspace(0, 1, 7)[::-1],
    "int64_strided": lambda: np.arange(20)[::3],
}


def _layout_check(make, convert):
    def run():
        arr = make()
        t = convert(arr)
        got = values(t)
        assert got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)
        np.testing.assert_array_equal(values(t * 2), arr * 2)
        if arr.size:
            assert math.isclose(t.sum().item(), float(arr.sum()), rel_tol=1e-6)
        return t
    return run


for _name, _make in NP_LAYOUTS.items():
    case(f"layout_{_name}_tensor",
         lambda make=_make: raises_or(_layout_check(make, cgrad.tensor), anything, ERRORS))
    case(f"layout_{_name}_from_numpy",
         lambda make=_make: raises_or(_layout_check(make, cgrad.from_numpy), anything, ERRORS))

# ------------------------------------------------------------ wrong types

TYPE_BAD = {
    "add_string": lambda x: x + "abc",
    "add_none": lambda x: x + None,
    "radd_object": lambda x: object() + x,
    "matmul_scalar": lambda x: x @ 3.0,
    "exp_string": lambda x: cgrad.exp("a"),
    "sum_dim_string": lambda x: x.sum(dim="a"),
    "sum_dim_float": lambda x: x.sum(dim=1.5),
    "leaky_relu_string": lambda x: F.leaky_relu(x, "a"),
    "clamp_string": lambda x: x.clamp(min="a"),
    "item_many": lambda x: x.item(),
    "item_empty": lambda x: cgrad.zeros(0).item(),
    "bool_many": lambda x: bool(x),
    "float_many": lambda x: float(x),
    "int_many": lambda x: int(x),
    "len_0d": lambda x: len(cgrad.tensor(1.0)),
    "list_0d": lambda x: list(cgrad.tensor(1.0)),
    "requires_grad_bool_tensor": lambda x: cgrad.tensor([True]).requires_grad_(),
}
for _name, _fn in TYPE_BAD.items():
    case(f"type_{_name}", lambda fn=_fn: raises(lambda: fn(f32(3, 2, grad=True))))

MIXED_DTYPES = {
    "matmul_f32_f64": (lambda: cgrad.ones(2, 3) @ cgrad.ones(3, 2, dtype=cgrad.float64), [[3.0] * 2] * 2),
    "matmul_int": (lambda: cgrad.ones(2, 3, dtype=cgrad.int64) @ cgrad.ones(3, 2, dtype=cgrad.int64), [[3] * 2] * 2),
    "matmul_bool": (lambda: cgrad.ones(2, 3, dtype=cgrad.bool) @ cgrad.ones(3, 2, dtype=cgrad.bool), None),
    "exp_int": (lambda: cgrad.exp(cgrad.tensor([0, 1])), [1.0, math.e]),
    "add_bool_float": (lambda: cgrad.tensor([True, False]) + cgrad.tensor([0.5, 0.5]), [1.5, 0.5]),
    "mean_int": (lambda: cgrad.tensor([1, 2]).mean(), 1.5),
    "softmax_int": (lambda: cgrad.tensor([0, 0]).softmax(0), [0.5, 0.5]),
    "where_float_cond": (lambda: cgrad.where(cgrad.tensor([1.0, 0.0]), cgrad.ones(2), cgrad.zeros(2)), [1.0, 0.0]),
    "int_pow_negative": (lambda: cgrad.tensor([2]) ** -1, None),
    "int_pow_negative_tensor": (lambda: cgrad.tensor([2]) ** cgrad.tensor([-1]), None),
    "int_div_zero": (lambda: cgrad.tensor([1, 0]) / cgrad.tensor([0, 0]), None),
    "int_min_abs": (lambda: cgrad.tensor([-2**63]).abs(), None),
    "int_min_neg": (lambda: -cgrad.tensor([-2**63]), None),
    "add_inplace_float_into_int": (lambda: cgrad.zeros(2, dtype=cgrad.int64).add_(cgrad.ones(2) * 0.5), [0, 0]),
    "copy_inplace_float_into_int": (lambda: cgrad.zeros(2, dtype=cgrad.int64).copy_(cgrad.ones(2) * 2.7), [2, 2]),
    "conv2d_f64_weight_f32": (lambda: F.conv2d(cgrad.ones(1, 1, 3, 3, dtype=cgrad.float64), cgrad.ones(1, 1, 3, 3)), [[[[9.0]]]]),
    "index_select_bool_index": (lambda: cgrad.ones(3).index_select(0, cgrad.tensor([True, False, True])), None),
    "cross_entropy_f64_logits": (lambda: F.cross_entropy(cgrad.zeros(2, 4, dtype=cgrad.float64), cgrad.tensor([0, 3])), math.log(4)),
}
for _name, (_fn, _expected) in MIXED_DTYPES.items():
    _check = anything if _expected is None else close_to(np.asarray(_expected, dtype=np.float64))
    case(f"dtype_{_name}", lambda fn=_fn, check=_check: raises_or(fn, check, ERRORS))

# ---------------------------------------------------------- autograd misuse

def _grad_of_wrong_dtype():
    x = f32(3, grad=True)
    x.grad = cgrad.zeros(3, dtype=cgrad.float64)


def _grad_not_tensor():
    x = f32(3, grad=True)
    x.grad = "a"


def _backward_int_gradient():
    (f32(3, grad=True) * 2.0).backward(cgrad.ones(3, dtype=cgrad.int64))


def _backward_string_gradient():
    (f32(3, grad=True) * 2.0).backward("a")


def _grad_outputs_length():
    x = f32(3, grad=True)
    cgrad.autograd.grad([x * 2.0, x * 3.0], [x], grad_outputs=[cgrad.ones(3)])


AUTOGRAD_BAD = {
    "backward_no_grad": lambda: cgrad.tensor([1.0, 2.0]).sum().backward(),
    "grad_input_without_grad": lambda: cgrad.autograd.grad((f32(2, grad=True) * 2.0).sum(), [cgrad.ones(2)]),
    "grad_no_outputs": lambda: cgrad.autograd.grad([], [f32(2, grad=True)]),
    "grad_outputs_length": _grad_outputs_length,
    "grad_of_wrong_dtype": _grad_of_wrong_dtype,
    "grad_not_tensor": _grad_not_tensor,
    "backward_string_gradient": _backward_string_gradient,
}
for _name, _fn in AUTOGRAD_BAD.items():
    case(f"autograd_{_name}", lambda fn=_fn: raises(fn))

case("autograd_backward_int_gradient",
     lambda: raises_or(_backward_int_gradient, anything, ERRORS))

# --------------------------------------------------- NaN / Inf in backward

NAN_INF = [float("nan"), float("inf"), -float("inf"), 1.0, 0.0, -1.0]
NONFINITE_OPS = {
    "mul": lambda x: x * 2.0,
    "div_by_zero": lambda x: x / cgrad.zeros_like(x),
    "sqrt": lambda x: x.sqrt(),
    "log": lambda x: x.log(),
    "exp": lambda x: x.exp(),
    "pow_half": lambda x: x ** 0.5,
    "pow_tensor": lambda x: x ** x,
    "relu": F.relu,
    "gelu": F.gelu,
    "elu": F.elu,
    "softplus": F.softplus,
    "sigmoid": cgrad.sigmoid,
    "tanh": cgrad.tanh,
    "abs": lambda x: x.abs(),
    "clamp": lambda x: x.clamp(-0.5, 0.5),
    "max": lambda x: x.max(),
    "amax": lambda x: x.reshape(2, 3).amax(1),
    "max_dim": lambda x: x.reshape(2, 3).max(dim=1).values,
    "min": lambda x: x.min(),
    "maximum": lambda x: cgrad.maximum(x, x * 0.5),
    "softmax": lambda x: x.softmax(0),
    "log_softmax": lambda x: x.log_softmax(0),
    "logsumexp": lambda x: x.logsumexp(0),
    "var": lambda x: x.var(),
    "mean": lambda x: x.mean(),
    "matmul": lambda x: x.reshape(2, 3) @ x.reshape(3, 2),
    "cross_entropy": lambda x: F.cross_entropy(x.reshape(2, 3), cgrad.tensor([0, 2])),
    "mse_loss": lambda x: F.mse_loss(x, cgrad.zeros_like(x)),
    "conv2d": lambda x: F.conv2d(x.reshape(1, 1, 2, 3), cgrad.ones(1, 1, 2, 2, dtype=x.dtype)),
    "max_pool2d": lambda x: F.max_pool2d(x.reshape(1, 1, 2, 3), 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x.reshape(1, 1, 2, 3), 2),
    "argmax_then_gather": lambda x: x.gather(0, x.argmax().reshape(1)),
    "round": lambda x: x.round(),
    "sign": lambda x: x.sign(),
}


def _nonfinite_backward(op, dtype):
    x = cgrad.tensor(NAN_INF, dtype=dtype, requires_grad=True)
    out = op(x)
    out.sum().backward()
    assert x.grad is not None and tuple(x.grad.shape) == (6,)
    assert x.grad.dtype == dtype


for _name, _op in NONFINITE_OPS.items():
    for _dtype_name in ("float32", "float64"):
        case(f"nonfinite_{_name}_{_dtype_name}",
             lambda op=_op, dt=_dtype_name: _nonfinite_backward(op, getattr(cgrad, dt)))


def _nonfinite_mul_grad_values():
    x = cgrad.tensor(NAN_INF, requires_grad=True)
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(values(x.grad), [2.0] * 6)


def _nonfinite_upstream_gradient():
    x = cgrad.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).backward(cgrad.tensor([float("nan"), float("inf")]))
    got = values(x.grad)
    assert math.isnan(got[0]) and got[1] == float("inf")


case("nonfinite_mul_grad_values", _nonfinite_mul_grad_values)
case("nonfinite_upstream_gradient", _nonfinite_upstream_gradient)
case("nonfinite_argmax", lambda: raises_or(lambda: cgrad.tensor(NAN_INF).argmax(), anything, ERRORS))

# ------------------------------------------------ empty tensors, reductions

NAN = float("nan")
INF = float("inf")
EMPTY_REDUCTIONS = {  # name: (fn of an empty (0,) tensor, expected or None = must raise)
    "sum": (lambda e: e.sum(), 0.0),
    "mean": (lambda e: e.mean(), NAN),
    "var": (lambda e: e.var(), NAN),
    "var_population": (lambda e: e.var(correction=0), NAN),
    "logsumexp": (lambda e: e.logsumexp(0), -INF),
    "softmax": (lambda e: e.softmax(0), np.zeros(0)),
    "log_softmax": (lambda e: e.log_softmax(0), np.zeros(0)),
    "max": (lambda e: e.max(), -INF),
    "min": (lambda e: e.min(), INF),
    "amax": (lambda e: e.amax(0), -INF),
    "amin": (lambda e: e.amin(0), INF),
    "max_dim": (lambda e: e.max(dim=0).values, -INF),
    "argmax": (lambda e: e.argmax(), None),
    "argmin": (lambda e: e.argmin(), None),
    "argmax_dim": (lambda e: e.argmax(dim=0), None),
    "cgrad_sum": (lambda e: cgrad.sum(e), 0.0),
    "matmul_dot": (lambda e: e @ e, 0.0),
    "mse_loss": (lambda e: F.mse_loss(e, e), NAN),
}
EMPTY_2D_REDUCTIONS = {  # on a (0, 3) tensor
    "sum_dim0": (lambda e: e.sum(0), np.zeros(3)),
    "sum_dim1": (lambda e: e.sum(1), np.zeros(0)),
    "mean_dim0": (lambda e: e.mean(0), np.full(3, NAN)),
    "var_dim0": (lambda e: e.var(0), np.full(3, NAN)),
    "max_dim0": (lambda e: e.max(dim=0).values, np.full(3, -INF)),
    "max_dim1": (lambda e: e.max(dim=1).values, np.zeros(0)),
    "amax_dim1": (lambda e: e.amax(1), np.zeros(0)),
    "argmax_dim0": (lambda e: e.argmax(dim=0), None),
    "argmax_dim1": (lambda e: e.argmax(dim=1), np.zeros(0)),
    "logsumexp_dim0": (lambda e: e.logsumexp(0), np.full(3, -INF)),
    "softmax_dim1": (lambda e: e.softmax(1), np.zeros((0, 3))),
    "softmax_dim0": (lambda e: e.softmax(0), np.zeros((0, 3))),
    "transposed_sum_dim1": (lambda e: e.t().sum(1), np.zeros(3)),
    "transposed_logsumexp": (lambda e: e.t().logsumexp(1), np.full(3, -INF)),
    "matmul_inner_zero": (lambda e: e.t() @ e, np.zeros((3, 3))),
    "matmul_outer_zero": (lambda e: e @ cgrad.ones(3, 2), np.zeros((0, 2))),
    "linear": (lambda e: F.linear(e, cgrad.ones(4, 3), cgrad.ones(4)), np.zeros((0, 4))),
    "cross_entropy": (lambda e: F.cross_entropy(e, cgrad.zeros(0, dtype=cgrad.int64)), NAN),
    "cat": (lambda e: cgrad.cat([e, e]), np.zeros((0, 3))),
    "conv2d": (lambda e: F.conv2d(e.reshape(0, 1, 3, 1), cgrad.ones(2, 1, 1, 1)), np.zeros((0, 2, 3, 1))),
}


def _empty_case(fn, expected, shape):
    def run():
        e = cgrad.zeros(*shape, requires_grad=True)
        if expected is None:
            raises(lambda: fn(e))
            return

        def check(out):
            got = values(out).astype(np.float64)
            want = np.asarray(expected, dtype=np.float64)
            assert got.shape == want.shape, (got.shape, want.shape)
            np.testing.assert_array_equal(got, want)
            if out.requires_grad and out.numel() > 0 and np.isfinite(got).all():
                out.sum().backward()
                assert tuple(e.grad.shape) == tuple(shape)
        raises_or(lambda: fn(e), check, ERRORS)
    return run


for _name, (_fn, _expected) in EMPTY_REDUCTIONS.items():
    case(f"empty_{_name}", _empty_case(_fn, _expected, (0,)))
for _name, (_fn, _expected) in EMPTY_2D_REDUCTIONS.items():
    case(f"empty2d_{_name}", _empty_case(_fn, _expected, (0, 3)))


def _empty_sum_backward():
    e = cgrad.zeros(0, 3, requires_grad=True)
    e.sum().backward()
    assert tuple(e.grad.shape) == (0, 3)


case("empty_sum_backward", _empty_sum_backward)
case("empty_max_over_empty_dim", lambda: raises(lambda: cgrad.zeros(3, 0).max(dim=1)))
case("empty_argmax_over_empty_dim", lambda: raises(lambda: cgrad.zeros(3, 0).argmax(dim=1)))


# ================================================================== runner

def _run_worker(names):
    """Runs the named cases here, one JSON line per event, flushed."""
    out = sys.stdout
    for name in names:
        print(json.dumps({"start": name}), file=out, flush=True)
        try:
            CASES[name]()
            status = {"name": name, "ok": True}
        except BaseException as error:  # noqa: BLE001 - the report is the point
            status = {"name": name, "ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
        print(json.dumps(status), file=out, flush=True)


def _run_battery(names):
    """Runs every case in workers; a crash is charged to the case that was running."""
    cgrad_parent = str(Path(cgrad.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([cgrad_parent] + [p for p in [env.get("PYTHONPATH")] if p])
    results, exits, pending = {}, [], list(names)
    while pending:
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", *pending], env=env,
                capture_output=True, text=True, timeout=CASE_TIMEOUT_S * 3 + len(pending))
            stdout, returncode, stderr = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as expired:
            stdout = expired.stdout or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            returncode, stderr = "timeout", ""
        running = None
        for line in stdout.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if "start" in event:
                running = event["start"]
            else:
                results[event["name"]] = event
                running = None
        exits.append((returncode, running, stderr[-3000:]))
        done = set(results)
        if running is not None:
            results[running] = {"name": running, "ok": False,
                                "error": f"worker died (exit {returncode}) in this case:\n"
                                         f"{stderr[-3000:]}"}
            done.add(running)
        remaining = [n for n in pending if n not in done]
        if len(remaining) == len(pending):  # made no progress: do not loop forever
            for n in remaining:
                results[n] = {"name": n, "ok": False,
                              "error": f"worker exit {returncode} before any case:\n{stderr[-3000:]}"}
            remaining = []
        pending = remaining
    return results, exits


# cgrad bugs found by these cases and reported; the xfail is strict, so a fix
# shows up as XPASS and the entry must then be removed.
KNOWN_BUGS = {}


@pytest.fixture(scope="module")
def battery():
    return _run_battery(list(CASES))


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=True))
    if name in KNOWN_BUGS else name
    for name in CASES])
def test_bad_input(name, battery):
    results, _ = battery
    result = results[name]
    assert result["ok"], result["error"]


def test_workers_exit_cleanly(battery):
    _, exits = battery
    crashed = [(code, running) for code, running, _ in exits if code != 0]
    assert not crashed, f"worker exit codes (code, case running): {crashed}"


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    _run_worker(sys.argv[2:])
