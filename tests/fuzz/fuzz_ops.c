/* fuzz_ops.c -- libFuzzer harness for the public C API.
 *
 * The input bytes are a program: each step reads an opcode and its
 * arguments and applies one API call to a small pool of tensor slots
 * (creation with random small shapes and dtypes, 0-size included;
 * elementwise ops with broadcasting and mismatched shapes; reductions with
 * valid, negative, repeated and out-of-range dims; shape and index ops;
 * matmul, conv, pooling; in-place ops; custom ops and hooks; backward and
 * cg_grad with retain_graph / create_graph, sometimes twice). An empty slot
 * passes NULL. The harness checks only the contract, not values:
 *  - every call returns a status in [CG_OK, CG_STATUS_COUNT);
 *  - a failing call leaves its output NULL and sets a message;
 *  - a succeeding call returns a tensor with a sane shape;
 *  - nothing crashes, and (under ASan/LSan) nothing leaks once every slot
 *    is freed at the end of the input.
 * A violated contract aborts (the fuzzer saves the input).
 *
 * Built by `make fuzz` (clang, -fsanitize=fuzzer,address,undefined) and by
 * `make test-c` with tests/fuzz/replay.c, which runs the corpus. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgrad.h"

#define N_SLOTS 8
#define MAX_STEPS 256

typedef struct reader {
    const uint8_t *p;
    size_t n;
} reader;

static unsigned rd(reader *r) {
    if (!r->n) return 0;
    --r->n;
    return *r->p++;
}
static unsigned rd_mod(reader *r, unsigned m) { return m ? rd(r) % m : 0; }
static int rd_slot(reader *r) { return (int)rd_mod(r, N_SLOTS); }
/* Small signed dim, mostly valid: -4..4, sometimes wild. */
static int rd_dim(reader *r) {
    unsigned b = rd(r);
    if (b >= 250) return (int)(b - 250) * 1000 - 3000;
    return (int)(b % 9) - 4;
}
static double rd_double(reader *r) {
    static const double vals[] = {0.0, 1.0, -1.0, 0.5, 2.0, -3.0, 1e-3, 1e30, -1e30,
                                  INFINITY, -INFINITY, NAN, 0.1, 7.0, -0.25, 1e-300};
    return vals[rd(r) % (sizeof vals / sizeof vals[0])];
}

static cg_tensor *slot[N_SLOTS];

/* Every tensor made a leaf that requires grad or given a .grad (retained).
 * backward with create_graph leaves leaf -> .grad -> graph -> leaf
 * reference cycles, as in PyTorch (whose docs warn about it), and so does
 * assigning a .grad computed from the tensor; a program breaks them by
 * clearing the gradients, and so does the end of each input here. */
#define MAX_LEAVES 64
static cg_tensor *leaves[MAX_LEAVES];
static int n_leaves;

static void set_requires_grad(cg_tensor *t, int on);
static void reset_state(void);

static void fail_contract(const char *what, const char *call) {
    fprintf(stderr, "fuzz_ops: contract violated by %s: %s (last error: '%s')\n", call, what,
            cg_last_error());
    abort();
}

#define POISON ((cg_tensor *)(uintptr_t)0x10)

/* The status contract for one call with one output. */
static void check_contract(const char *call, cg_status st, cg_tensor *out) {
    if ((int)st < 0 || st >= CG_STATUS_COUNT) fail_contract("status out of range", call);
    if (out == POISON) fail_contract("output not written", call);
    if (st != CG_OK) {
        if (out != NULL) fail_contract("failed but left an output", call);
        if (cg_last_error()[0] == '\0') fail_contract("failed without a message", call);
        return;
    }
    if (out == NULL) fail_contract("succeeded without an output", call);
    {
        int nd = cg_tensor_ndim(out), i;
        int64_t numel = 1;
        if (nd < 0 || nd > CG_MAX_DIMS) fail_contract("bad ndim", call);
        for (i = 0; i < nd; ++i) {
            if (cg_tensor_shape(out)[i] < 0) fail_contract("negative shape", call);
            numel *= cg_tensor_shape(out)[i];
        }
        if (numel != cg_tensor_numel(out)) fail_contract("numel != prod(shape)", call);
        if ((unsigned)cg_tensor_dtype(out) >= CG_DTYPE_COUNT) fail_contract("bad dtype", call);
    }
}

/* Checks the contract; on success stores out in slot dst. */
static void check_out(const char *call, cg_status st, cg_tensor *out, int dst) {
    check_contract(call, st, out);
    if (st != CG_OK) return;
    cg_tensor_free(slot[dst]);
    slot[dst] = out;
}

static void check_status(const char *call, cg_status st) {
    if ((int)st < 0 || st >= CG_STATUS_COUNT) fail_contract("status out of range", call);
    if (st != CG_OK && cg_last_error()[0] == '\0') fail_contract("failed without a message", call);
}

/* The output is poisoned before each call: a failing call must reset it. */
#define CALL_OUT(dst, expr)                                                                 \
    do {                                                                                    \
        cg_tensor *out = POISON;                                                            \
        cg_status st_;                                                                      \
        cg_clear_error();                                                                   \
        st_ = (expr);                                                                       \
        check_out(#expr, st_, out, dst);                                                    \
    } while (0)
#define CALL(expr)                                                                          \
    do {                                                                                    \
        cg_status st_;                                                                      \
        cg_clear_error();                                                                   \
        st_ = (expr);                                                                       \
        check_status(#expr, st_);                                                           \
    } while (0)

static void set_requires_grad(cg_tensor *t, int on) {
    cg_status st;
    cg_clear_error();
    st = cg_tensor_set_requires_grad(t, on);
    check_status("cg_tensor_set_requires_grad", st);
    if (st == CG_OK && on && n_leaves < MAX_LEAVES) {
        cg_tensor_retain(t);
        leaves[n_leaves++] = t;
    }
}

static cg_dtype rd_dtype(reader *r) {
    unsigned b = rd(r) % 8; /* mostly floating */
    return b < 3 ? CG_FLOAT32 : b < 6 ? CG_FLOAT64 : b == 6 ? CG_INT64 : CG_BOOL;
}

static int rd_shape(reader *r, int64_t *shape) {
    int nd = (int)rd_mod(r, 5), i; /* 0..4 */
    for (i = 0; i < nd; ++i) shape[i] = (int64_t)rd_mod(r, 4); /* 0..3, 0-size included */
    if (rd(r) == 255) shape[0] = -1; /* invalid now and then */
    return nd;
}

/* An int64 index tensor with values around [-3, 5) (some out of range). */
static cg_status make_index(reader *r, int nd, const int64_t *shape, cg_tensor **out) {
    int64_t vals[64], numel = 1;
    int i;
    for (i = 0; i < nd; ++i) numel *= shape[i] < 0 ? 0 : shape[i];
    if (numel > 64) numel = 64, nd = 1, shape = &numel;
    for (i = 0; i < numel; ++i) vals[i] = (int64_t)rd_mod(r, 8) - 3;
    return cg_from_data(CG_INT64, nd, shape, vals, out);
}

/* -------- custom op: y = 3 * x, context is a retained tensor */
static cg_status triple_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                 const int *needs, cg_tensor **gin) {
    (void)ctx;
    (void)n_out;
    if (n_in < 1 || !needs[0]) return CG_OK;
    return cg_mul_scalar(gout[0], 3.0, &gin[0]);
}
static cg_status failing_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                  const int *needs, cg_tensor **gin) {
    (void)ctx, (void)n_out, (void)gout, (void)n_in, (void)needs, (void)gin;
    return cg_set_error(CG_ERR_CALLBACK, "fuzz: backward fails on purpose");
}
static void free_tensor_ctx(void *ctx) { cg_tensor_free((cg_tensor *)ctx); }

static cg_status clamp_hook(void *ctx, cg_tensor *grad, cg_tensor **replacement) {
    (void)ctx;
    return cg_clamp(grad, -1.0, 1.0, replacement);
}

static cg_status sum_fn(void *ctx, int n, cg_tensor *const *in, cg_tensor **out) {
    (void)ctx;
    if (n < 1) return cg_set_error(CG_ERR_VALUE, "sum_fn: no input");
    return cg_tanh(in[0], out);
}

static void step(reader *r) {
    unsigned op = rd(r);
    int a = rd_slot(r), b = rd_slot(r), d = rd_slot(r);
    cg_tensor *A = slot[a], *B = slot[b];
    int64_t shape[CG_MAX_DIMS];
    int dims[CG_MAX_DIMS];
    int nd, i;
    static int trace = -1;

    if (trace < 0) trace = getenv("FUZZ_TRACE") != NULL; /* debugging a saved input */
    if (trace) fprintf(stderr, "op %u  a=%d b=%d d=%d\n", op % 40, a, b, d);
    switch (op % 40) {
    case 0: { /* creation */
        cg_dtype dt = rd_dtype(r);
        nd = rd_shape(r, shape);
        switch (rd_mod(r, 6)) {
        case 0: CALL_OUT(d, cg_zeros(dt, nd, shape, &out)); break;
        case 1: CALL_OUT(d, cg_ones(dt, nd, shape, &out)); break;
        case 2: CALL_OUT(d, cg_full(dt, nd, shape, rd_double(r), &out)); break;
        case 3: CALL_OUT(d, cg_randn(dt, nd, shape, &out)); break;
        case 4: CALL_OUT(d, cg_rand(dt, nd, shape, &out)); break;
        default: CALL_OUT(d, cg_scalar(dt, rd_double(r), &out)); break;
        }
        if (rd(r) & 1) set_requires_grad(slot[d], 1);
        break;
    }
    case 1: {
        double start = rd_double(r), end = rd_double(r), stp = rd_double(r);
        if (fabs(end - start) > 64 * fabs(stp)) end = start; /* keep it small */
        CALL_OUT(d, cg_arange(rd_dtype(r), start, end, stp, &out));
        break;
    }
    case 2: CALL_OUT(d, cg_randint((int64_t)rd_mod(r, 5) - 2, (int64_t)rd_mod(r, 5),
                                   rd_shape(r, shape), shape, &out)); break;
    case 3: CALL_OUT(d, cg_randperm((int64_t)rd_mod(r, 10) - 1, &out)); break;
    case 4: case 5: { /* binary, broadcasting */
        switch (rd_mod(r, 13)) {
        case 0: CALL_OUT(d, cg_add(A, B, &out)); break;
        case 1: CALL_OUT(d, cg_sub(A, B, &out)); break;
        case 2: CALL_OUT(d, cg_mul(A, B, &out)); break;
        case 3: CALL_OUT(d, cg_div(A, B, &out)); break;
        case 4: CALL_OUT(d, cg_pow(A, B, &out)); break;
        case 5: CALL_OUT(d, cg_minimum(A, B, &out)); break;
        case 6: CALL_OUT(d, cg_maximum(A, B, &out)); break;
        case 7: CALL_OUT(d, cg_eq(A, B, &out)); break;
        case 8: CALL_OUT(d, cg_ne(A, B, &out)); break;
        case 9: CALL_OUT(d, cg_lt(A, B, &out)); break;
        case 10: CALL_OUT(d, cg_ge(A, B, &out)); break;
        case 11: CALL_OUT(d, cg_where(slot[rd_slot(r)], A, B, &out)); break;
        default: CALL_OUT(d, cg_gt(A, B, &out)); break;
        }
        break;
    }
    case 6: {
        double s = rd_double(r);
        switch (rd_mod(r, 3)) {
        case 0: CALL_OUT(d, cg_add_scalar(A, s, &out)); break;
        case 1: CALL_OUT(d, cg_mul_scalar(A, s, &out)); break;
        default: CALL_OUT(d, cg_pow_scalar(A, s, &out)); break;
        }
        break;
    }
    case 7: case 8: { /* unary */
        switch (rd_mod(r, 20)) {
        case 0: CALL_OUT(d, cg_neg(A, &out)); break;
        case 1: CALL_OUT(d, cg_exp(A, &out)); break;
        case 2: CALL_OUT(d, cg_log(A, &out)); break;
        case 3: CALL_OUT(d, cg_sqrt(A, &out)); break;
        case 4: CALL_OUT(d, cg_abs(A, &out)); break;
        case 5: CALL_OUT(d, cg_sign(A, &out)); break;
        case 6: CALL_OUT(d, cg_round(A, &out)); break;
        case 7: CALL_OUT(d, cg_floor(A, &out)); break;
        case 8: CALL_OUT(d, cg_ceil(A, &out)); break;
        case 9: CALL_OUT(d, cg_relu(A, &out)); break;
        case 10: CALL_OUT(d, cg_leaky_relu(A, rd_double(r), &out)); break;
        case 11: CALL_OUT(d, cg_elu(A, rd_double(r), &out)); break;
        case 12: CALL_OUT(d, cg_gelu(A, (int)rd_mod(r, 3), &out)); break;
        case 13: CALL_OUT(d, cg_sigmoid(A, &out)); break;
        case 14: CALL_OUT(d, cg_tanh(A, &out)); break;
        case 15: CALL_OUT(d, cg_softplus(A, rd_double(r), rd_double(r), &out)); break;
        case 16: CALL_OUT(d, cg_clamp(A, rd_double(r), rd_double(r), &out)); break;
        case 17: CALL_OUT(d, cg_detach(A, &out)); break;
        case 18: CALL_OUT(d, cg_clone(A, &out)); break;
        default: CALL_OUT(d, cg_contiguous(A, &out)); break;
        }
        break;
    }
    case 9: case 10: { /* reductions */
        int keep = (int)(rd(r) & 1), nd2 = (int)rd_mod(r, 4);
        for (i = 0; i < nd2; ++i) dims[i] = rd_dim(r);
        switch (rd_mod(r, 12)) {
        case 0: CALL_OUT(d, cg_sum(A, nd2 ? dims : NULL, nd2, keep, &out)); break;
        case 1: CALL_OUT(d, cg_mean(A, nd2 ? dims : NULL, nd2, keep, &out)); break;
        case 2: CALL_OUT(d, cg_var(A, nd2 ? dims : NULL, nd2, (double)rd_mod(r, 3), keep, &out)); break;
        case 3: CALL_OUT(d, cg_max(A, nd2 ? dims : NULL, nd2, keep, &out)); break;
        case 4: CALL_OUT(d, cg_min(A, nd2 ? dims : NULL, nd2, keep, &out)); break;
        case 5: CALL_OUT(d, cg_argmax(A, rd_dim(r), keep, (int)(rd(r) & 1), &out)); break;
        case 6: CALL_OUT(d, cg_argmin(A, rd_dim(r), keep, (int)(rd(r) & 1), &out)); break;
        case 7: CALL_OUT(d, cg_logsumexp(A, nd2 ? dims : NULL, nd2, keep, &out)); break;
        case 8: CALL_OUT(d, cg_softmax(A, rd_dim(r), &out)); break;
        case 9: CALL_OUT(d, cg_log_softmax(A, rd_dim(r), &out)); break;
        case 10: nd = rd_shape(r, shape); CALL_OUT(d, cg_sum_to_shape(A, nd, shape, &out)); break;
        default: CALL_OUT(d, cg_sum(A, dims, -1, keep, &out)); break; /* negative count */
        }
        break;
    }
    case 11: case 12: { /* shape ops */
        switch (rd_mod(r, 12)) {
        case 0:
            nd = rd_shape(r, shape);
            if (nd && rd(r) & 1) shape[rd_mod(r, (unsigned)nd)] = -1;
            CALL_OUT(d, cg_reshape(A, nd, shape, &out));
            break;
        case 1: {
            int n = A ? cg_tensor_ndim(A) : 0;
            for (i = 0; i < n; ++i) dims[i] = (rd(r) & 7) == 0 ? rd_dim(r) : (n - 1 - i);
            CALL_OUT(d, cg_permute(A, dims, &out));
            break;
        }
        case 2: CALL_OUT(d, cg_transpose(A, rd_dim(r), rd_dim(r), &out)); break;
        case 3:
            nd = rd_shape(r, shape);
            for (i = 0; i < nd; ++i) if (rd(r) & 1) shape[i] = -1;
            CALL_OUT(d, cg_expand(A, nd, shape, &out));
            break;
        case 4: CALL_OUT(d, cg_squeeze(A, rd_dim(r), &out)); break;
        case 5: CALL_OUT(d, cg_squeeze_all(A, &out)); break;
        case 6: CALL_OUT(d, cg_unsqueeze(A, rd_dim(r), &out)); break;
        case 7: CALL_OUT(d, cg_slice(A, rd_dim(r), (int64_t)rd_dim(r), (int64_t)rd_dim(r),
                                     (int64_t)rd_mod(r, 4) - 1, &out)); break;
        case 8: CALL_OUT(d, cg_select(A, rd_dim(r), (int64_t)rd_dim(r), &out)); break;
        case 9: case 10: {
            cg_tensor *list[4];
            int n = (int)rd_mod(r, 5) - (rd(r) == 0); /* -1..4 */
            for (i = 0; i < n && i < 4; ++i) list[i] = slot[rd_slot(r)];
            if (rd(r) & 1) CALL_OUT(d, cg_cat(n, list, rd_dim(r), &out));
            else CALL_OUT(d, cg_stack(n, list, rd_dim(r), &out));
            break;
        }
        default: CALL_OUT(d, cg_to_dtype(A, rd_dtype(r), &out)); break;
        }
        break;
    }
    case 13: case 14: { /* indexing */
        cg_tensor *idx = POISON;
        cg_status st;
        nd = rd_shape(r, shape);
        cg_clear_error();
        st = make_index(r, nd, shape, &idx);
        check_contract("make_index", st, idx);
        switch (rd_mod(r, 7)) {
        case 0: CALL_OUT(d, cg_index_select(A, rd_dim(r), idx, &out)); break;
        case 1: CALL_OUT(d, cg_index_add(A, rd_dim(r), idx, B, &out)); break;
        case 2: CALL_OUT(d, cg_gather(A, rd_dim(r), idx, &out)); break;
        case 3: CALL_OUT(d, cg_scatter_add(A, rd_dim(r), idx, B, &out)); break;
        case 4: CALL_OUT(d, cg_embedding(A, idx, &out)); break;
        case 5: CALL_OUT(d, cg_nonzero_flat(A, &out)); break;
        default: CALL_OUT(d, cg_index_select(A, rd_dim(r), B, &out)); break; /* any tensor */
        }
        cg_tensor_free(idx);
        break;
    }
    case 15: CALL_OUT(d, cg_matmul(A, B, &out)); break;
    case 16: { /* conv / pooling on whatever shapes the slots hold */
        int64_t st2[2], pad[2], dil[2], k2[2];
        st2[0] = (int64_t)rd_mod(r, 3), st2[1] = (int64_t)rd_mod(r, 3);
        pad[0] = (int64_t)rd_mod(r, 3) - (rd(r) == 7), pad[1] = (int64_t)rd_mod(r, 2);
        dil[0] = 1 + (int64_t)rd_mod(r, 2) - (rd(r) == 9), dil[1] = 1;
        k2[0] = (int64_t)rd_mod(r, 4), k2[1] = 1 + (int64_t)rd_mod(r, 3);
        switch (rd_mod(r, 4)) {
        case 0: CALL_OUT(d, cg_conv2d(A, B, (rd(r) & 1) ? slot[rd_slot(r)] : NULL, st2, pad, dil,
                                      (int64_t)rd_mod(r, 3), &out)); break;
        case 1: CALL_OUT(d, cg_max_pool2d(A, k2, st2, pad, &out)); break;
        case 2: CALL_OUT(d, cg_avg_pool2d(A, k2, st2, pad, (int)(rd(r) & 1), &out)); break;
        default: CALL_OUT(d, cg_dropout(A, rd_double(r), (int)(rd(r) & 1), &out)); break;
        }
        break;
    }
    case 17: { /* a 4-D tensor for conv / pool */
        nd = 4;
        for (i = 0; i < 4; ++i) shape[i] = 1 + (int64_t)rd_mod(r, 4);
        CALL_OUT(d, cg_randn(rd(r) & 1 ? CG_FLOAT64 : CG_FLOAT32, nd, shape, &out));
        if (rd(r) & 1) set_requires_grad(slot[d], 1);
        break;
    }
    case 18: case 19: { /* in-place, with grad mode as the input says */
        int prev = cg_set_grad_enabled((int)(rd(r) & 1));
        switch (rd_mod(r, 7)) {
        case 0: CALL(cg_add_(A, B, rd_double(r))); break;
        case 1: CALL(cg_mul_(A, B)); break;
        case 2: CALL(cg_add_scalar_(A, rd_double(r))); break;
        case 3: CALL(cg_mul_scalar_(A, rd_double(r))); break;
        case 4: CALL(cg_zero_(A)); break;
        case 5: CALL(cg_fill_(A, rd_double(r))); break;
        default: CALL(cg_copy_(A, B)); break;
        }
        cg_set_grad_enabled(prev);
        break;
    }
    case 20: case 21: case 22: { /* backward */
        cg_tensor *root = A;
        int retain = (int)(rd(r) & 1), create = (int)(rd(r) & 1), twice = (int)(rd(r) & 1);
        if (B) cg_tensor_retain(B); /* slot b may be d, overwritten below */
        if (rd(r) & 1) {
            CALL_OUT(d, cg_sum(A, NULL, 0, 0, &out));
            root = slot[d];
        }
        if (root) cg_tensor_retain(root);
        CALL(cg_backward(root, (rd(r) & 3) == 0 ? B : NULL, retain, create));
        if (twice) CALL(cg_backward(root, NULL, (int)(rd(r) & 1), 0));
        cg_tensor_free(root);
        cg_tensor_free(B);
        break;
    }
    case 23: { /* cg_grad into slot d */
        cg_tensor *outs[2] = {A, slot[rd_slot(r)]}, *ins[3], *grads[3] = {POISON, POISON, POISON};
        int n_out = 1 + (int)(rd(r) & 1), n_in = (int)rd_mod(r, 4), k;
        cg_status st;
        for (i = 0; i < n_in; ++i) ins[i] = slot[rd_slot(r)];
        for (k = 0; k < n_out; ++k) if (outs[k]) cg_tensor_retain(outs[k]);
        for (i = 0; i < n_in; ++i) if (ins[i]) cg_tensor_retain(ins[i]);
        cg_clear_error();
        st = cg_grad(n_out, outs, NULL, n_in, ins, (int)(rd(r) & 1), (int)(rd(r) & 1),
                     (int)(rd(r) & 1), grads);
        check_status("cg_grad", st);
        for (i = 0; i < n_in; ++i) {
            if (grads[i] == POISON) {
                if (st == CG_OK) fail_contract("grads not written", "cg_grad");
                continue; /* argument check failed before any output was touched */
            }
            if (st != CG_OK && grads[i]) fail_contract("failed but left a gradient", "cg_grad");
            if (st == CG_OK && grads[i]) check_out("cg_grad", st, grads[i], (d + i) % N_SLOTS);
        }
        for (k = 0; k < n_out; ++k) cg_tensor_free(outs[k]);
        for (i = 0; i < n_in; ++i) cg_tensor_free(ins[i]);
        break;
    }
    case 24: { /* custom op */
        cg_tensor *y = POISON;
        int fails = (int)(rd(r) & 1), prev;
        cg_status st;
        if (A) cg_tensor_retain(A); /* slot a may be d, overwritten below */
        if (B) cg_tensor_retain(B);
        prev = cg_set_grad_enabled(0);
        cg_clear_error();
        st = cg_mul_scalar(A, 3.0, &y);
        cg_set_grad_enabled(prev);
        check_out("custom forward", st, y, d);
        if (st == CG_OK) {
            cg_tensor *ins[2] = {A, B}, *outp = slot[d];
            cg_tensor_retain(A); /* the entry's context */
            CALL(cg_record_custom(rd(r) & 1 ? "triple" : NULL, 1 + (int)rd_mod(r, 2) - (rd(r) == 3),
                                  ins, 1, &outp, fails ? failing_backward : triple_backward, A,
                                  free_tensor_ctx));
        }
        cg_tensor_free(B);
        cg_tensor_free(A);
        break;
    }
    case 25: { /* hooks */
        int64_t h = -1;
        cg_status st;
        cg_clear_error();
        st = cg_tensor_register_hook(A, clamp_hook, NULL, NULL, &h);
        check_status("register_hook", st);
        if (st == CG_OK && (rd(r) & 1)) CALL(cg_tensor_remove_hook(A, h));
        if (rd(r) & 1) CALL(cg_tensor_remove_hook(A, (int64_t)rd(r)));
        break;
    }
    case 26: { /* .grad juggling */
        if (A && (rd(r) & 1)) {
            cg_tensor *g = cg_tensor_grad(A);
            if (g) {
                cg_tensor_retain(g);
                cg_tensor_free(slot[d]);
                slot[d] = g;
            }
        } else {
            cg_tensor *g = rd(r) & 1 ? B : NULL;
            cg_status st;
            cg_clear_error();
            st = cg_tensor_set_grad(A, g);
            check_status("cg_tensor_set_grad", st);
            /* A .grad whose graph reaches A is a cycle the program made;
             * remember A so the end of the input clears it. */
            if (st == CG_OK && g && n_leaves < MAX_LEAVES) {
                cg_tensor_retain(A);
                leaves[n_leaves++] = A;
            }
        }
        break;
    }
    case 27: set_requires_grad(A, (int)(rd(r) & 1)); break;
    case 28: cg_set_grad_enabled(!cg_is_grad_enabled()); break;
    case 29: cg_tensor_free(slot[a]); slot[a] = NULL; break;
    case 30: { /* inspection and copy-out */
        double v;
        unsigned char buf[512];
        if (!A) break;
        CALL(cg_tensor_item(A, &v));
        CALL(cg_tensor_copy_to(A, buf, (size_t)cg_tensor_numel(A) * cg_dtype_size(cg_tensor_dtype(A)) > sizeof buf
                                           ? sizeof buf : (size_t)cg_tensor_numel(A) * cg_dtype_size(cg_tensor_dtype(A))));
        (void)cg_tensor_grad_fn_name(A);
        (void)cg_tensor_version(A);
        (void)cg_tensor_is_contiguous(A);
        break;
    }
    case 31: { /* from_blob over a static buffer, with odd strides */
        static double blob[64];
        int64_t strides[CG_MAX_DIMS];
        nd = rd_shape(r, shape);
        for (i = 0; i < nd; ++i) strides[i] = (int64_t)rd_mod(r, 3); /* 0, 1, 2 */
        for (i = 0; i < 64; ++i) blob[i] = (double)i;
        /* Keep the last element inside the buffer (an overrun here would be
         * the harness's fault, not the library's). */
        {
            int use_strides = (int)(rd(r) & 1);
            int64_t extent = 0, numel = 1;
            for (i = 0; i < nd; ++i) {
                if (shape[i] < 0) continue; /* refused by the library */
                numel *= shape[i];
                if (shape[i] > 0) extent += (shape[i] - 1) * strides[i];
            }
            if (use_strides ? extent >= 64 : numel > 64) break;
            CALL_OUT(d, cg_from_blob(CG_FLOAT64, nd, shape, use_strides ? strides : NULL, blob,
                                     NULL, NULL, &out));
        }
        break;
    }
    case 32: { /* gradcheck of tanh on a float64 tensor */
        if (A && cg_tensor_dtype(A) == CG_FLOAT64 && cg_tensor_numel(A) <= 8)
            CALL(cg_gradcheck(sum_fn, NULL, 1, &A, 1e-6, 1e-5, 1e-3));
        else
            CALL(cg_gradcheck(sum_fn, NULL, (int)rd_mod(r, 2), &A, 1e-6, 1e-5, 1e-3));
        break;
    }
    case 33: reset_state(); break;
    default: /* a cheap differentiable op most of the time keeps graphs growing */
        CALL_OUT(d, cg_mul(A, A, &out));
        break;
    }
}

/* Back to the start state: no tensors, no leaves, grad mode on. */
static void reset_state(void) {
    int i;
    for (i = 0; i < n_leaves; ++i) {
        if (cg_tensor_set_grad(leaves[i], NULL) != CG_OK) fail_contract("clearing .grad failed", "reset");
        cg_tensor_free(leaves[i]);
        leaves[i] = NULL;
    }
    n_leaves = 0;
    for (i = 0; i < N_SLOTS; ++i) {
        cg_tensor_free(slot[i]);
        slot[i] = NULL;
    }
    cg_set_grad_enabled(1);
}

/* One program: steps until the bytes run out, then everything is freed. */
static void run_program(const uint8_t *data, size_t size) {
    reader r;
    int steps, grad_mode = cg_is_grad_enabled();
    r.p = data;
    r.n = size;
    cg_manual_seed((uint64_t)size * 2654435761u + (size ? data[0] : 0));
    for (steps = 0; steps < MAX_STEPS && r.n > 0; ++steps) step(&r);
    reset_state();
    cg_set_grad_enabled(grad_mode);
}

/* An input starting with BUNDLE_MAGIC holds several programs, each framed
 * by a 2-byte little-endian length, run one after another exactly as if
 * each were an input of its own (tests/fuzz/bundle_corpus.py writes them:
 * the regression corpus packs a merged corpus into a few files). */
#define BUNDLE_MAGIC "CGFB"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 4 && memcmp(data, BUNDLE_MAGIC, 4) == 0) {
        size_t at = 4;
        while (at + 2 <= size) {
            size_t len = (size_t)data[at] | (size_t)data[at + 1] << 8;
            at += 2;
            if (len > size - at) len = size - at;
            run_program(data + at, len);
            at += len;
        }
        return 0;
    }
    run_program(data, size);
    return 0;
}
