"""CUDA C sources of the fused kernels of the "cuda" backend.

On a GPU, the backend (cgrad/backends/xp_*.py) runs these as kernels
NVRTC compiles (NvrtcBuilder: lazily, once per kernel and dtype, cached)
where fusion pays, for contiguous operands:
- one pass over a parameter, its gradient and its state for an optimizer
  update (CuPy expressions would make one pass per operation), and one
  launch for all the parameters of a dtype in a multi-tensor ("foreach")
  update (the *_update_multi kernels);
- one pass for a tensor's sum of squares, max |x| and non-finite count
  (three reductions otherwise), and for GradScaler's unscale;
- nll_loss's forward and backward, one pass over the targets each (the
  array expressions make a dozen launches);
- softmax / log_softmax and their backward over contiguous rows, one warp
  per row (six and four launches otherwise);
- relu and threshold_backward (a comparison, a where and a copy otherwise).
The NumPy expressions of the xp_*.py files remain the reference path (the
reference device, and strided arrays on a GPU) and compute the same
formulas, operation for operation, as the C kernels of src_c/.

Every kernel is compiled with ``--fmad=false``: the host loops make no fused
multiply-adds, so neither may the device if the two are to agree to the
last bit; ``sqrt`` and ``/`` are IEEE (nvcc's defaults). The kernels of
MATH_CALLS call CUDA's exp and log, which are made of fused multiply-adds:
they agree with the host to rounding. A kernel runs a grid-stride loop over
``n`` contiguous elements (rows: over rows, a warp each); reductions (the
update's squared norm, the statistics, nll_loss's sums, a row's sum)
accumulate in double per thread, then per warp, then one atomic per warp
(a row's: broadcast from lane 0).

tests/python/test_cuda_kernels_nvcc.py compiles every source with
``nvcc --ptx``, and tests/python/test_cuda_kernels_nvrtc.py with CuPy's
NVRTC through NvrtcBuilder (where CuPy and NVRTC are installed).
"""

import contextlib
import hashlib
import os
import tempfile

# --ftz=false is NVRTC's and nvcc's default; it is spelled out because
# cupy.RawKernel appends -ftz=true to any options (NVRTC takes the last), so
# NvrtcBuilder below compiles the kernels instead (see its docstring).
NVCC_OPTIONS = ("--fmad=false", "--ftz=false", "-std=c++17")

_DTYPES = {"float32": ("float", "f32"), "float64": ("double", "f64")}
# amp_unscale alone also runs on float16 (storage; float32 arithmetic, as
# PyTorch's opmath): its "float16" source starts with _HALF_HEAD (compiled
# by tests/python/test_amp_unscale.py).
_HALF = {"float16": ("cg_half", "f16")}
# Per dtype: arithmetic type, load and store conversions of amp_unscale.
_OPMATH = {"float16": ("float", "cg_half2float", "cg_float2half"),
           "float32": ("float", "", ""), "float64": ("double", "", "")}

# float16 without cuda_fp16.h, so a source needs no include path (NVRTC has
# none by default): the 16 bits as an unsigned short, converted by the PTX
# instructions cuda_fp16.hpp's __half2float / __float2half_rn emit (exact;
# round to nearest even, subnormals kept). tests/python/cuda_emu.h defines
# the three names for the host, where __CUDA_ARCH__ is not defined.
_HALF_HEAD = r"""
#ifdef __CUDA_ARCH__
typedef unsigned short cg_half;
__device__ __forceinline__ float cg_half2float(const cg_half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ cg_half cg_float2half(const float f) {
    cg_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif
"""

_COMMON = r"""
typedef %(T)s T;
typedef long long i64;

/* Adds a thread's share of a sum to *out: a warp reduction, then one
 * atomic per warp (every thread of the block must call it). */
__device__ __forceinline__ void cg_add_sum(double *out, double acc) {
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(out, acc);
}

/* A warp's sum (max with NaN winning) of one value per lane, reduced down
 * to lane 0 and broadcast: every lane gets lane 0's bits. */
__device__ __forceinline__ double cg_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return __shfl_sync(0xffffffffu, v, 0);
}
template <class V> __device__ __forceinline__ V cg_warp_max(V v) {
    for (int o = 16; o > 0; o >>= 1) {
        const V w = __shfl_down_sync(0xffffffffu, v, o);
        v = (w > v || w != w) ? w : v;
    }
    return __shfl_sync(0xffffffffu, v, 0);
}

/* Which of k parameters element i of their concatenation belongs to: the
 * last j with offs[j] <= i (empty parameters skipped), by binary search. */
__device__ __forceinline__ int cg_param_of(const unsigned long long *offs, const int k,
                                           const long long i) {
    int lo = 0, hi = k - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if ((long long)offs[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* The multi-tensor reductions' launch (table: the k pointers, the k + 1
 * element offsets, the k + 1 block offsets; each tensor has the blocks a
 * launch over it alone gets, xp_optim._per_tensor_blocks): this block's
 * tensor j, its n elements, and this thread's first element and stride
 * over them, as in that launch. */
struct cg_part {
    int j;
    i64 n, first, step;
};
__device__ __forceinline__ cg_part cg_block_part(const unsigned long long *table, const int k) {
    const unsigned long long *offs = table + k, *boffs = table + 2 * k + 1;
    cg_part q;
    q.j = cg_param_of(boffs, k, (long long)blockIdx.x);
    q.n = (i64)(offs[q.j + 1] - offs[q.j]);
    q.first = ((i64)blockIdx.x - (i64)boffs[q.j]) * blockDim.x + threadIdx.x;
    q.step = (i64)(boffs[q.j + 1] - boffs[q.j]) * blockDim.x;
    return q;
}

/* A grid-stride launch's first element and stride for this thread. */
#define CG_FIRST ((i64)blockIdx.x * blockDim.x + threadIdx.x)
#define CG_STEP ((i64)blockDim.x * gridDim.x)

#define CG_LOOP(i, n) for (i64 i = CG_FIRST; i < (n); i += CG_STEP)
"""

# One body per update; its arithmetic is the host loop's (src_c/optim.c),
# each flag an int parameter (uniform across the grid: no divergence).
_BODIES = {
    "sgd_update": r"""
%(SGD)s
extern "C" __global__ void cg_sgd_update_%(sfx)s(
        T *p, const T *gr, T *buf, double *norm, const i64 n, const T lr_neg, const T wd,
        const T mom, const T damp1, const int mx, const int use_wd, const int use_mom,
        const int nest, const int init, const int want) {
    double acc = 0.0;
    CG_LOOP(i, n) {
        const double d = cg_sgd_at(p, gr, buf, i, lr_neg, wd, mom, damp1, mx, use_wd, use_mom,
                                   nest, init);
        if (want) acc += d * d;
    }
    if (want) cg_add_sum(norm, acc);
}
""",
    # SGD on k parameters at once (PyTorch's foreach): table = the k
    # pointers of each of param, grad, momentum_buffer (3k), then the k + 1
    # element offsets (cg_param_of). The arithmetic is cg_sgd_update's.
    "sgd_update_multi": r"""
%(SGD)s
extern "C" __global__ void cg_sgd_update_multi_%(sfx)s(
        const unsigned long long *table, const int k, const i64 n, const T lr_neg, const T wd,
        const T mom, const T damp1, const int mx, const int use_wd, const int use_mom,
        const int nest, const int init) {
    const unsigned long long *offs = table + 3 * k;
    CG_LOOP(i, n) {
        const int j = cg_param_of(offs, k, i);
        cg_sgd_at((T *)table[j], (const T *)table[k + j], (T *)table[2 * k + j], i - (i64)offs[j],
                  lr_neg, wd, mom, damp1, mx, use_wd, use_mom, nest, init);
    }
}
""",
    "adam_update": r"""
%(ADAM)s
extern "C" __global__ void cg_adam_update_%(sfx)s(
        T *p, const T *gr, T *m, T *v, T *vmax, double *norm, const i64 n, const T wd,
        const T wd_factor, const T w1, const T w1m, const T b2, const T c2, const T bc2_sqrt,
        const T eps, const T neg_step, const int mx, const int coupled, const int decoupled,
        const int ams, const int small, const int want) {
    double acc = 0.0;
    CG_LOOP(i, n) {
        const double d = cg_adam_at(p, gr, m, v, vmax, i, wd, wd_factor, w1, w1m, b2, c2, bc2_sqrt,
                                    eps, neg_step, mx, coupled, decoupled, ams, small);
        if (want) acc += d * d;
    }
    if (want) cg_add_sum(norm, acc);
}
""",
    # Adam on k parameters at once (PyTorch's foreach): table = the k
    # pointers of each of param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
    # (5k), then the k + 1 element offsets of the parameters in the
    # concatenation (n = table[5k + k]); each element finds its parameter
    # by binary search (cg_param_of). The arithmetic is cg_adam_update's.
    "adam_update_multi": r"""
%(ADAM)s
extern "C" __global__ void cg_adam_update_multi_%(sfx)s(
        const unsigned long long *table, const int k, const i64 n, const T wd,
        const T wd_factor, const T w1, const T w1m, const T b2, const T c2, const T bc2_sqrt,
        const T eps, const T neg_step, const int mx, const int coupled, const int decoupled,
        const int ams, const int small) {
    const unsigned long long *offs = table + 5 * k;
    CG_LOOP(i, n) {
        const int lo = cg_param_of(offs, k, i);
        cg_adam_at((T *)table[lo], (const T *)table[k + lo], (T *)table[2 * k + lo],
                   (T *)table[3 * k + lo], (T *)table[4 * k + lo], i - (i64)offs[lo], wd, wd_factor,
                   w1, w1m, b2, c2, bc2_sqrt, eps, neg_step, mx, coupled, decoupled, ams, small);
    }
}
""",
    "rmsprop_update": r"""
%(RMSPROP)s
extern "C" __global__ void cg_rmsprop_update_%(sfx)s(
        T *p, const T *gr, T *sq, T *ga, T *buf, double *norm, const i64 n, const T lr_neg,
        const T wd, const T alpha, const T c, const T c1m, const T eps, const T mom,
        const int mx, const int use_wd, const int centered, const int use_mom, const int small,
        const int want) {
    double acc = 0.0;
    CG_LOOP(i, n) {
        const double d = cg_rmsprop_at(p, gr, sq, ga, buf, i, lr_neg, wd, alpha, c, c1m, eps, mom,
                                       mx, use_wd, centered, use_mom, small);
        if (want) acc += d * d;
    }
    if (want) cg_add_sum(norm, acc);
}
""",
    # RMSprop on k parameters at once (PyTorch's foreach): table = the k
    # pointers of each of param, grad, square_avg, grad_avg (param's when
    # not centered), momentum_buffer (param's without momentum) (5k), then
    # the k + 1 element offsets (cg_param_of). The arithmetic is
    # cg_rmsprop_update's.
    "rmsprop_update_multi": r"""
%(RMSPROP)s
extern "C" __global__ void cg_rmsprop_update_multi_%(sfx)s(
        const unsigned long long *table, const int k, const i64 n, const T lr_neg, const T wd,
        const T alpha, const T c, const T c1m, const T eps, const T mom, const int mx,
        const int use_wd, const int centered, const int use_mom, const int small) {
    const unsigned long long *offs = table + 5 * k;
    CG_LOOP(i, n) {
        const int j = cg_param_of(offs, k, i);
        cg_rmsprop_at((T *)table[j], (const T *)table[k + j], (T *)table[2 * k + j],
                      (T *)table[3 * k + j], (T *)table[4 * k + j], i - (i64)offs[j], lr_neg, wd,
                      alpha, c, c1m, eps, mom, mx, use_wd, centered, use_mom, small);
    }
}
""",
    "adagrad_update": r"""
%(ADAGRAD)s
extern "C" __global__ void cg_adagrad_update_%(sfx)s(
        T *p, const T *gr, T *sum, double *norm, const i64 n, const T clr_neg, const T wd,
        const T eps, const int mx, const int use_wd, const int want) {
    double acc = 0.0;
    CG_LOOP(i, n) {
        const double d = cg_adagrad_at(p, gr, sum, i, clr_neg, wd, eps, mx, use_wd);
        if (want) acc += d * d;
    }
    if (want) cg_add_sum(norm, acc);
}
""",
    # Adagrad on k parameters at once (PyTorch's foreach): table = the k
    # pointers of each of param, grad, state_sum (3k), then the k + 1
    # element offsets (cg_param_of). The arithmetic is cg_adagrad_update's.
    "adagrad_update_multi": r"""
%(ADAGRAD)s
extern "C" __global__ void cg_adagrad_update_multi_%(sfx)s(
        const unsigned long long *table, const int k, const i64 n, const T clr_neg, const T wd,
        const T eps, const int mx, const int use_wd) {
    const unsigned long long *offs = table + 3 * k;
    CG_LOOP(i, n) {
        const int j = cg_param_of(offs, k, i);
        cg_adagrad_at((T *)table[j], (const T *)table[k + j], (T *)table[2 * k + j],
                      i - (i64)offs[j], clr_neg, wd, eps, mx, use_wd);
    }
}
""",
    # Clip by norm: every gradient times the clip coefficient (rounded to T).
    "scale": r"""
extern "C" __global__ void cg_scale_%(sfx)s(T *x, const i64 n, const T k) {
    CG_LOOP(i, n) x[i] = x[i] * k;
}
""",
    # Clip by norm left on the device (cg_clip_grad_norm_tensor): from the k
    # per-tensor norms, res = (total norm, min(max_norm / (total + 1e-6), 1))
    # as clip.c's total_norm and cg_clip_grad_norm, in double, by one thread
    # (k is the number of gradients). T is unused (launched as float64).
    "clip_coef": r"""
extern "C" __global__ void cg_clip_coef_%(sfx)s(const double *norms, const int k, const double p,
                                                const double max_norm, double *res) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    const int inf = isinf(p), two = p == 2.0, one = p == 1.0;
    double acc = 0.0, nan = 0.0;
    int any_nan = 0;
    for (int j = 0; j < k; ++j) {
        const double v = norms[j];
        if (inf) {
            if (v != v) {
                any_nan = 1;
                nan = v;
            }
            acc = v > acc ? v : acc;
        } else if (two) {
            acc += v * v;
        } else if (one) {
            acc += v;
        } else {
            acc += pow(v, p);
        }
    }
    const double t = inf ? (any_nan ? nan : acc) : two ? sqrt(acc) : one ? acc : pow(acc, 1.0 / p);
    const double c = max_norm / (t + 1e-6);
    res[0] = t;
    res[1] = c > 1.0 ? 1.0 : c; /* NaN stays NaN */
}
""",
    # ... then every gradient times that coefficient, read on the device and
    # rounded to T (as "scale" takes it from the host).
    "scale_by": r"""
extern "C" __global__ void cg_scale_by_%(sfx)s(T *x, const i64 n, const double *res) {
    const T k = (T)res[1];
    CG_LOOP(i, n) x[i] = x[i] * k;
}
""",
    # scale_by on k tensors at once: table = their k pointers, then the k + 1
    # element offsets of the tensors in the concatenation (as
    # adam_update_multi's).
    "scale_by_multi": r"""
extern "C" __global__ void cg_scale_by_multi_%(sfx)s(const unsigned long long *table, const int k,
                                                     const i64 n, const double *res) {
    const unsigned long long *offs = table + k;
    const T c = (T)res[1];
    CG_LOOP(i, n) {
        const int j = cg_param_of(offs, k, i);
        T *x = (T *)table[j];
        const i64 e = i - (i64)offs[j];
        x[e] = x[e] * c;
    }
}
""",
    # sum_sq on k tensors at once: norms[j] += the sum of squares of tensor
    # j. table = the k pointers, the k + 1 element offsets, then the k + 1
    # block offsets: tensor j has blocks boffs[j] .. boffs[j + 1] - 1 of the
    # grid, so a block works on one tensor (its warps reduce as sum_sq's) and
    # a tensor's blocks stride over it as sum_sq's grid over one tensor.
    "sum_sq_multi": r"""
%(SUM_SQ)s
extern "C" __global__ void cg_sum_sq_multi_%(sfx)s(const unsigned long long *table, const int k,
                                                   double *norms) {
    const cg_part q = cg_block_part(table, k);
    cg_sum_sq_of((const T *)table[q.j], q.n, q.first, q.step, norms + q.j);
}
""",
    # Clip by norm's 2-norm: *out += sum of squares in double, every element
    # (NaN and inf propagate, as the host's pnorm); the caller takes sqrt.
    "sum_sq": r"""
%(SUM_SQ)s
extern "C" __global__ void cg_sum_sq_%(sfx)s(const T *x, const i64 n, double *out) {
    cg_sum_sq_of(x, n, CG_FIRST, CG_STEP, out);
}
""",
    # out[0] += sum of squares of the finite elements, out[1] = max(out[1],
    # max |x| over them), out[2] += non-finite count. out starts zeroed;
    # max works on the bit patterns (non-negative doubles order like them).
    "tensor_stats": r"""
%(STATS)s
extern "C" __global__ void cg_tensor_stats_%(sfx)s(const T *x, const i64 n, double *out) {
    cg_stats_of(x, n, CG_FIRST, CG_STEP, out);
}
""",
    # tensor_stats on k tensors at once, row j of out [k, 3] for tensor j:
    # the table and the blocks as sum_sq_multi's.
    "tensor_stats_multi": r"""
%(STATS)s
extern "C" __global__ void cg_tensor_stats_multi_%(sfx)s(const unsigned long long *table,
                                                         const int k, double *out) {
    const cg_part q = cg_block_part(table, k);
    cg_stats_of((const T *)table[q.j], q.n, q.first, q.step, out + 3 * q.j);
}
""",
    # softmax / log_softmax of the rows of a contiguous (rows, D) array, one
    # warp per row (grid-stride over rows): the host loop's passes
    # (src_c/ops_reduce.c): the max (NaN wins), the exponentials written to
    # y and summed in double, then y scaled by 1 / sum, or (x - max) - log
    # sum for log_softmax. Lane 0's reductions are broadcast to the warp.
    "softmax_rows": r"""
extern "C" __global__ void cg_softmax_rows_%(sfx)s(const T *x, T *y, const i64 rows, const i64 D,
                                                  const int log_out) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *xr = x + r * D;
        T *yr = y + r * D;
        T m = xr[0]; /* D >= 1: a row's own element starts every lane */
        for (i64 d = lane; d < D; d += 32) {
            const T v = xr[d];
            m = (v > m || v != v) ? v : m;
        }
        m = cg_warp_max(m);
        double s = 0.0;
        for (i64 d = lane; d < D; d += 32) {
            const T e = exp(xr[d] - m);
            yr[d] = e;
            s += (double)e;
        }
        s = cg_warp_sum(s);
        if (log_out) {
            const T ls = log((T)s);
            for (i64 d = lane; d < D; d += 32) yr[d] = (xr[d] - m) - ls;
        } else {
            const T inv = (T)(1.0 / s);
            for (i64 d = lane; d < D; d += 32) yr[d] *= inv;
        }
    }
}
""",
    # Their fused backward on contiguous rows (ops_reduce.c's DEF_SMBW):
    # s = sum of g (log_softmax) or of g * y (softmax) in double, then
    # g - exp(y) * s, or y * (g - s).
    "softmax_backward_rows": r"""
extern "C" __global__ void cg_softmax_backward_rows_%(sfx)s(const T *g, const T *y, T *out,
                                                           const i64 rows, const i64 D,
                                                           const int log_out) {
    const int lane = threadIdx.x & 31;
    const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *gr = g + r * D, *yr = y + r * D;
        T *o = out + r * D;
        double s = 0.0;
        for (i64 d = lane; d < D; d += 32) s += log_out ? (double)gr[d] : (double)gr[d] * (double)yr[d];
        const T st = (T)cg_warp_sum(s);
        for (i64 d = lane; d < D; d += 32)
            o[d] = log_out ? gr[d] - exp(yr[d]) * st : yr[d] * (gr[d] - st);
    }
}
""",
    # relu and threshold_backward (xp_elementwise.py): one pass where the
    # array expressions make a comparison, a where and a copy.
    "relu": r"""
extern "C" __global__ void cg_relu_%(sfx)s(const T *a, T *out, const i64 n) {
    CG_LOOP(i, n) out[i] = a[i] < (T)0 ? (T)0 : a[i];
}
""",
    "threshold_backward": r"""
extern "C" __global__ void cg_threshold_backward_%(sfx)s(const T *g, const T *v, T *out, const i64 n,
                                                        const T lo, const T hi, const T outside,
                                                        const int lo_open) {
    CG_LOOP(i, n) {
        const T x = v[i];
        const bool inside = (lo_open ? x > lo : x >= lo) && x <= hi;
        out[i] = inside ? g[i] : g[i] * outside;
    }
}
""",
    # nll_loss (src_c/ops_loss.c's loop) over n = outer * inner target
    # positions of a contiguous input (outer, C, inner): the 'none' loss
    # into per (when want_per), and acc[0] += sum of the terms w * x rounded
    # to T, acc[1] += sum of the weights, over the targets not ignored, in
    # double (per warp, then one atomic per warp). w is read when has_w.
    # The C core checked the targets' bounds (or knew them from the
    # upload); a target out of [0, C) all the same (memory shared outside
    # cgrad, written since) reads nothing: its term is NaN.
    "nll_loss": r"""
extern "C" __global__ void cg_nll_loss_%(sfx)s(const T *x, const i64 *t, const T *w, T *per,
                                              double *acc, const i64 n, const i64 C,
                                              const i64 inner, const i64 ignore, const int has_w,
                                              const int want_per) {
    double ls = 0.0, ws = 0.0;
    CG_LOOP(k, n) {
        const i64 c = t[k];
        if (c == ignore) {
            if (want_per) per[k] = (T)0;
            continue;
        }
        if (c < 0 || c >= C) {
            const double nan = __longlong_as_double(0x7ff8000000000000LL);
            if (want_per) per[k] = (T)nan;
            ls += nan;
            ws += nan;
            continue;
        }
        const double wv = has_w ? (double)w[c] : 1.0;
        const T term = (T)(wv * (double)x[((k / inner) * C + c) * inner + k %% inner]);
        if (want_per) per[k] = -term;
        ls += (double)term;
        ws += wv;
    }
    cg_add_sum(&acc[0], ls);
    cg_add_sum(&acc[1], ws);
}
""",
    # nll_loss's result from the sums (one thread): the total weight, and
    # for 'mean' (reduction 1) -sum / total weight, for 'sum' (2) -sum.
    "nll_finish": r"""
extern "C" __global__ void cg_nll_finish_%(sfx)s(const double *acc, T *r, T *tw,
                                                const int reduction) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    tw[0] = (T)acc[1];
    if (reduction == 1) r[0] = (T)(-acc[0] / acc[1]);
    else if (reduction == 2) r[0] = (T)(-acc[0]);
}
""",
    # nll_loss's backward into r (zero-filled, the input's contiguous
    # shape): -w[t] * g (g[0] when g_one, else g[k]), divided by tw[0] when
    # mean, at each target not ignored; one write per position, no atomics.
    # A target out of [0, C) (see nll_loss) writes nothing.
    "nll_loss_backward": r"""
extern "C" __global__ void cg_nll_loss_backward_%(sfx)s(
        const T *g, const i64 *t, const T *w, const T *tw, T *r, const i64 n, const i64 C,
        const i64 inner, const i64 ignore, const int has_w, const int g_one, const int mean) {
    CG_LOOP(k, n) {
        const i64 c = t[k];
        if (c == ignore || c < 0 || c >= C) continue;
        double v = -((has_w ? (double)w[c] : 1.0) * (double)g[g_one ? 0 : k]);
        if (mean) v /= (double)tw[0];
        r[((k / inner) * C + c) * inner + k %% inner] = (T)v;
    }
}
""",
    # GradScaler's unscale: x *= inv in the arithmetic type OP, the NaN/inf
    # elements counted first (when count is set) into *cnt, per warp then
    # one atomic per warp (exact: integer counts).
    "amp_unscale": r"""
%(UNSCALE)s
extern "C" __global__ void cg_amp_unscale_%(sfx)s(T *x, const i64 n, const %(OP)s inv,
                                                 long long *cnt, const int count) {
    cg_unscale_of(x, n, CG_FIRST, CG_STEP, inv, cnt, count);
}
""",
    # amp_unscale on k tensors at once (PyTorch's
    # _amp_foreach_non_finite_check_and_unscale_): table = the k pointers,
    # the k + 1 element offsets, the k + 1 block offsets (as sum_sq_multi's),
    # then the k count flags; tensor j's count goes into cnt[j].
    "amp_unscale_multi": r"""
%(UNSCALE)s
extern "C" __global__ void cg_amp_unscale_multi_%(sfx)s(const unsigned long long *table,
                                                       const int k, const %(OP)s inv,
                                                       long long *cnt) {
    const cg_part q = cg_block_part(table, k);
    cg_unscale_of((T *)table[q.j], q.n, q.first, q.step, inv, cnt + q.j, (int)table[3 * k + 2 + q.j]);
}
""",
}

# amp_unscale's body: one thread's elements first, first + step, ... of x
# (n of them) times inv, the non-finite ones counted (count: uniform over
# a block) per warp into *cnt.
_UNSCALE_BODY = r"""
__device__ __forceinline__ void cg_unscale_of(T *x, const i64 n, const i64 first, const i64 step,
                                              const %(OP)s inv, long long *cnt, const int count) {
    unsigned long long bad = 0;
    for (i64 i = first; i < n; i += step) {
        const %(OP)s v = %(LD)s(x[i]);
        bad += !isfinite(v);
        x[i] = %(ST)s(v * inv);
    }
    if (count) {
        for (int o = 16; o > 0; o >>= 1) bad += __shfl_down_sync(0xffffffffu, bad, o);
        if ((threadIdx.x & 31) == 0 && bad) atomicAdd((unsigned long long *)cnt, bad);
    }
}
"""

# sum_sq's body: one thread's elements first, first + step, ... of x (n of
# them), squared and summed in double, added into *out per warp.
_SUM_SQ_BODY = r"""
__device__ __forceinline__ void cg_sum_sq_of(const T *x, const i64 n, const i64 first, const i64 step,
                                             double *out) {
    double s = 0.0;
    for (i64 i = first; i < n; i += step) {
        const double d = (double)x[i];
        s += d * d;
    }
    cg_add_sum(out, s);
}
"""

# tensor_stats' body: one thread's elements first, first + step, ... of x
# (n of them), reduced over the warp, added into out[0..2].
_STATS_BODY = r"""
__device__ __forceinline__ void cg_stats_of(const T *x, const i64 n, const i64 first, const i64 step,
                                            double *out) {
    double s = 0.0, mx = 0.0, bad = 0.0;
    for (i64 i = first; i < n; i += step) {
        const double d = (double)x[i];
        if (isfinite(d)) {
            s += d * d;
            mx = fmax(mx, fabs(d));
        } else {
            bad += 1.0;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_down_sync(0xffffffffu, s, o);
        mx = fmax(mx, __shfl_down_sync(0xffffffffu, mx, o));
        bad += __shfl_down_sync(0xffffffffu, bad, o);
    }
    if ((threadIdx.x & 31) == 0) {
        atomicAdd(&out[0], s);
        atomicMax((unsigned long long *)&out[1], (unsigned long long)__double_as_longlong(mx));
        atomicAdd(&out[2], bad);
    }
}
"""

# One element of SGD (the host loop of src_c/optim.c, operation for
# operation): updates p[i] (and buf[i]) in place, returns the update
# p_new - p_old in double.
_SGD_ELEM = r"""
__device__ __forceinline__ double cg_sgd_at(
        T *p, const T *gr, T *buf, const i64 i, const T lr_neg, const T wd, const T mom,
        const T damp1, const int mx, const int use_wd, const int use_mom, const int nest,
        const int init) {
    const T x0 = p[i];
    T g = mx ? -gr[i] : gr[i];
    if (use_wd) g = g + wd * x0;
    if (use_mom) {
        const T b = init ? g : buf[i] * mom + damp1 * g;
        buf[i] = b;
        g = nest ? g + mom * b : b;
    }
    const T x = x0 + lr_neg * g;
    p[i] = x;
    return (double)x - (double)x0;
}
"""

# One element of Adam (the host loop of src_c/optim.c, operation for
# operation): updates p[i], m[i], v[i] (and vmax[i]) in place, returns the
# update p_new - p_old in double.
_ADAM_ELEM = r"""
__device__ __forceinline__ double cg_adam_at(
        T *p, const T *gr, T *m, T *v, T *vmax, const i64 i, const T wd, const T wd_factor,
        const T w1, const T w1m, const T b2, const T c2, const T bc2_sqrt, const T eps,
        const T neg_step, const int mx, const int coupled, const int decoupled, const int ams,
        const int small) {
    const T x0 = p[i];
    T g = mx ? -gr[i] : gr[i];
    T x = x0;
    if (coupled) g = g + wd * x;
    if (decoupled) x = x * wd_factor;
    const T mo = m[i];
    /* PyTorch's lerp: from the start for a small weight, else from the end */
    const T mi = small ? mo + w1 * (g - mo) : g - (g - mo) * w1m;
    const T vi = v[i] * b2 + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    T vd = vi;
    if (ams) {
        const T vm = vmax[i];
        vd = (vm != vm || vm > vi) ? vm : vi; /* torch.maximum: NaN wins */
        vmax[i] = vd;
    }
    const T denom = sqrt(vd) / bc2_sqrt + eps;
    const T xn = x + neg_step * mi / denom;
    p[i] = xn;
    return (double)xn - (double)x0;
}
"""

# One element of RMSprop (the host loop of src_c/optim.c, operation for
# operation): updates p[i], sq[i] (and ga[i], buf[i]) in place, returns the
# update p_new - p_old in double.
_RMSPROP_ELEM = r"""
__device__ __forceinline__ double cg_rmsprop_at(
        T *p, const T *gr, T *sq, T *ga, T *buf, const i64 i, const T lr_neg, const T wd,
        const T alpha, const T c, const T c1m, const T eps, const T mom, const int mx,
        const int use_wd, const int centered, const int use_mom, const int small) {
    const T x0 = p[i];
    T g = mx ? -gr[i] : gr[i];
    if (use_wd) g = g + wd * x0;
    const T si = sq[i] * alpha + c * g * g;
    sq[i] = si;
    T avg;
    if (centered) {
        const T go = ga[i];
        /* PyTorch's lerp: from the start for a small weight, else from the end */
        const T gi = small ? go + c * (g - go) : g - (g - go) * c1m;
        ga[i] = gi;
        avg = sqrt(si + (T)(-1) * gi * gi);
    } else {
        avg = sqrt(si);
    }
    avg = avg + eps;
    T x;
    if (use_mom) {
        const T b = buf[i] * mom + g / avg;
        buf[i] = b;
        x = x0 + lr_neg * b;
    } else {
        x = x0 + lr_neg * g / avg;
    }
    p[i] = x;
    return (double)x - (double)x0;
}
"""

# One element of Adagrad (the host loop of src_c/optim.c, operation for
# operation): updates p[i] and sum[i] in place, returns the update
# p_new - p_old in double.
_ADAGRAD_ELEM = r"""
__device__ __forceinline__ double cg_adagrad_at(
        T *p, const T *gr, T *sum, const i64 i, const T clr_neg, const T wd, const T eps,
        const int mx, const int use_wd) {
    const T x0 = p[i];
    T g = mx ? -gr[i] : gr[i];
    if (use_wd) g = g + wd * x0;
    const T si = sum[i] + g * g;
    sum[i] = si;
    const T std = sqrt(si) + eps;
    const T x = x0 + clr_neg * g / std;
    p[i] = x;
    return (double)x - (double)x0;
}
"""

NAMES = tuple(_BODIES)
# The kernels that call CUDA's exp / log, whose implementations use fused
# multiply-adds themselves: they agree with the host (and with CuPy's exp)
# to rounding, not to the bit. clip_coef calls pow only for a norm other than
# 1, 2 and inf.
MATH_CALLS = ("softmax_rows", "softmax_backward_rows", "clip_coef")
# The kernels that also have a float16 source (all have float32 and float64).
HALF_NAMES = ("amp_unscale", "amp_unscale_multi")


def source(name, dtype):
    """The CUDA C source of kernel `name` (one of NAMES) for dtype
    "float32" or "float64"; its entry point is entry(name, dtype)."""
    dtype = str(dtype)
    if dtype in _HALF and name not in HALF_NAMES:
        raise KeyError(f"kernel {name!r} has no float16 source")
    t, sfx = {**_DTYPES, **_HALF}[dtype]
    op, ld, st = _OPMATH[dtype]
    head = _HALF_HEAD if dtype in _HALF else ""
    d = {"T": t, "sfx": sfx, "OP": op, "LD": ld, "ST": st, "ADAM": _ADAM_ELEM, "SGD": _SGD_ELEM,
         "RMSPROP": _RMSPROP_ELEM, "ADAGRAD": _ADAGRAD_ELEM, "STATS": _STATS_BODY,
         "SUM_SQ": _SUM_SQ_BODY}
    d["UNSCALE"] = _UNSCALE_BODY % d  # it names OP, LD and ST itself
    return head + (_COMMON + _BODIES[name]) % d


def entry(name, dtype):
    sfx = {**_DTYPES, **_HALF}[str(dtype)][1]
    return f"cg_{name}_{sfx}"


class NvrtcBuilder:
    """Builds a kernel for a GPU with CuPy's NVRTC, under exactly the options
    given, and loads it: ``builder(source, entry, options)`` -> a callable
    ``kernel(grid, block, args)`` (a ``cupy.cuda.Function``).

    Not ``cupy.RawKernel``: CuPy appends ``-ftz=true`` to every RawKernel's
    options and NVRTC takes the last ``-ftz`` (cupy/cupy#9576), so float32
    subnormals would be flushed to zero, in arithmetic and in comparisons,
    where the host (and PyTorch's CUDA kernels) keep them.

    The binary (a cubin; PTX for a GPU newer than NVRTC knows) is cached on
    disk, as CuPy caches its own kernels: in ``CUPY_CACHE_DIR`` (default
    ``~/.cupy/kernel_cache``), named ``cgrad-<hash>.bin`` by a hash of the
    source, options, architecture and NVRTC and CuPy versions; nothing is
    written with ``CUPY_CACHE_IN_MEMORY=1``, and a cache that cannot be
    written only costs the compile. ``arch`` (e.g. "90") defaults to the
    current device's compute capability; ``load`` (binary, entry) -> kernel
    defaults to loading into a ``cupy.cuda.Module`` (tests replace both to
    compile without a GPU)."""

    def __init__(self, cupy, arch=None, load=None, cache_dir=None):
        self._cp = cupy
        self._arch = arch
        self._load = load or self._load_module
        self._cache_dir = cache_dir

    def __call__(self, source, entry, options):
        return self._load(self.binary(source, entry, options), entry)

    def binary(self, source, entry, options):
        cp = self._cp
        arch = self._arch or str(cp.cuda.Device().compute_capability)
        options = tuple(options)
        key = repr((source, options, arch, cp.cuda.nvrtc.getVersion(), cp.__version__))
        path = self._cache_path(hashlib.sha256(key.encode()).hexdigest())
        if path is not None:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError:
                pass
        binary, _ = cp.cuda.compiler.compile_using_nvrtc(source, options, arch=arch,
                                                         filename=entry + ".cu")
        if path is not None:
            _write_atomically(path, binary)
        return binary

    def _cache_path(self, digest):
        if os.environ.get("CUPY_CACHE_IN_MEMORY", "") not in ("", "0"):
            return None
        d = self._cache_dir or os.environ.get("CUPY_CACHE_DIR") or os.path.expanduser(
            os.path.join("~", ".cupy", "kernel_cache"))
        return os.path.join(d, f"cgrad-{digest}.bin")

    def _load_module(self, binary, entry):
        module = self._cp.cuda.Module()
        module.load(binary)
        return module.get_function(entry)  # the Function keeps its module alive


def _write_atomically(path, data):
    """Writes data to path through a temporary file (a concurrent reader sees
    the whole file or none); an OSError leaves no file and is not raised."""
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".cgrad-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def grid_blocks(n, threads=256):
    """The blocks RawKernels.launch gives n elements: one per `threads`
    elements, at most 4096 (the threads then loop). The multi-tensor
    reductions give each tensor as many (xp_optim._per_tensor_blocks)."""
    return min((n + threads - 1) // threads, 4096)


class RawKernels:
    """Lazily built kernels, one per (name, dtype): ``build(source, entry,
    options)`` makes one (an NvrtcBuilder on a GPU; tests/python/cuda_emu.py
    builds them for the host)."""

    def __init__(self, build):
        self._build = build
        self._cache = {}

    def get(self, name, dtype):
        key = (name, str(dtype))
        k = self._cache.get(key)
        if k is None:
            k = self._build(source(name, dtype), entry(name, dtype), NVCC_OPTIONS)
            self._cache[key] = k
        return k

    def launch(self, name, dtype, n, args, threads=256):
        """Runs kernel name over n elements (grid-stride: at most 4096
        blocks, each thread then loops)."""
        if n == 0:
            return
        self.get(name, dtype)((grid_blocks(n, threads),), (threads,), args)

    def launch_blocks(self, name, dtype, blocks, args, threads=256):
        """Runs kernel name over exactly `blocks` blocks (a kernel that maps
        blocks to its work itself, as sum_sq_multi)."""
        if blocks:
            self.get(name, dtype)((blocks,), (threads,), args)

    def launch_rows(self, name, dtype, rows, args, threads=256):
        """Runs a row kernel, one warp per row (grid-stride over rows: at
        most 4096 blocks of threads // 32 rows)."""
        self.launch(name, dtype, rows * 32, args, threads)
