"""Property tests: random shapes and broadcasting against NumPy.

Values come from a seeded NumPy generator (hypothesis draws the shapes and
the seed), which keeps each example cheap; derandomize=True makes every run
draw the same examples, so a failure reproduces.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import cgrad  # noqa: E402
from oracle import assert_close, to_numpy  # noqa: E402

PROPS = settings(max_examples=60, deadline=None, derandomize=True, database=None)

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)
pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)
seeds = st.integers(0, 2 ** 31 - 1)


def _t(a, grad=False):
    return cgrad.tensor(a, dtype=cgrad.float64, requires_grad=grad)


def _unbroadcast(g, shape):
    """Sum g down to shape (the adjoint of NumPy broadcasting)."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(0)
    for d, n in enumerate(shape):
        if n == 1 and g.shape[d] != 1:
            g = g.sum(d, keepdims=True)
    return g


def _grads(fn, arrays, v):
    ts = [_t(a, True) for a in arrays]
    out = fn(*ts)
    out.backward(_t(v))
    return to_numpy(out), [to_numpy(t.grad) if t.grad is not None else np.zeros(t.shape)
                           for t in ts]


# Binary ops: value, and the gradient of sum(out * v) reduced to each shape.
BINARY = {
    "add": (lambda a, b: a + b, np.add, lambda a, b, v: (v, v)),
    "sub": (lambda a, b: a - b, np.subtract, lambda a, b, v: (v, -v)),
    "mul": (lambda a, b: a * b, np.multiply, lambda a, b, v: (v * b, v * a)),
    "div": (lambda a, b: a / b, np.divide, lambda a, b, v: (v / b, -v * a / b ** 2)),
    "maximum": (lambda a, b: cgrad.maximum(a, b), np.maximum,
                lambda a, b, v: (v * (a > b), v * (b > a))),
    "minimum": (lambda a, b: cgrad.minimum(a, b), np.minimum,
                lambda a, b, v: (v * (a < b), v * (b < a))),
}


@pytest.mark.parametrize("name", list(BINARY))
@PROPS
@given(shape_pair=pairs, seed=seeds)
def test_binary_broadcast_matches_numpy(name, shape_pair, seed):
    fn, np_fn, np_grad = BINARY[name]
    (sa, sb), out_shape = shape_pair.input_shapes, shape_pair.result_shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(sa)
    b = rng.uniform(0.5, 2.0, sb) * rng.choice([-1.0, 1.0], sb)  # away from 0 for div
    v = rng.standard_normal(out_shape)
    out, (ga, gb) = _grads(fn, [a, b], v)
    assert out.shape == tuple(out_shape)
    assert_close(f"{name} value", out, np_fn(a, b), 1e-12, 1e-12)
    ea, eb = np_grad(np.broadcast_to(a, out_shape), np.broadcast_to(b, out_shape), v)
    assert ga.shape == tuple(sa) and gb.shape == tuple(sb)
    assert_close(f"{name} grad a {sa}", ga, _unbroadcast(ea, sa), 1e-10, 1e-10)
    assert_close(f"{name} grad b {sb}", gb, _unbroadcast(eb, sb), 1e-10, 1e-10)


@PROPS
@given(shape_pair=pairs, seed=seeds, scalar=st.floats(-3, 3).filter(lambda s: abs(s) > 0.1))
def test_scalar_and_float32_broadcast(shape_pair, seed, scalar):
    (sa, sb), out_shape = shape_pair.input_shapes, shape_pair.result_shape
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ta = cgrad.tensor(a.astype(np.float32))
    tb = cgrad.tensor(b.astype(np.float32))
    out = (scalar * ta - tb / scalar) * (ta + scalar)
    assert out.dtype == cgrad.float32 and out.shape == tuple(out_shape)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    expect = (scalar * a32 - b32 / scalar) * (a32 + scalar)
    assert_close("float32 expression", to_numpy(out), expect, 1e-4, 1e-4)


@st.composite
def shape_and_dims(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=4))
    dims = draw(st.lists(st.integers(0, len(shape) - 1), unique=True, min_size=1,
                         max_size=len(shape)))
    negate = draw(st.lists(st.booleans(), min_size=len(dims), max_size=len(dims)))
    dims = tuple(d - len(shape) if n else d for d, n in zip(dims, negate))
    return shape, dims, draw(st.booleans())


def _np_logsumexp(x, axis, keepdims):
    m = np.max(x, axis=axis, keepdims=True)
    r = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return r if keepdims else np.squeeze(r, axis=axis)


REDUCTIONS = {
    "sum": (lambda t, d, k: t.sum(dim=d, keepdim=k), lambda x, d, k: x.sum(axis=d, keepdims=k)),
    "mean": (lambda t, d, k: t.mean(dim=d, keepdim=k), lambda x, d, k: x.mean(axis=d, keepdims=k)),
    "amax": (lambda t, d, k: t.amax(d, keepdim=k), lambda x, d, k: x.max(axis=d, keepdims=k)),
    "amin": (lambda t, d, k: t.amin(d, keepdim=k), lambda x, d, k: x.min(axis=d, keepdims=k)),
    "var": (lambda t, d, k: t.var(dim=d, correction=0, keepdim=k),
            lambda x, d, k: x.var(axis=d, keepdims=k)),
    "logsumexp": (lambda t, d, k: t.logsumexp(d, keepdim=k), _np_logsumexp),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
@PROPS
@given(sdk=shape_and_dims(), seed=seeds)
def test_reduction_matches_numpy(name, sdk, seed):
    shape, dims, keepdim = sdk
    fn, np_fn = REDUCTIONS[name]
    x = np.random.default_rng(seed).standard_normal(shape)
    out = fn(_t(x), dims, keepdim)
    expect = np.asarray(np_fn(x, dims, keepdim))
    assert out.shape == expect.shape, (out.shape, expect.shape)
    assert_close(f"{name}{dims}", to_numpy(out), expect, 1e-12, 1e-10)


@PROPS
@given(sdk=shape_and_dims(), seed=seeds)
def test_sum_mean_gradients(sdk, seed):
    shape, dims, keepdim = sdk
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    out_shape = np.sum(x, axis=dims, keepdims=keepdim).shape
    v = rng.standard_normal(out_shape)
    vk = v if keepdim else np.expand_dims(v, tuple(d % len(shape) for d in dims))
    n = int(np.prod([shape[d] for d in dims]))
    _, (g,) = _grads(lambda t: t.sum(dims, keepdim), [x], v)
    assert_close("sum grad", g, np.broadcast_to(vk, shape), 0, 0)
    _, (g,) = _grads(lambda t: t.mean(dims, keepdim), [x], v)
    assert_close("mean grad", g, np.broadcast_to(vk, shape) / n, 1e-15, 1e-12)


@PROPS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_softmax_matches_numpy(shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(seed).standard_normal(shape) * 5
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    sm = e / e.sum(axis=dim, keepdims=True)
    assert_close("softmax", to_numpy(_t(x).softmax(dim)), sm, 1e-14, 1e-12)
    assert_close("log_softmax", to_numpy(_t(x).log_softmax(dim)), np.log(sm), 1e-12, 1e-12)


@PROPS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_permute_roundtrip(shape, seed, data):
    perm = data.draw(st.permutations(range(len(shape))))
    inv = list(np.argsort(perm))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    v = rng.standard_normal(shape)
    out, (g,) = _grads(lambda t: t.permute(*perm).permute(tuple(inv)), [x], v)
    assert_close("permute round trip", out, x, 0, 0)
    assert_close("permute round trip grad", g, v, 0, 0)
    assert_close("permute vs numpy", to_numpy(_t(x).permute(*perm)), np.transpose(x, perm), 0, 0)


@st.composite
def reshape_target(draw):
    shape = draw(shapes)
    n = int(np.prod(shape))
    # a random factorisation of n into up to 4 factors, maybe with one -1
    factors, rest = [], n
    for _ in range(draw(st.integers(0, 3))):
        divs = [d for d in range(1, rest + 1) if rest % d == 0]
        d = draw(st.sampled_from(divs))
        factors.append(d)
        rest //= d
    factors.append(rest)
    factors = draw(st.permutations(factors))
    if draw(st.booleans()):
        factors = list(factors)
        factors[draw(st.integers(0, len(factors) - 1))] = -1
    return shape, tuple(factors)


@PROPS
@given(st_=reshape_target(), seed=seeds, transpose_first=st.booleans())
def test_reshape_roundtrip(st_, seed, transpose_first):
    shape, target = st_
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)

    def fn(t):
        if transpose_first and t.ndim >= 2:  # reshape of a non-contiguous view
            t = t.transpose(0, -1)
        return t.reshape(*target)

    base = np.swapaxes(x, 0, -1) if transpose_first and x.ndim >= 2 else x
    expect = base.reshape(target)
    v = rng.standard_normal(expect.shape)
    out, (g,) = _grads(fn, [x], v)
    assert_close("reshape", out, expect, 0, 0)
    gexp = v.reshape(base.shape)
    if transpose_first and x.ndim >= 2:
        gexp = np.swapaxes(gexp, 0, -1)
    assert_close("reshape grad", g, gexp, 0, 0)
    back = _t(x).reshape(*target).reshape(shape)
    assert_close("reshape round trip", to_numpy(back), x, 0, 0)


@st.composite
def basic_index(draw):
    shape = draw(nonempty_shapes)
    idx = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        kind = draw(st.sampled_from(["int", "slice", "none", "full"]))
        if kind == "int":
            idx.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.none() | st.integers(-n - 2, n + 2))
            stop = draw(st.none() | st.integers(-n - 2, n + 2))
            step = draw(st.none() | st.integers(1, 3))
            idx.append(slice(start, stop, step))
        elif kind == "none":
            idx.append(None)
        else:
            idx.append(slice(None))
    if draw(st.booleans()):
        idx.insert(draw(st.integers(0, len(idx))), Ellipsis)
    return shape, tuple(idx)


@PROPS
@given(si=basic_index(), seed=seeds)
def test_basic_indexing_matches_numpy(si, seed):
    shape, idx = si
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    expect = x[idx]
    v = rng.standard_normal(expect.shape)
    out, (g,) = _grads(lambda t: t[idx], [x], v)
    assert_close(f"x{list(idx)}", out, expect, 0, 0)
    gexp = np.zeros(shape)
    gexp[idx] += v
    assert_close(f"grad of x{list(idx)}", g, gexp, 0, 0)


@PROPS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_index_tensor_with_repeats(shape, seed, data):
    rng = np.random.default_rng(seed)
    idx = np.array(data.draw(st.lists(st.integers(-shape[0], shape[0] - 1), max_size=6)),
                   dtype=np.int64)
    x = rng.standard_normal(shape)
    expect = x[idx]
    v = rng.standard_normal(expect.shape)
    out, (g,) = _grads(lambda t: t[cgrad.tensor(idx, dtype=cgrad.int64)], [x], v)
    assert_close("x[idx]", out, expect, 0, 0)
    gexp = np.zeros(shape)
    np.add.at(gexp, idx, v)
    assert_close("grad of x[idx]", g, gexp, 1e-14, 1e-14)


@PROPS
@given(shape=nonempty_shapes, seed=seeds)
def test_bool_mask_matches_numpy(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    mask = rng.random(shape) > 0.5
    v = rng.standard_normal(int(mask.sum()))
    out, (g,) = _grads(lambda t: t[cgrad.tensor(mask)], [x], v)
    assert_close("x[mask]", out, x[mask], 0, 0)
    gexp = np.zeros(shape)
    gexp[mask] = v
    assert_close("grad of x[mask]", g, gexp, 0, 0)


@PROPS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_cat_of_split_roundtrip(shape, seed, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    n = shape[dim]
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    pieces = np.split(x, cuts, axis=dim)
    v = rng.standard_normal(shape)
    out, grads = _grads(lambda *ts: cgrad.cat(list(ts), dim - len(shape)), pieces, v)
    assert_close("cat", out, x, 0, 0)
    for p, g, gv in zip(pieces, grads, np.split(v, cuts, axis=dim)):
        assert_close("cat grad", g, gv, 0, 0)
    st_out = to_numpy(cgrad.stack([_t(x), _t(x * 2)], dim))
    assert_close("stack", st_out, np.stack([x, x * 2], dim), 0, 0)


@st.composite
def matmul_shapes(draw):
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3))
    ba, bb = batch.input_shapes
    a = (k,) if draw(st.booleans()) and not ba else ba + (m, k)
    b = (k,) if draw(st.booleans()) and not bb else bb + (k, n)
    return a, b


@PROPS
@given(ab=matmul_shapes(), seed=seeds)
def test_matmul_matches_numpy(ab, seed):
    sa, sb = ab
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    expect = np.matmul(a, b)
    v = rng.standard_normal(expect.shape)
    out, (ga, gb) = _grads(lambda x, y: x @ y, [a, b], v)
    assert_close(f"{sa} @ {sb}", out, expect, 1e-12, 1e-12)
    # gradients by the chain rule in numpy, promoting 1-D operands like matmul does
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    v2 = v.reshape(np.matmul(a2, b2).shape)
    ga_e = _unbroadcast(np.matmul(v2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    gb_e = _unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), v2), b2.shape).reshape(b.shape)
    assert_close(f"grad a of {sa} @ {sb}", ga, ga_e, 1e-12, 1e-12)
    assert_close(f"grad b of {sa} @ {sb}", gb, gb_e, 1e-12, 1e-12)


@PROPS
@given(shape=nonempty_shapes, seed=seeds, data=st.data())
def test_gather_matches_numpy(shape, seed, data):
    dim = data.draw(st.integers(0, len(shape) - 1))
    rng = np.random.default_rng(seed)
    ishape = list(shape)
    ishape[dim] = data.draw(st.integers(1, 5))
    idx = rng.integers(0, shape[dim], ishape)
    x = rng.standard_normal(shape)
    expect = np.take_along_axis(x, idx, dim)
    v = rng.standard_normal(expect.shape)
    out, (g,) = _grads(lambda t: t.gather(dim, cgrad.tensor(idx)), [x], v)
    assert_close("gather", out, expect, 0, 0)
    gexp = np.zeros(shape)
    grid = list(np.indices(idx.shape))
    grid[dim] = idx
    np.add.at(gexp, tuple(grid), v)
    assert_close("gather grad", g, gexp, 1e-14, 1e-14)
