/*
 * cg_internal.h -- struct layouts and helpers shared by the C sources.
 * Not installed; the public API is include/cgrad.h.
 *
 * How an op is written (see ops_binary.c for the pattern):
 *
 *   static cg_status mul_backward(cg_node *node, cg_tensor *const *gout,
 *                                 cg_tensor **gin);
 *   static const cg_op OP_MUL = {"mul", mul_backward};
 *
 *   cg_status cg_mul(cg_tensor *a, cg_tensor *b, cg_tensor **out) {
 *       CG_CHECK_OUT(out); CG_CHECK_T(a); CG_CHECK_T(b);
 *       ... compute r (new tensor) with a C kernel ...
 *       if (cg__wants_grad2(a, b)) {               // grad mode on && any requires grad
 *           cg_tensor *ins[2] = {a, b};
 *           cg_node *node;
 *           st = cg__record(&OP_MUL, 2, ins, 1, &r, &node);
 *           if (!st) st = cg__save(node, a);       // saved slot 0
 *           if (!st) st = cg__save(node, b);       // saved slot 1
 *           if (st) { cg_tensor_free(r); return st; }
 *       }
 *       *out = r; return CG_OK;
 *   }
 *
 * Backward formulas are written with the public differentiable ops (cg_mul,
 * cg_sum_to_shape, ...), never with hand loops, so that with create_graph the
 * backward is itself recorded and second derivatives work. The engine calls
 * backward with grad mode == create_graph. gin[i] must be set to a new
 * reference with exactly the shape and dtype of input i (or left NULL when
 * node->needs_grad[i] is 0). A fused backward kernel is fine only if it is
 * itself an op with its own derivative.
 */
#ifndef CG_INTERNAL_H
#define CG_INTERNAL_H

#include "cgrad.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CG_INTERNAL __attribute__((visibility("hidden")))

/* SIMD clones of a hot loop (gradstats.c, amp.c): on x86-64 Linux with GCC
 * the AVX-512 / AVX2 / baseline versions are picked at load time; only on
 * static functions, so no ifunc resolver is exported
 * (tests/c/test_symbols.sh); one portable build elsewhere and under ASan. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CG_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define CG_SIMD_CLONES_ON 1
#else
#define CG_SIMD_CLONES
#endif

typedef struct cg_node cg_node;

/* A pushed backward override (cg_override_push); refcounted: the thread's
 * stack and every entry recorded under it hold a reference. */
typedef struct cg_override {
    int64_t refcount;
    int64_t id;
    char *op_name;
    cg_override_fn fn;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    struct cg_override *outer; /* next on the thread's stack (not owned) */
} cg_override;

/* A gradient hook registered on a tensor (see cg_tensor_register_hook). */
typedef struct cg_hook {
    int64_t id;
    int output_nr;        /* on a node: which output it watches */
    int post_accumulate;  /* 1: cg_post_accumulate_hook_fn */
    cg_grad_hook_fn fn;
    cg_post_accumulate_hook_fn post_fn;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    struct cg_hook *next;
} cg_hook;

/* Refcounted memory block shared by a tensor and its views. */
typedef struct cg_storage {
    int64_t refcount;
    void *data;
    size_t nbytes;
    uint64_t version;     /* bumped by in-place ops (shared by all views) */
    cg_release_fn release; /* foreign memory: called instead of free(data) */
    void *release_ctx;
    int device;           /* CG_DEVICE_CPU, or a registered backend (device.c) */
    void *handle;         /* device memory: the backend's buffer (data is NULL) */
    /* int64 values uploaded from the host by cg_to_device: their range,
     * true while version is still range_version (device.c), so nll_loss
     * bounds-checks a device target without copying it back (ops_loss.c).
     * range_max_neg: the largest negative value, 0 when there is none. */
    int has_range;
    uint64_t range_version;
    int64_t range_min, range_max, range_max_neg;
} cg_storage;

struct cg_tensor {
    int64_t refcount;
    cg_dtype dtype;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
    int64_t strides[CG_MAX_DIMS]; /* elements */
    int64_t offset;               /* elements from storage->data */
    int64_t numel;
    cg_storage *storage;
    int requires_grad;
    cg_tensor *grad;    /* owned, leaves only */
    cg_node *grad_fn;   /* owned; NULL for leaves */
    int output_nr;      /* which output of grad_fn this is */
    cg_tensor *free_next; /* deallocation worklist link (refcount 0 only) */
    cg_hook *hooks;       /* leaves only (non-leaf hooks live on grad_fn) */
    /* Engine scratch (one backward): the leaf's summed gradient. */
    cg_tensor *engine_grad;
    uint64_t engine_mark;
    /* Row-sparse layout (sparse.c): shape/numel describe the dense tensor,
     * storage is an empty block, strides are 0; the data lives in two owned
     * contiguous parts: int64 row indices (nnz,) and values (nnz, *shape[1:]). */
    cg_layout layout;
    cg_tensor *sp_indices;
    cg_tensor *sp_values;
    int sp_coalesced; /* indices sorted and unique */
};

/* A tensor saved for backward. */
typedef struct cg_saved {
    cg_tensor *t;       /* owned; for outputs: a detached alias (no cycle) */
    const cg_storage *storage; /* t's storage when saved (cg_tensor_set_data swaps it) */
    uint64_t version;   /* storage version when saved */
    int is_output;      /* output_nr + 1 when t is an output of this node */
} cg_saved;

/* Where the gradient of one input goes. */
typedef struct cg_edge {
    cg_node *node;      /* owned ref: producer of the input (non-leaf) */
    int input_nr;       /* which output of node */
    cg_tensor *leaf;    /* owned ref: leaf that accumulates (requires grad) */
} cg_edge;

typedef cg_status (*cg_backward_impl)(cg_node *node, cg_tensor *const *grad_outputs,
                                      cg_tensor **grad_inputs);

typedef struct cg_op {
    const char *name;
    cg_backward_impl backward;
} cg_op;

typedef struct cg_out_meta {
    cg_tensor *weak;    /* the output itself, NOT owned: valid only while the
                           op that records the node still holds it */
    int device;
    cg_dtype dtype;
    int ndim;
    int64_t shape[CG_MAX_DIMS];
} cg_out_meta;

#define CG_NODE_MAX_SAVED 4
#define CG_NODE_MAX_IPARAM (4 * CG_MAX_DIMS + 8)

/* One tape entry. */
struct cg_node {
    int64_t refcount;
    uint64_t seq;          /* thread-local sequence number, increasing */
    const cg_op *op;
    int n_inputs, n_outputs;
    cg_edge *next;         /* n_inputs entries (trailing allocation) */
    unsigned char *needs_grad; /* n_inputs entries */
    cg_out_meta *out_meta; /* n_outputs entries */
    cg_saved saved[CG_NODE_MAX_SAVED];
    int n_saved;
    int released;          /* saved tensors freed by a non-retained backward */
    /* Op parameters (dims, scalars) for the backward. */
    double fparam[4];
    int64_t iparam[CG_NODE_MAX_IPARAM];
    int n_iparam;
    /* Foreign / custom backward. */
    char *custom_name;     /* custom_name_buf, or malloc'd when longer */
    char custom_name_buf[40];
    cg_custom_backward_fn custom_backward;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    /* Extra owned tensors (e.g. variable-length cat inputs' metadata). */
    void *extra;
    void (*extra_free)(void *);
    /* Engine scratch (valid during one backward). */
    uint64_t mark;
    int needed;            /* cg_grad: leads to a requested input */
    cg_tensor **grad_buf;  /* n_outputs accumulated gradients */
    cg_node *free_next;    /* deallocation worklist link (refcount 0 only) */
    cg_hook *hooks;        /* hooks on the outputs' gradients */
    /* Backward override: replaces op->backward; keeps inputs (owned) and
     * output aliases (owned, detached: rebuilt on use like saved outputs). */
    cg_override *override;
    cg_tensor **ov_tensors; /* n_inputs inputs then n_outputs output aliases */
    /* Anomaly mode (anomaly.c): where the entry was created (an owned tag
     * from the location hook) and whether its forward produced NaN/Inf. */
    void *location;
    int nonfinite_out;
};

/* ------------------------------------------------------------- errors */
/* Sets the thread-local message (printf format) and returns code. */
CG_INTERNAL cg_status cg__err(cg_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define CG_CHECK_OUT(out)                                                      \
    do {                                                                       \
        if (!(out)) return cg__err(CG_ERR_NULL, "%s: out pointer is NULL", __func__); \
        *(out) = NULL;                                                         \
    } while (0)
/* Ops take strided tensors only: a row-sparse argument is refused here, in
 * the one check every op makes, so no op reads a sparse tensor's (empty)
 * storage or densifies it silently. Sparse-aware calls use CG_CHECK_TS. */
#define CG_CHECK_T(t)                                                          \
    do {                                                                       \
        if (!(t)) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", __func__, #t); \
        if ((t)->layout != CG_STRIDED) return cg__sparse_refused(__func__, #t); \
        if ((t)->storage->device) return cg__device_refused(__func__, #t, (t)); \
        if ((t)->dtype == CG_FLOAT16) return cg__half_refused(__func__, #t);   \
    } while (0)
/* As CG_CHECK_T, for ops that have device kernels (they check that their
 * tensors share a device with cg__same_device). */
#define CG_CHECK_TD(t)                                                         \
    do {                                                                       \
        if (!(t)) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", __func__, #t); \
        if ((t)->layout != CG_STRIDED) return cg__sparse_refused(__func__, #t); \
        if ((t)->dtype == CG_FLOAT16 && !(t)->storage->device)                 \
            return cg__half_refused(__func__, #t);                             \
    } while (0)
/* Any dtype, any device: ops that only move or reinterpret elements
 * (views, copies, casts, device moves), float16 on the host included. */
#define CG_CHECK_TA(t)                                                         \
    do {                                                                       \
        if (!(t)) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", __func__, #t); \
        if ((t)->layout != CG_STRIDED) return cg__sparse_refused(__func__, #t); \
    } while (0)
#define CG_CHECK_TS(t)                                                         \
    do {                                                                       \
        if (!(t)) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", __func__, #t); \
        if (!(t)->layout && (t)->storage->device) return cg__device_refused(__func__, #t, (t)); \
        if ((t)->dtype == CG_FLOAT16) return cg__half_refused(__func__, #t);   \
    } while (0)
/* Sparse-aware and device-capable: only the NULL check. */
#define CG_CHECK_TSD(t)                                                        \
    do {                                                                       \
        if (!(t)) return cg__err(CG_ERR_NULL, "%s: tensor argument '%s' is NULL", __func__, #t); \
    } while (0)
#define CG_TRY(expr)                                                           \
    do {                                                                       \
        cg_status cg__st_ = (expr);                                            \
        if (cg__st_ != CG_OK) return cg__st_;                                  \
    } while (0)

/* CG_ERR_UNSUPPORTED: fn cannot take the row-sparse tensor argument arg. */
CG_INTERNAL cg_status cg__sparse_refused(const char *fn, const char *arg);
/* CG_ERR_DTYPE: fn computes on the host, where float16 is storage only. */
CG_INTERNAL cg_status cg__half_refused(const char *fn, const char *arg);

/* ------------------------------------------------------------- devices */
/* device.c: the backend registry and the calls every device branch makes. */
static inline int cg__dev(const cg_tensor *t) { return t->storage->device; }
/* A device's name for messages ("?" for an unregistered id). */
CG_INTERNAL const char *cg__device_label(int device);
/* CG_ERR_UNSUPPORTED: fn has no kernel for t's device yet. */
CG_INTERNAL cg_status cg__device_refused(const char *fn, const char *arg, const cg_tensor *t);
/* CG_ERR_VALUE naming fn and both devices unless ts[0..n) (NULLs skipped)
 * share one device; *device receives it. */
CG_INTERNAL cg_status cg__same_device(const char *fn, int n, cg_tensor *const *ts, int *device);
/* New contiguous tensor on device (the host when 0): cg__new's contract. */
CG_INTERNAL cg_status cg__new_on(int device, cg_dtype dtype, int ndim, const int64_t *shape,
                                 int zero, cg_tensor **out);
/* A storage of nbytes on device (refcount 1). */
CG_INTERNAL cg_status cg__device_alloc(int device, size_t nbytes, int zero, cg_storage **out);
/* A tensor header viewing s (its reference is taken over, and dropped when
 * this fails); strides NULL: contiguous. Shape checks are the caller's. */
CG_INTERNAL cg_status cg__tensor_over(cg_storage *s, cg_dtype dtype, int ndim, const int64_t *shape,
                                      const int64_t *strides, int64_t offset, cg_tensor **out);
/* Runs the backend kernel `name` of device (see cg_backend.kernel). */
CG_INTERNAL cg_status cg__kernel(int device, const char *name, int n_out, int n_tensors,
                                 cg_tensor *const *tensors, int n_f, const double *f, int n_i,
                                 const int64_t *iparam);
/* A 0-d scalar of dtype dt for an op with `like`: on the host (0-d host
 * tensors join any device), except float16 on a device, made there
 * (host float16 cannot be computed with). */
CG_INTERNAL cg_status cg__scalar_like(const cg_tensor *like, cg_dtype dt, double value, cg_tensor **out);
/* Releases a device buffer (storage teardown in tensor.c). */
CG_INTERNAL void cg__device_release(int device, void *handle);
/* Host <-> device copies of t's elements, row-major, as the backend does. */
CG_INTERNAL cg_status cg__device_to_host(const cg_tensor *t, void *dst);
CG_INTERNAL cg_status cg__device_from_host(cg_tensor *t, const void *src);
/* Whether every int64 value of device tensor t is in [0, n) or is `except`,
 * as known from its upload from the host without reading it: 0 when that
 * is not known (t made on the device, or written since it was uploaded),
 * or not so; the caller then checks a host copy. `except` admits one
 * negative value (nll_loss's ignore_index); pass n to admit none. A view
 * answers for its whole storage, so a true answer holds for any part. */
CG_INTERNAL int cg__int64_known_within(const cg_tensor *t, int64_t n, int64_t except);
/* t's elements, contiguous, where the host can read them: t itself (or its
 * contiguous copy) on the host, else a host copy of the device tensor (a
 * sync on a GPU: the bounds checks of device indices read them so). */
CG_INTERNAL cg_status cg__host_contig(cg_tensor *t, cg_tensor **out);
/* cg__copy_elems when either side is on a device. */
CG_INTERNAL cg_status cg__device_copy(cg_tensor *dst, const cg_tensor *src);
/* Whether op's backward takes row-sparse output gradients as they are (a
 * device move: device.c); the engine densifies them for every other op. */
CG_INTERNAL int cg__op_takes_sparse_grads(const cg_op *op);

/* ------------------------------------------------------------ tensors */
/* Floating dtypes (differentiable). float16 computes only on devices: host
 * code paths are guarded by CG_CHECK_T / CG_CHECK_TD, which refuse it. */
static inline int cg__is_float(cg_dtype d) {
    return d == CG_FLOAT32 || d == CG_FLOAT64 || d == CG_FLOAT16;
}

/* A floating tensor whose data this call can compute on: float32/float64
 * anywhere, float16 only on a device (host float16 is storage only). */
static inline int cg__float_here(const cg_tensor *t) {
    const cg_tensor *v = t->layout ? t->sp_values : t; /* a row-sparse one: its values */
    return t->dtype == CG_FLOAT32 || t->dtype == CG_FLOAT64 ||
           (t->dtype == CG_FLOAT16 && v && v->storage && v->storage->device);
}

/* IEEE binary16 <-> double, exact both ways where representable, and
 * double -> half rounds to nearest even (as NumPy's float16 casts). */
static inline double cg__h2d(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp((double)m, -24)
             : e == 31 ? (m ? NAN : INFINITY)
             : ldexp((double)(m | 0x400), e - 25);
    return (h & 0x8000) ? -v : v;
}
static inline uint16_t cg__d2h(double x) {
    uint64_t b;
    memcpy(&b, &x, 8);
    uint16_t sign = (uint16_t)((b >> 48) & 0x8000);
    int64_t e = (int64_t)((b >> 52) & 0x7ff);
    uint64_t m = b & 0xFFFFFFFFFFFFFull;
    if (e == 0x7ff) return (uint16_t)(sign | 0x7c00 | (m ? 0x200 : 0));
    int64_t he = e - 1023 + 15;
    if (he >= 31) return (uint16_t)(sign | 0x7c00);
    if (he < -10) return sign; /* below half the smallest subnormal */
    int shift;
    uint64_t hm;
    if (he <= 0) { /* subnormal: the implicit bit joins the mantissa */
        m |= 1ull << 52;
        shift = (int)(43 - he);
        he = 0;
    } else {
        shift = 42;
    }
    hm = m >> shift;
    uint64_t rem = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (hm & 1))) ++hm;
    /* a carry out of the mantissa moves the exponent up (possibly to inf) */
    uint64_t r = ((uint64_t)he << 10) + hm;
    if (r >= 0x7c00) r = 0x7c00;
    return (uint16_t)(sign | r);
}
/* NumPy-style promotion: bool < int64 < float32 < float64. */
CG_INTERNAL cg_dtype cg__promote(cg_dtype a, cg_dtype b);
CG_INTERNAL int cg__valid_dtype(cg_dtype d);
/* Pointer to element 0 of t. */
static inline void *cg__ptr(const cg_tensor *t) {
    return (char *)t->storage->data + (size_t)t->offset * cg_dtype_size(t->dtype);
}
CG_INTERNAL void cg__contig_strides(int ndim, const int64_t *shape, int64_t *strides);
CG_INTERNAL int cg__is_contig(const cg_tensor *t);
/* New contiguous tensor, uninitialised (zeroed when zero != 0). Checks
 * ndim, negative sizes and overflow. */
CG_INTERNAL cg_status cg__new(cg_dtype dtype, int ndim, const int64_t *shape, int zero,
                              cg_tensor **out);
/* New tensor header sharing base's storage (no autograd link). */
CG_INTERNAL cg_status cg__view(cg_tensor *base, int ndim, const int64_t *shape,
                               const int64_t *strides, int64_t offset, cg_tensor **out);
/* Contiguous version of t, not recorded: new ref to t itself when already
 * contiguous, else a copy. */
CG_INTERNAL cg_status cg__contig(cg_tensor *t, cg_tensor **out);
/* Copy src's elements (any strides) into dst (any strides), same shape,
 * casting dtype. Not recorded; does not bump versions. */
CG_INTERNAL cg_status cg__copy_elems(cg_tensor *dst, const cg_tensor *src);
/* Normalise a possibly negative dim against ndim; CG_ERR_INDEX if out of
 * range (the message names fn). */
CG_INTERNAL cg_status cg__norm_dim(const char *fn, int dim, int ndim, int *out);
/* Broadcast two shapes (NumPy rules). */
CG_INTERNAL cg_status cg__broadcast_shapes(const char *fn, int na, const int64_t *sa, int nb,
                                           const int64_t *sb, int *nout, int64_t *sout);
/* Strides (elements) to read t as if it had shape (ndim, shape) under
 * broadcasting: 0 on broadcast dims. t must be broadcastable to shape. */
CG_INTERNAL void cg__broadcast_strides(const cg_tensor *t, int ndim, const int64_t *shape,
                                       int64_t *strides);
CG_INTERNAL int cg__same_shape(const cg_tensor *a, const cg_tensor *b);
/* Writes "(2, 3)" into buf. */
CG_INTERNAL const char *cg__shape_str(int ndim, const int64_t *shape, char *buf, size_t n);
#define CG_SHAPE_STR_LEN 128
/* Checks a (ndim, shape) argument of the public function fn: ndim in
 * [0, CG_MAX_DIMS] and shape non-NULL when ndim > 0. Sizes are not checked. */
CG_INTERNAL cg_status cg__check_shape_arg(const char *fn, int ndim, const int64_t *shape);

/* Read / write element i (flat, of a contiguous buffer) as double. */
static inline double cg__load(const void *p, cg_dtype d, int64_t i) {
    switch (d) {
    case CG_FLOAT32: return ((const float *)p)[i];
    case CG_FLOAT64: return ((const double *)p)[i];
    case CG_INT64: return (double)((const int64_t *)p)[i];
    case CG_BOOL: return ((const unsigned char *)p)[i] ? 1.0 : 0.0;
    case CG_FLOAT16: return cg__h2d(((const uint16_t *)p)[i]);
    default: return 0.0;
    }
}
/* double -> int64 defined for every input: a plain C cast of NaN or of a
 * value outside int64's range is undefined behaviour. Truncates toward
 * zero like the cast and gives INT64_MIN for NaN and out-of-range values,
 * which is what x86's cvttsd2si (and so PyTorch on x86) produces. */
static inline int64_t cg__f2i64(double v) {
    return (v >= -9223372036854775808.0 && v < 9223372036854775808.0) ? (int64_t)v : INT64_MIN;
}
/* Kernel scalar parameters (double) converted to the kernel's type T. */
#define CG_FROM_DOUBLE(T, v) CG_FROM_DOUBLE_##T(v)
#define CG_FROM_DOUBLE_float(v) ((float)(v))
#define CG_FROM_DOUBLE_double(v) (v)
#define CG_FROM_DOUBLE_int64_t(v) cg__f2i64(v)

static inline void cg__store(void *p, cg_dtype d, int64_t i, double v) {
    switch (d) {
    case CG_FLOAT32: ((float *)p)[i] = (float)v; break;
    case CG_FLOAT64: ((double *)p)[i] = v; break;
    case CG_INT64: ((int64_t *)p)[i] = cg__f2i64(v); break;
    case CG_BOOL: ((unsigned char *)p)[i] = v != 0.0; break;
    case CG_FLOAT16: ((uint16_t *)p)[i] = cg__d2h(v); break;
    default: break;
    }
}

/* N-d index walker: advance idx (row-major) over shape; returns 0 at end. */
static inline int cg__next_index(int ndim, const int64_t *shape, int64_t *idx) {
    for (int d = ndim - 1; d >= 0; --d) {
        if (++idx[d] < shape[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

/* ------------------------------------------------------------- autograd */
CG_INTERNAL int cg__grad_mode(void);
/* grad mode on and t requires grad. */
CG_INTERNAL int cg__wants_grad1(const cg_tensor *a);
CG_INTERNAL int cg__wants_grad2(const cg_tensor *a, const cg_tensor *b);
CG_INTERNAL int cg__wants_gradn(int n, cg_tensor *const *ts);
/* Creates a node linking inputs -> outputs, marks outputs requires_grad and
 * sets their grad_fn. Inputs that do not require grad get an empty edge and
 * needs_grad 0. *node_out is borrowed (owned by the outputs). */
CG_INTERNAL cg_status cg__record(const cg_op *op, int n_inputs, cg_tensor *const *inputs,
                                 int n_outputs, cg_tensor *const *outputs,
                                 cg_node **node_out);
/* Save a tensor for backward (slot = order of calls). Use cg__save_output
 * for a tensor that is an output of this node (avoids a refcount cycle);
 * call it right after cg__record, while the op still holds the output. */
CG_INTERNAL cg_status cg__save(cg_node *node, cg_tensor *t);
CG_INTERNAL cg_status cg__save_output(cg_node *node, int output_nr);
/* New reference to saved slot i; fails with CG_ERR_AUTOGRAD when the graph
 * was released or the tensor was modified in place since it was saved. */
CG_INTERNAL cg_status cg__saved(cg_node *node, int i, cg_tensor **out);
/* The same three on a slot outside node->saved (an entry that keeps more
 * than CG_NODE_MAX_SAVED tensors: registry.c); unpack checks the version
 * and relinks a saved output to node, but not node->released. */
CG_INTERNAL void cg__save_into(cg_saved *slot, cg_tensor *t);
CG_INTERNAL cg_status cg__save_output_into(cg_node *node, int output_nr, cg_saved *slot);
CG_INTERNAL cg_status cg__saved_unpack(cg_node *node, const cg_saved *slot, cg_tensor **out);
/* The engine's check of a custom backward's gradient for input i (dtype,
 * shape; a broadcast shape is summed down to the input's, replacing *g). */
CG_INTERNAL cg_status cg__check_custom_grad(cg_node *node, int i, cg_tensor **g);
/* Registered ops (registry.c): every call's entry has this backward; the
 * release frees what the call saved outside node->saved. */
CG_INTERNAL cg_status cg__registered_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
CG_INTERNAL void cg__registered_release(cg_node *node);
CG_INTERNAL const char *cg__node_name(const cg_node *node);
CG_INTERNAL void cg__node_decref(cg_node *node);
/* Frees a hook list (calls each ctx_free). */
CG_INTERNAL void cg__hooks_free(cg_hook *h);
/* Releases everything a dead node owns (called by the deallocation loop). */
CG_INTERNAL void cg__node_destroy(cg_node *node);
/* Pushes a dead node on the deallocation worklist (tensor.c). */
CG_INTERNAL void cg__node_dispose(cg_node *node);

/* Anomaly mode (anomaly.c). */
CG_INTERNAL int cg__anomaly_on(void);
CG_INTERNAL int64_t cg__count_nonfinite(const cg_tensor *t);
CG_INTERNAL int cg__anomaly_all_finite(int n, cg_tensor *const *ts);
CG_INTERNAL void cg__location_free(void *tag);
/* Where n was created, formatted into buf (NULL when unknown). */
CG_INTERNAL const char *cg__node_location(const cg_node *n, char *buf, size_t size);

/* Tape-entry observers (observe.c). */
CG_INTERNAL int cg__entry_hooks_on(void);
CG_INTERNAL cg_status cg__run_entry_hooks(const cg_node *n, int n_outputs,
                                          cg_tensor *const *grad_outputs);
/* At record time: location, output scan, first-anomaly report. */
CG_INTERNAL cg_status cg__anomaly_record(cg_node *n, int n_inputs, cg_tensor *const *inputs,
                                         int n_outputs, cg_tensor *const *outputs);
/* After an entry's backward: fails when a computed gradient is non-finite. */
CG_INTERNAL cg_status cg__anomaly_backward(const cg_node *n, int n_grad_outputs,
                                           cg_tensor *const *grad_outputs, int n_inputs,
                                           cg_tensor *const *grad_inputs);

/* Row-sparse tensors (sparse.c). */
/* New sparse tensor over the given parts (references taken; both must be
 * contiguous, indices int64 (nnz,) in [0, num_rows), values (nnz, ...)). */
CG_INTERNAL cg_status cg__sparse_make(cg_tensor *indices, cg_tensor *values, int64_t num_rows,
                                      int coalesced, cg_tensor **out);
/* *acc = *acc + g, g consumed: sparse + sparse concatenates, a mix
 * densifies (a new tensor either way). Used by the engine. */
CG_INTERNAL cg_status cg__sparse_accumulate(cg_tensor **acc, cg_tensor *g);
/* dense += sparse in place (rows added in index order). */
CG_INTERNAL cg_status cg__sparse_add_into(cg_tensor *dense, const cg_tensor *sp);
/* New reference to a coalesced tensor equal to t (t itself when it is). */
CG_INTERNAL cg_status cg__sparse_coalesced(cg_tensor *t, cg_tensor **out);
/* Replaces t's parts by coalesced ones (the same tensor mathematically). */
CG_INTERNAL cg_status cg__sparse_coalesce_inplace(cg_tensor *t);

/* ---------------------------------------------------------------- GEMM */
CG_INTERNAL void cg__sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                           const float *a, int64_t lda, const float *b, int64_t ldb,
                           float beta, float *c, int64_t ldc);
CG_INTERNAL void cg__dgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                           const double *a, int64_t lda, const double *b, int64_t ldb,
                           double beta, double *c, int64_t ldc);

/* ----------------------------------------------------------------- RNG */
CG_INTERNAL uint64_t cg__rng_next(void);
CG_INTERNAL double cg__rng_uniform(void); /* [0, 1) with 53 bits */

/* ------------------------------------- elementwise iteration (ops_binary.c) */
#ifndef CG_ELEMENTWISE_DECLS
#define CG_ELEMENTWISE_DECLS
#define CG_ITER_MAX_OPS 4
/* Iteration space after dropping size-1 dims and merging dims that are
 * contiguous in every operand. Operand 0 is the output. */
typedef struct cg__iter {
    int ndim; /* >= 1 */
    int nops;
    int64_t shape[CG_MAX_DIMS];
    int64_t st[CG_ITER_MAX_OPS][CG_MAX_DIMS]; /* strides, elements */
} cg__iter;
/* Processes n elements: operand k starts at p[k] and steps s[k] elements. */
typedef void (*cg__row_fn)(int64_t n, char *const *p, const int64_t *s, const double *prm);
CG_INTERNAL void cg__iter_init(cg__iter *it, int ndim, const int64_t *shape, int nops,
                               int64_t (*strides)[CG_MAX_DIMS]);
CG_INTERNAL void cg__iter_run(const cg__iter *it, char *const *base, const size_t *elsize,
                              cg__row_fn fn, const double *prm);
/* New ref to t when it already has dtype, else a contiguous cast copy. */
CG_INTERNAL cg_status cg__cast_tmp(cg_tensor *t, cg_dtype dtype, cg_tensor **out);
/* out (dtype odt, a's shape) = row(a cast to cdt). Not recorded. */
/* On a device the backend runs kernel k on (out, a cast) with prm[0..4). */
CG_INTERNAL cg_status cg__map1(const char *k, cg_tensor *a, cg_dtype cdt, cg_dtype odt,
                               cg__row_fn row, const double *prm, cg_tensor **out);
/* out (dtype odt, broadcast shape) = row(a, b), both cast to cdt. Not
 * recorded; fn names the caller in shape errors. */
CG_INTERNAL cg_status cg__map2(const char *fn, const char *k, cg_tensor *a, cg_tensor *b,
                               cg_dtype cdt, cg_dtype odt, cg__row_fn row, const double *prm,
                               cg_tensor **out);
#endif

#endif /* CG_INTERNAL_H */
