"""The GPU's fused training kernels (cgrad/backends/cuda_kernels.py), run on
the CPU by tests/python/cuda_emu.py: each RawKernel, launched with the very
arguments the "cuda" backend builds for it (xp_optim.py's fused path, which
only a GPU takes otherwise), gives the bits of the array expressions the
reference device runs; its reductions agree to rounding (another summation
order). The emulation's own checks (argument types, writes past an array,
divergent lanes) are tested at the end.

Skipped with a reason where no C++ compiler is installed."""
import itertools

import numpy as np
import pytest
import scipy.special

import cuda_emu
from cgrad.backends import cuda_kernels
from cgrad.backends.xp import ArrayBackend

pytestmark = pytest.mark.skipif(cuda_emu.CXX is None,
                                reason="no C++ compiler (c++ or g++) to emulate the CUDA kernels with")

N = 1000  # not a multiple of the 256-thread blocks: the last block has idle lanes
DTYPES = ["float32", "float64"]


@pytest.fixture(scope="module")
def arrays_be():
    return ArrayBackend(np, "reference", scipy.special, is_gpu=False)


@pytest.fixture(scope="module")
def fused_be():
    be = ArrayBackend(np, "emulated", scipy.special, is_gpu=False)
    be.raw_kernels = cuda_emu.raw_kernels()
    return be


def run_both(arrays_be, fused_be, kernel, entry, out, ins, f, i, launches=1):
    """Runs kernel on copies of out/ins on both backends; returns the
    (arrays, fused) outputs and checks the fused one launched `entry`
    (`launches` times)."""
    got = []
    for be in (arrays_be, fused_be):
        o = [a.copy() for a in out]
        before = cuda_emu.launches[entry]
        getattr(be, kernel)(o, [a.copy() for a in ins], f, i)
        launched = cuda_emu.launches[entry] - before
        assert launched == (launches if be is fused_be else 0), (be.name, entry, launched)
        got.append(o)
    return got


def assert_same_bits(a, b, what):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=what)


def check(got, n_exact, what):
    """The first n_exact outputs bit for bit; the rest (sums, finite so that
    the comparison says something) to rounding."""
    (ref, fused) = got
    for k, (a, b) in enumerate(zip(ref, fused)):
        if k < n_exact:
            assert_same_bits(a, b, f"{what}: output {k}")
        else:
            assert np.isfinite(a).all(), f"{what}: output {k} is not finite: {a}"
            np.testing.assert_allclose(b, a, rtol=1e-13, atol=0, err_msg=f"{what}: output {k}")


def operands(dtype, k, seed=0, special=True):
    """k arrays of N standard normals; with `special`, a NaN and an inf in
    the second (the gradient), which go through as on the host. The update
    tests set them where no norm is measured (a NaN norm would compare
    equal whatever the kernel summed)."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(N).astype(dtype) for _ in range(k)]
    if special:
        xs[1][17], xs[1][400] = np.nan, -np.inf
    return xs


# ------------------------------------------------------------ updates
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update(arrays_be, fused_be, dtype):
    entry = cuda_kernels.entry("sgd_update", dtype)
    for mx, wd, has_buf, nest, init, damp, want in itertools.product(
            (0, 1), (0.0, 0.01), (0, 1), (0, 1), (0, 1), (0.0, 0.3), (0, 1)):
        if not has_buf and (nest or init or damp):
            continue
        p, g, buf = operands(dtype, 3, special=not want)
        out = [p] + ([buf] if has_buf else []) + ([np.zeros(1)] if want else [])
        what = f"sgd mx={mx} wd={wd} buf={has_buf} nesterov={nest} init={init} damp={damp}"
        got = run_both(arrays_be, fused_be, "k_sgd_update_", entry, out, [g],
                       (0.05, 0.9, damp, wd), (mx, nest, init, has_buf, want))
        check(got, 1 + has_buf, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update(arrays_be, fused_be, dtype):
    entry = cuda_kernels.entry("adam_update", dtype)
    lr, b2, eps, step = 0.01, 0.999, 1e-8, 3
    for mx, wd, dec, ams, b1, want in itertools.product(
            (0, 1), (0.0, 0.05), (0, 1), (0, 1), (0.9, 0.3), (0, 1)):
        p, g, m, v, vmax = operands(dtype, 5, special=not want)
        v, vmax = np.abs(v), np.abs(vmax)
        if not want:
            vmax[5] = np.nan  # torch.maximum: a NaN maximum stays
        out = [p, m, v] + ([vmax] if ams else []) + ([np.zeros(1)] if want else [])
        f = (lr, b1, b2, eps, wd, 1 - lr * wd, (1 - b2 ** step) ** 0.5, lr / (1 - b1 ** step))
        what = f"adam mx={mx} wd={wd} decoupled={dec} amsgrad={ams} beta1={b1}"
        got = run_both(arrays_be, fused_be, "k_adam_update_", entry, out, [g], f,
                       (mx, dec, ams, want))
        check(got, 3 + ams, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_multi(arrays_be, fused_be, dtype):
    # four parameters (sizes 1000, 0, 3, 300) in one launch: the bits of
    # adam_update_ on each, over the flag combinations
    rng = np.random.default_rng(14)
    sizes = (N, 0, 3, 300)
    for mx, dec, ams, wd, b1 in itertools.product((0, 1), (0, 1), (0, 1), (0.0, 0.1), (0.9, 0.3)):
        k = len(sizes)
        ps, gs, ms = ([rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(3))
        vs, vmaxs = ([np.abs(rng.standard_normal(n)).astype(dtype) for n in sizes] for _ in range(2))
        gs[0][[17, 400]] = np.nan, -np.inf
        out = ps + ms + vs + (vmaxs if ams else [])
        f = (0.01, b1, 0.999, 1e-8, wd, 1 - 0.01 * wd, 0.9, 0.02)
        got = run_both(arrays_be, fused_be, "k_adam_update_multi_",
                       cuda_kernels.entry("adam_update_multi", dtype), out, gs, f,
                       (mx, dec, ams, 0, k))
        check(got, len(out), f"adam multi mx={mx} dec={dec} ams={ams} wd={wd} b1={b1}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_multi(arrays_be, fused_be, dtype):
    # four parameters (sizes 1000, 0, 3, 300) in one launch: the bits of
    # sgd_update_ on each, over the flag combinations
    rng = np.random.default_rng(15)
    sizes = (N, 0, 3, 300)
    k = len(sizes)
    for mx, wd, has_buf, nest, init, damp in itertools.product(
            (0, 1), (0.0, 0.01), (0, 1), (0, 1), (0, 1), (0.0, 0.3)):
        if not has_buf and (nest or init or damp):
            continue
        ps, gs, bufs = ([rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(3))
        gs[0][[17, 400]] = np.nan, -np.inf
        out = ps + (bufs if has_buf else [])
        got = run_both(arrays_be, fused_be, "k_sgd_update_multi_",
                       cuda_kernels.entry("sgd_update_multi", dtype), out, gs,
                       (0.05, 0.9, damp, wd), (mx, nest, init, has_buf, 0, k))
        check(got, len(out), f"sgd multi mx={mx} wd={wd} buf={has_buf} nesterov={nest} "
                             f"init={init} damp={damp}")


def _mixed_case(seed):
    """Parameters float32 (50, 7) and float64 (9, strided 40), a gradient
    each, and copies() making fresh copies of them plus n state lists (the
    strided parameter staying strided)."""
    rng = np.random.default_rng(seed)
    ps = [rng.standard_normal(n).astype(dt) for n, dt in
          ((50, "float32"), (7, "float32"), (9, "float64"), (40, "float64"))]
    ps[3] = np.zeros(80)[::2]
    ps[3][...] = rng.standard_normal(40)
    gs = [rng.standard_normal(p.size).astype(p.dtype) for p in ps]

    def states(n):
        return [np.abs(rng.standard_normal(p.size)).astype(p.dtype) for _ in range(n) for p in ps]

    def copies(st):
        c = [a.copy() for a in ps + st]
        c[3] = np.zeros(80)[::2]
        c[3][...] = ps[3]
        return c
    return ps, gs, states, copies


def _mixed_run(arrays_be, fused_be, kernel, name, out, gs, f, i):
    """Runs kernel on both backends; the bits agree, the float32 parameters
    took one launch of name_multi, the float64 ones (one contiguous, one
    strided) one launch of name (the strided one the array path)."""
    counters = [(cuda_kernels.entry(n, d), want) for n, d, want in
                ((name + "_multi", "float32", 1), (name, "float64", 1),
                 (name + "_multi", "float64", 0), (name, "float32", 0))]
    before = [cuda_emu.launches[e] for e, _ in counters]
    ref = [out(), out()]
    getattr(arrays_be, kernel)(ref[0], gs, f, i)
    assert [cuda_emu.launches[e] for e, _ in counters] == before
    getattr(fused_be, kernel)(ref[1], gs, f, i)
    for j, (a, b) in enumerate(zip(*ref)):
        assert_same_bits(np.ascontiguousarray(a), np.ascontiguousarray(b), f"output {j}")
    assert [cuda_emu.launches[e] - b for (e, _), b in zip(counters, before)] == \
        [want for _, want in counters]
    return ref[1]


def test_sgd_update_multi_mixed_dtypes_and_a_strided_parameter(arrays_be, fused_be):
    # per dtype one launch for its contiguous parameters; a dtype's only
    # parameter and a strided one take the one-parameter paths
    ps, gs, states, copies = _mixed_case(16)
    bufs = states(1)  # momentum_buffer
    _mixed_run(arrays_be, fused_be, "k_sgd_update_multi_", "sgd_update", lambda: copies(bufs), gs,
               (0.1, 0.9, 0.0, 0.01), (0, 1, 0, 1, 0, 4))


def test_adam_update_multi_device_table_is_kept_while_the_pointers_repeat(fused_be):
    fused_be.__dict__.pop("_tables", None)
    ps, ms, vs = ([np.zeros(5), np.zeros(2)] for _ in range(3))
    gs = [np.ones(5), np.ones(2)]
    for _ in range(2):
        fused_be.k_adam_update_multi_(ps + ms + vs, gs, (0.1, 0.9, 0.99, 1e-8, 0.0, 1.0, 0.1, 1.0),
                                      (0, 0, 0, 0, 2))
    assert len(fused_be._tables) == 1  # the same pointers: one table, built once
    # both steps ran: -0.1 / (1 + eps), then -m / (sqrt(v) / 0.1 + eps) with m = 0.19, v = 0.0199
    np.testing.assert_allclose(ps[0], -0.1 / (1 + 1e-8) - 0.19 / (np.sqrt(0.0199) / 0.1 + 1e-8), rtol=1e-12)
    # one parameter of a dtype: the one-parameter kernel, no table
    single = cuda_emu.launches[cuda_kernels.entry("adam_update", "float64")]
    fused_be.k_adam_update_multi_([np.zeros(3), np.zeros(3), np.zeros(3)],
                                  [np.ones(3)], (0.1, 0.9, 0.99, 1e-8, 0.0, 1.0, 0.1, 1.0),
                                  (0, 0, 0, 0, 1))
    assert len(fused_be._tables) == 1
    assert cuda_emu.launches[cuda_kernels.entry("adam_update", "float64")] == single + 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_update(arrays_be, fused_be, dtype):
    entry = cuda_kernels.entry("rmsprop_update", dtype)
    for mx, wd, cen, mom, alpha, want in itertools.product(
            (0, 1), (0.0, 0.02), (0, 1), (0.0, 0.5), (0.99, 0.3), (0, 1)):
        p, g, sq, ga, buf = operands(dtype, 5, special=not want)
        sq = np.abs(sq) + ga * ga + 1  # centered: the square average above the squared mean
        has_mom = int(mom != 0.0)
        out = ([p, sq] + ([ga] if cen else []) + ([buf] if has_mom else [])
               + ([np.zeros(1)] if want else []))
        what = f"rmsprop mx={mx} wd={wd} centered={cen} momentum={mom} alpha={alpha}"
        got = run_both(arrays_be, fused_be, "k_rmsprop_update_", entry, out, [g],
                       (0.01, alpha, 1e-8, wd, mom), (mx, cen, has_mom, want))
        check(got, 2 + cen + has_mom, what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_update(arrays_be, fused_be, dtype):
    entry = cuda_kernels.entry("adagrad_update", dtype)
    for mx, wd, want in itertools.product((0, 1), (0.0, 0.05), (0, 1)):
        p, g, s = operands(dtype, 3, special=not want)
        s = np.abs(s)
        out = [p, s] + ([np.zeros(1)] if want else [])
        got = run_both(arrays_be, fused_be, "k_adagrad_update_", entry, out, [g],
                       (0.1 / (1 + 2 * 0.01), wd, 1e-10), (mx, want))
        check(got, 2, f"adagrad mx={mx} wd={wd}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmsprop_update_multi(arrays_be, fused_be, dtype):
    # four parameters (sizes 1000, 0, 3, 300) in one launch: the bits of
    # rmsprop_update_ on each, over the flag combinations (alpha 0.99: the
    # grad_avg lerp from the start, 0.3: from the end)
    rng = np.random.default_rng(17)
    sizes = (N, 0, 3, 300)
    k = len(sizes)
    for mx, wd, cen, mom, alpha in itertools.product(
            (0, 1), (0.0, 0.02), (0, 1), (0.0, 0.5), (0.99, 0.3)):
        ps, gs, gas, bufs = ([rng.standard_normal(n).astype(dtype) for n in sizes]
                             for _ in range(4))
        # centered: the square average above the squared mean
        sqs = [(np.abs(rng.standard_normal(n)) + ga * ga + 1).astype(dtype)
               for n, ga in zip(sizes, gas)]
        gs[0][[17, 400]] = np.nan, -np.inf
        has_mom = int(mom != 0.0)
        out = ps + sqs + (gas if cen else []) + (bufs if has_mom else [])
        what = f"rmsprop multi mx={mx} wd={wd} centered={cen} momentum={mom} alpha={alpha}"
        got = run_both(arrays_be, fused_be, "k_rmsprop_update_multi_",
                       cuda_kernels.entry("rmsprop_update_multi", dtype), out, gs,
                       (0.01, alpha, 1e-8, wd, mom), (mx, cen, has_mom, 0, k))
        check(got, len(out), what)
        # every written list moved (the empty parameter aside), the NaN went
        # through: the launch updated all of them
        for j, (before, after) in enumerate(zip(out, got[1])):
            if before.size:
                assert np.any(after != before), f"{what}: output {j} not written"
        assert np.isnan(got[1][0][17]) and np.isfinite(got[1][0][:17]).all(), what


@pytest.mark.parametrize("dtype", DTYPES)
def test_adagrad_update_multi(arrays_be, fused_be, dtype):
    # four parameters (sizes 1000, 0, 3, 300) in one launch: the bits of
    # adagrad_update_ on each, over the flag combinations
    rng = np.random.default_rng(18)
    sizes = (N, 0, 3, 300)
    k = len(sizes)
    for mx, wd in itertools.product((0, 1), (0.0, 0.05)):
        ps, gs = ([rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(2))
        ss = [np.abs(rng.standard_normal(n)).astype(dtype) for n in sizes]
        gs[0][[17, 400]] = np.nan, -np.inf
        out = ps + ss
        what = f"adagrad multi mx={mx} wd={wd}"
        got = run_both(arrays_be, fused_be, "k_adagrad_update_multi_",
                       cuda_kernels.entry("adagrad_update_multi", dtype), out, gs,
                       (0.1 / (1 + 2 * 0.01), wd, 1e-10), (mx, 0, k))
        check(got, len(out), what)
        for j, (before, after) in enumerate(zip(out, got[1])):
            if before.size:
                assert np.any(after != before), f"{what}: output {j} not written"
        # the state sum grew by g^2, g the effective gradient (negated to
        # maximize, plus wd * p)
        g3 = gs[2] if not mx else -gs[2]
        g3 = g3 + ps[2].dtype.type(wd) * ps[2] if wd else g3
        np.testing.assert_array_equal(got[1][k + 2], ss[2] + g3 * g3, err_msg=what)


def test_rmsprop_update_multi_mixed_dtypes_and_a_strided_parameter(arrays_be, fused_be):
    # per dtype one launch for its contiguous parameters; a dtype's only
    # contiguous parameter and a strided one take the one-parameter paths
    ps, gs, states, copies = _mixed_case(19)
    st = states(3)  # square_avg, grad_avg, momentum_buffer
    got = _mixed_run(arrays_be, fused_be, "k_rmsprop_update_multi_", "rmsprop_update",
                     lambda: copies(st), gs, (0.01, 0.9, 1e-8, 0.01, 0.9), (1, 1, 1, 0, 4))
    for j, p in enumerate(ps):
        assert not np.array_equal(got[j], p) and got[j].dtype == p.dtype
    assert not got[3].flags.c_contiguous  # written in place, still strided


def test_adagrad_update_multi_mixed_dtypes_and_a_strided_parameter(arrays_be, fused_be):
    ps, gs, states, copies = _mixed_case(20)
    st = states(1)  # state_sum
    got = _mixed_run(arrays_be, fused_be, "k_adagrad_update_multi_", "adagrad_update",
                     lambda: copies(st), gs, (0.1, 0.01, 1e-10), (0, 0, 4))
    for j, p in enumerate(ps):
        # state_sum + g^2, g the gradient plus the weight decay term wd * p
        g = gs[j] + p.dtype.type(0.01) * p
        np.testing.assert_array_equal(got[4 + j], st[j] + g * g, err_msg=f"state_sum {j}")
        assert not np.array_equal(got[j], p)


# --------------------------------------------- clipping, statistics, amp
@pytest.mark.parametrize("dtype", DTYPES)
def test_pnorms_and_scale(arrays_be, fused_be, dtype):
    xs = operands(dtype, 3, seed=4, special=False)
    xs[2] = xs[2][:1]   # a one-element tensor: one block, one busy lane
    with_nan = operands(dtype, 2, seed=5)[1]
    # several tensors of one dtype: one sum_sq_multi launch; one tensor: sum_sq
    for ins, name in ((xs, "sum_sq_multi"), ([with_nan], "sum_sq")):
        got = run_both(arrays_be, fused_be, "k_pnorms", cuda_kernels.entry(name, dtype),
                       [np.zeros(len(ins))], ins, (2.0,), ())
        if len(ins) == 1:
            assert np.isnan(got[0][0][0]) and np.isnan(got[1][0][0])  # NaN propagates
        else:
            check(got, 0, "2-norms")
    for k in (0.37, 1e-30, np.inf):
        got = run_both(arrays_be, fused_be, "k_scale_", cuda_kernels.entry("scale", dtype), xs, [],
                       (k,), (), launches=len(xs))
        check(got, len(xs), f"scale by {k}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_norm_multi_tensor_kernels_are_the_per_tensor_ones(arrays_be, fused_be, dtype):
    """sum_sq_multi gives each tensor the blocks launch() gives it alone, so
    every sum is sum_sq's bit for bit (one-element tensors included), and a
    tensor with fewer blocks than its elements need is strided over as
    sum_sq's capped grid (2 blocks of 64 threads over N: each thread loops);
    scale_by_multi is scale_by on each; clip_norm_ runs them (one launch
    each) with the array path's coefficient and gradients, to rounding of
    the sums."""
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal(n).astype(dtype) for n in (N, 1, 300, 257, 0)]  # an empty one: no block
    kernels = fused_be.raw_kernels
    per = np.zeros(len(xs))
    for j, x in enumerate(xs):
        kernels.launch("sum_sq", dtype, x.size, (x, np.int64(x.size), per[j:j + 1]))
    multi = np.zeros(len(xs) + 1)
    fused_be._per_tensor_blocks("sum_sq_multi", xs, (multi,))
    assert_same_bits(per, multi[:-1], "sums of squares")
    assert multi[-1] == 0
    small_grid = np.zeros(1)
    kernels.get("sum_sq", dtype)((2,), (64,), (xs[0], np.int64(N), small_grid))
    ptrs = [x.__array_interface__["data"][0] for x in xs[:2]]
    table = np.array(ptrs + [0, N, N + 1] + [0, 2, 3], dtype=np.uint64)
    strided = np.zeros(2)
    kernels.get("sum_sq_multi", dtype)((3,), (64,), (table, np.int32(2), strided))
    assert_same_bits(small_grid, strided[:1], "a tensor's sum over a capped grid")
    assert strided[1] == float(xs[1][0]) ** 2
    res = np.array([0.0, 0.37])
    one = [x.copy() for x in xs]
    for x in one:
        kernels.launch("scale_by", dtype, x.size, (x, np.int64(x.size), res))
    many = [x.copy() for x in xs]
    fused_be._multi_launch("scale_by_multi", np.dtype(dtype), [many], (res,))
    for a, b in zip(one, many):
        assert_same_bits(a, b, "scaled")
    small = xs[1:]
    got = run_both(arrays_be, fused_be, "k_clip_norm_", cuda_kernels.entry("sum_sq_multi", dtype),
                   small + [np.zeros(2)], [], (2.0, 1.0), ())
    ref, fused = got
    np.testing.assert_allclose(fused[-1], ref[-1], rtol=1e-13)
    for a, b in zip(ref[:-1], fused[:-1]):
        np.testing.assert_allclose(b, a, rtol=1e-6 if dtype == "float32" else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_stats(arrays_be, fused_be, dtype):
    rng = np.random.default_rng(6)
    a = rng.standard_normal(N).astype(dtype) * 1e3
    a[[3, 600, 999]] = np.nan, np.inf, -np.inf
    xs = [a, rng.standard_normal(300).astype(dtype), np.full(40, np.nan, dtype),
          np.array([-2.5], dtype)]
    # tensors of one dtype: one tensor_stats_multi launch
    (ref,), (fused,) = run_both(arrays_be, fused_be, "k_tensor_stats",
                                cuda_kernels.entry("tensor_stats_multi", dtype),
                                [np.zeros((len(xs), 3))], xs, (), ())
    np.testing.assert_array_equal(fused[:, 1:], ref[:, 1:])  # max |x| and counts: exact
    np.testing.assert_allclose(fused[:, 0], ref[:, 0], rtol=1e-13)
    assert list(fused[:, 2]) == [3, 0, 40, 0]
    # ... each row the one-tensor kernel's bit for bit
    per = np.zeros((len(xs), 3))
    for j, x in enumerate(xs):
        fused_be.raw_kernels.launch("tensor_stats", dtype, x.size, (x, np.int64(x.size), per[j]))
    assert_same_bits(per, fused, "rows")
    # with another dtype among them: a tensor_stats launch each
    other = "float64" if dtype == "float32" else "float32"
    mixed = xs + [xs[1].astype(other)]
    (ref,), (fused,) = run_both(arrays_be, fused_be, "k_tensor_stats",
                                cuda_kernels.entry("tensor_stats", dtype), [np.zeros((len(mixed), 3))],
                                mixed, (), (), launches=len(xs))
    np.testing.assert_array_equal(fused[:, 1:], ref[:, 1:])
    np.testing.assert_allclose(fused[:, 0], ref[:, 0], rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_amp_unscale(arrays_be, fused_be, dtype):
    rng = np.random.default_rng(7)
    xs = [(rng.standard_normal(N) * 300).astype(dtype), rng.standard_normal(77).astype(dtype),
          np.full(5, np.inf, dtype)]
    xs[0][[1, 2, 900]] = np.nan, np.inf, -np.inf
    for inv, counted in ((1 / 1024, (1, 1, 1)), (2.0 ** -25, (1, 0, 1)), (3.0, (0, 0, 0))):
        # tensors of one dtype: one amp_unscale_multi launch, each its count
        got = run_both(arrays_be, fused_be, "k_amp_unscale_",
                       cuda_kernels.entry("amp_unscale_multi", dtype),
                       xs + [np.zeros(len(xs), np.int64)], [], (inv,), counted)
        check(got, len(xs) + 1, f"amp_unscale inv={inv} counted={counted}")
        assert list(got[1][-1]) == [c * k for c, k in zip(counted, (3, 0, 5))]
        # one tensor (no table): amp_unscale
        got = run_both(arrays_be, fused_be, "k_amp_unscale_", cuda_kernels.entry("amp_unscale", dtype),
                       xs[:1] + [np.zeros(1, np.int64)], [], (inv,), counted[:1])
        check(got, 2, f"amp_unscale of one tensor inv={inv}")


# ---------------------------------------------------------- nll_loss
def _nll_case(dtype, shape, seed=8):
    """Log-probabilities (outer, C, inner), targets with ~1/4 ignored (-1),
    class weights; -inf and NaN at an ignored position (not read)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    tshape = shape[:1] + shape[2:]
    t = rng.integers(0, shape[1], size=tshape)
    t[rng.random(tshape) < 0.25] = -1
    first = np.argwhere(t == -1)[0]
    x[(first[0], slice(None)) + tuple(first[1:])] = np.nan
    return x, t, (rng.random(shape[1]) + 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(N, 7), (4, 5, 250)])  # 1000 target positions either way
def test_nll_loss(arrays_be, fused_be, dtype, shape):
    x, t, w = _nll_case(dtype, shape)
    tshape = t.shape
    for reduction, weighted in itertools.product((0, 1, 2), (False, True)):
        ins = [x, t, w] if weighted else [x, t]
        out = [np.zeros(tshape if reduction == 0 else (), dtype), np.zeros((), dtype)]
        what = f"nll_loss reduction={reduction} weighted={weighted}"
        before = cuda_emu.launches[cuda_kernels.entry("nll_finish", dtype)]
        got = run_both(arrays_be, fused_be, "k_nll_loss", cuda_kernels.entry("nll_loss", dtype),
                       out, ins, (), (-1, reduction, 1))
        assert cuda_emu.launches[cuda_kernels.entry("nll_finish", dtype)] == before + 1, what
        # the 'none' loss bit for bit; the sums (total weight, mean, sum) to rounding
        check(got, 1 if reduction == 0 else 0, what)
        # the backward: one write per target, bit for bit
        g = (np.random.default_rng(9).standard_normal(tshape) if reduction == 0
             else np.array(1.75)).astype(dtype)
        tw = got[0][1]
        bins = [g, t, tw, w] if weighted else [g, t, tw]
        got = run_both(arrays_be, fused_be, "k_nll_loss_backward",
                       cuda_kernels.entry("nll_loss_backward", dtype), [np.zeros(shape, dtype)],
                       bins, (), (-1, reduction, 1))
        check(got, 1, what + " backward")
        assert np.count_nonzero(got[1][0]) == np.count_nonzero(t != -1), what


def test_nll_loss_strided_or_float16_take_the_array_path(fused_be):
    x, t, w = _nll_case("float32", (N, 7))
    x = np.nan_to_num(x)
    for ins in ([x[:, ::-1], t], [x.astype(np.float16), t], [x, t[::-1]]):
        out = [np.zeros((), ins[0].dtype), np.zeros((), ins[0].dtype)]
        before = sum(cuda_emu.launches.values())
        fused_be.k_nll_loss(out, ins, (), (-1, 1, 1))
        assert sum(cuda_emu.launches.values()) == before
        assert np.isfinite(out[0])


# ------------------------------------------- softmax rows, activations
def _rows_case(dtype, shape, seed=11):
    """Logits with a NaN row, a row with -inf and large entries, and a row
    of one value (when there are enough rows)."""
    x = (np.random.default_rng(seed).standard_normal(shape) * 3).astype(dtype)
    x[1, 2] = np.nan
    x[2, :2] = -np.inf
    x[2, 3:5] = 80.0
    x[3, :] = 0.5
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(37, 5), (6, 1000), (9, 40, 1)])  # rows not a multiple of 8 warps, D below and above 32
def test_softmax_rows(arrays_be, fused_be, dtype, shape):
    # each output against the array path's to rounding (the kernel's sums are
    # in double, the array path's in the dtype: a log_softmax near 0 differs
    # by an absolute ulp of 1); NaN rows stay NaN, one warp per row
    x = _rows_case(dtype, shape)
    g = np.random.default_rng(12).standard_normal(shape).astype(dtype)
    # (the array path sums float32 rows in float32: an absolute error of ~D ulps)
    tol = dict(rtol=2e-6, atol=4e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    for log_out in (0, 1):
        name = "log_softmax" if log_out else "softmax"
        got = run_both(arrays_be, fused_be, f"k_{name}", cuda_kernels.entry("softmax_rows", dtype),
                       [np.empty(shape, dtype)], [x], (), (1,))
        ref, fused = got[0][0], got[1][0]
        np.testing.assert_allclose(fused, ref, equal_nan=True, err_msg=name, **tol)
        assert np.isnan(fused[1]).all() and np.isfinite(np.delete(fused, 1, axis=0)).all() == (log_out == 0)
        got = run_both(arrays_be, fused_be, f"k_{name}_backward",
                       cuda_kernels.entry("softmax_backward_rows", dtype),
                       [np.empty(shape, dtype)], [g, np.nan_to_num(ref, neginf=-1e4)], (), (1,))
        np.testing.assert_allclose(got[1][0], got[0][0], err_msg=name + " backward", **tol)


def test_softmax_rows_not_contiguous_or_not_last_take_the_array_path(fused_be):
    x = _rows_case("float64", (8, 6))
    before = sum(cuda_emu.launches.values())
    for a, dim in ((x.T, 1), (x, 0), (x.reshape(8, 2, 3), 1)):
        fused_be.k_softmax([np.empty(a.shape)], [a], (), (dim,))
    assert sum(cuda_emu.launches.values()) == before


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_threshold_backward(arrays_be, fused_be, dtype):
    x, g = operands(dtype, 2, seed=13)
    x[[5, 6, 7]] = np.nan, -0.0, 0.0
    got = run_both(arrays_be, fused_be, "k_relu", cuda_kernels.entry("relu", dtype),
                   [np.empty(N, dtype)], [x], (), ())
    check(got, 1, "relu")
    for f in ((0.0, np.inf, 0.0, 1), (-1.0, 1.0, 0.0, 0), (0.0, np.inf, 0.01, 1)):
        with np.errstate(invalid="ignore"):  # inf * 0 in the array path, as the kernel
            got = run_both(arrays_be, fused_be, "k_threshold_backward",
                           cuda_kernels.entry("threshold_backward", dtype), [np.empty(N, dtype)],
                           [g, x], f, ())
        check(got, 1, f"threshold_backward {f}")


# ------------------------------------------------- the launch itself
@pytest.mark.parametrize("dtype", DTYPES)
def test_grid_stride_loop_covers_elements_beyond_the_grid(arrays_be, dtype):
    """2 blocks of 64 threads over 1000 elements: each thread loops ~8
    times (launch() caps the grid at 4096 blocks, so large tensors do)."""
    kernels = cuda_emu.raw_kernels()
    p, g, buf = operands(dtype, 3)
    T = np.dtype(dtype).type
    want_p, want_buf = p.copy(), buf.copy()
    arrays_be.k_sgd_update_([want_p, want_buf], [g], (0.05, 0.9, 0.0, 0.0), (0, 1, 0, 1, 0))
    norm = np.zeros(1)
    kernels.get("sgd_update", dtype)((2,), (64,), (
        p, g, buf, norm, np.int64(N), T(-0.05), T(0), T(0.9), T(1.0), np.int32(0), np.int32(0),
        np.int32(1), np.int32(1), np.int32(0), np.int32(0)))
    assert_same_bits(want_p, p, "param")
    assert_same_bits(want_buf, buf, "momentum buffer")
    x = operands(dtype, 2, seed=3)[1]
    st = np.zeros(3)
    kernels.get("tensor_stats", dtype)((3,), (32,), (x, np.int64(N), st))
    fin = x[np.isfinite(x)].astype(np.float64)
    assert st[2] == 2 and st[1] == np.max(np.abs(fin))
    assert st[0] == pytest.approx(np.sum(fin * fin), rel=1e-13)


def test_launch_shapes_the_grid_from_n():
    """RawKernels.launch: 256-thread blocks, ceil(n / 256) of them up to 4096,
    nothing launched for n = 0."""
    seen = []

    class Recording(cuda_emu.RawKernel):
        def __call__(self, grid, block, args, shared_mem=0):
            seen.append((grid, block))

    rk = cuda_kernels.RawKernels(Recording)
    x = np.zeros(1, np.float32)
    for n in (0, 1, 256, 257, 4096 * 256, 4096 * 256 + 1, 10 ** 9):
        rk.launch("scale", "float32", n, (x, np.int64(n), np.float32(1)))
    assert seen == [((1,), (256,)), ((1,), (256,)), ((2,), (256,)), ((4096,), (256,)),
                    ((4096,), (256,)), ((4096,), (256,))]


# ------------------------------------------------ the emulation's checks
def scale_kernel(dtype="float32"):
    return cuda_emu.RawKernel(cuda_kernels.source("scale", dtype), cuda_kernels.entry("scale", dtype),
                              cuda_kernels.NVCC_OPTIONS)


def test_arguments_must_match_the_parameters():
    k = scale_kernel()
    x = np.ones(8, np.float32)
    with pytest.raises(TypeError, match=r"argument 2 \(k: const T\): expected a NumPy float32 "
                                        r"scalar, got float 0\.5"):
        k((1,), (32,), (x, np.int64(8), 0.5))
    with pytest.raises(TypeError, match="argument 2 .*expected a float32 scalar, got float64"):
        k((1,), (32,), (x, np.int64(8), np.float64(0.5)))
    with pytest.raises(TypeError, match="argument 1 .*expected a int64 scalar, got int32"):
        k((1,), (32,), (x, np.int32(8), np.float32(0.5)))
    with pytest.raises(TypeError, match="argument 0 .*expected a float32 array, got float64"):
        k((1,), (32,), (np.ones(8), np.int64(8), np.float32(0.5)))
    with pytest.raises(ValueError, match="argument 0 .*not C-contiguous"):
        k((1,), (32,), (np.ones(16, np.float32)[::2], np.int64(8), np.float32(0.5)))
    with pytest.raises(TypeError, match="takes 3 arguments, got 2"):
        k((1,), (32,), (x, np.int64(8)))
    np.testing.assert_array_equal(x, 1.0)  # nothing ran
    k((1,), (32,), (x, np.int64(8), np.float32(0.5)))
    np.testing.assert_array_equal(x, 0.5)
    with pytest.raises(ValueError, match="--fmad=false"):
        cuda_emu.RawKernel(cuda_kernels.source("scale", "float32"), "cg_scale_f32", ())


def test_a_write_past_the_end_is_reported():
    k = scale_kernel()
    x = np.ones(8, np.float32)
    with pytest.raises(RuntimeError, match="wrote past the end of an array of 8 float32"):
        k((1,), (32,), (x, np.int64(9), np.float32(0.5)))
    np.testing.assert_array_equal(x, 1.0)  # the result is not copied back


def test_a_read_past_the_end_poisons_the_result():
    k = cuda_emu.RawKernel(cuda_kernels.source("sum_sq", "float64"), "cg_sum_sq_f64",
                           cuda_kernels.NVCC_OPTIONS)
    out = np.zeros(1)
    k((1,), (32,), (np.ones(4), np.int64(4), out))
    assert out[0] == 4.0
    k((1,), (32,), (np.ones(4), np.int64(5), out))
    assert np.isnan(out[0])


DIVERGENT = r"""
extern "C" __global__ void cg_divergent(double *out, const long long n) {
    double v = 1.0;
    if (threadIdx.x < n) v = __shfl_down_sync(0xffffffffu, v, 1);
    if (threadIdx.x == 0) out[0] = v;
}
"""


def test_lanes_that_skip_a_shuffle_are_reported():
    k = cuda_emu.RawKernel(DIVERGENT, "cg_divergent", ("--fmad=false",))
    out = np.zeros(1)
    k((1,), (32,), (out, np.int64(32)))
    assert out[0] == 1.0
    with pytest.raises(RuntimeError, match="diverged"):
        k((1,), (32,), (out, np.int64(5)))


def test_shuffles_exchange_values_between_lanes():
    """Lane l reads lane l + delta's value; lanes past the warp keep their own."""
    src = r"""
extern "C" __global__ void cg_lanes(long long *out) {
    long long v = threadIdx.x;
    long long r = __shfl_down_sync(0xffffffffu, v, 3);
    out[blockIdx.x * blockDim.x + threadIdx.x] = r;
}
"""
    k = cuda_emu.RawKernel(src, "cg_lanes", ("--fmad=false",))
    out = np.zeros(128, np.int64)
    k((2,), (64,), (out,))
    lane = np.arange(128) % 64
    warp_lane = lane % 32
    want = np.where(warp_lane + 3 < 32, lane + 3, lane)
    np.testing.assert_array_equal(out, want)
