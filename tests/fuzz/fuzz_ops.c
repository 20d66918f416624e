/* fuzz_ops.c -- libFuzzer harness for the public C API.
 *
 * The input bytes are a program: each step reads an opcode and its
 * arguments and applies one API call to a small pool of tensor slots
 * (creation with random small shapes and dtypes, 0-size included;
 * elementwise ops with broadcasting and mismatched shapes; reductions with
 * valid, negative, repeated and out-of-range dims; shape and index ops;
 * matmul, conv, pooling; in-place ops; custom ops (one and two outputs,
 * failing or wrong-shaped backwards) and hooks; backward and cg_grad with
 * retain_graph / create_graph, sometimes twice; and the training calls: the
 * optimizer object (SGD / Adam / AdamW) and the fused update kernels with
 * options from the input, clipping by norm / value / AGC, the cg_lr_*
 * schedules, cg_tensor_stats, anomaly mode and its hook, entry observers). An empty slot
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

/* ------------------------------------------------ training-side state */
#define POISON_OPT ((cg_optimizer *)(uintptr_t)0x10)
static cg_optimizer *fz_opt;         /* the current optimizer object, or NULL */
#define MAX_OBSERVERS 4
static int64_t observers[MAX_OBSERVERS]; /* pushed entry-observer handles, innermost last */
static int n_observers;
static int anomaly_hook_fails;           /* what the installed anomaly hook returns */

/* Small int64, mostly in -1..5, sometimes extreme. */
static int64_t rd_i64(reader *r) {
    static const int64_t wild[] = {INT64_MAX, INT64_MIN, (int64_t)1 << 40, -1000, 1000000, 0};
    unsigned b = rd(r);
    if (b >= 250) return wild[b - 250];
    return (int64_t)(b % 7) - 1;
}
/* Mostly the given sane value, sometimes one of rd_double's. */
static double rd_or(reader *r, double sane) { return (rd(r) & 3) ? sane : rd_double(r); }

static cg_sgd_options rd_sgd_options(reader *r) {
    cg_sgd_options o = cg_sgd_default_options();
    o.lr = rd_or(r, 0.1);
    o.momentum = rd_or(r, (rd(r) & 1) ? 0.9 : 0.0);
    o.dampening = rd_or(r, 0.0);
    o.weight_decay = rd_or(r, 0.0);
    o.nesterov = (int)(rd(r) & 1);
    o.maximize = (int)(rd(r) & 1);
    return o;
}
static cg_adam_options rd_adam_options(reader *r) {
    cg_adam_options o = (rd(r) & 1) ? cg_adamw_default_options() : cg_adam_default_options();
    o.lr = rd_or(r, 1e-2);
    o.beta1 = rd_or(r, 0.9);
    o.beta2 = rd_or(r, 0.999);
    o.eps = rd_or(r, 1e-8);
    o.weight_decay = rd_or(r, o.weight_decay);
    o.decoupled_weight_decay = (int)(rd(r) & 1);
    o.amsgrad = (int)(rd(r) & 1);
    o.maximize = (int)(rd(r) & 1);
    return o;
}

/* A state buffer for the fused updates: zeros shaped like A (the usual,
 * valid case) or whatever slot the input names. Returns a new reference
 * or NULL. */
static cg_tensor *rd_buffer(reader *r, cg_tensor *A) {
    cg_tensor *t = NULL;
    if (A && (rd(r) & 3)) {
        cg_status st = cg_zeros(cg_tensor_dtype(A), cg_tensor_ndim(A), cg_tensor_shape(A), &t);
        check_contract("cg_zeros (buffer)", st, st == CG_OK ? t : NULL);
        return st == CG_OK ? t : NULL;
    }
    t = slot[rd_slot(r)];
    if (t) cg_tensor_retain(t);
    return t;
}

static cg_status observer_fn(void *ctx, const char *op_name, uint64_t seq, const char *location,
                             int n_outputs, cg_tensor *const *grad_outputs) {
    int i;
    (void)seq, (void)location;
    if (!op_name) fail_contract("observer got a NULL op name", "entry observer");
    for (i = 0; i < n_outputs; ++i)
        if (!grad_outputs[i]) fail_contract("observer got a NULL gradient", "entry observer");
    if (*(const int *)ctx) return cg_set_error(CG_ERR_CALLBACK, "fuzz: observer fails on purpose");
    return CG_OK;
}

static cg_status anomaly_fn(void *ctx, const char *message) {
    (void)ctx;
    if (!message) fail_contract("anomaly hook got a NULL message", "anomaly hook");
    if (anomaly_hook_fails) return cg_set_error(CG_ERR_CALLBACK, "fuzz: anomaly hook fails");
    return CG_OK;
}

/* -------- custom op with two outputs: (2x, -x); the backward is
 * 2*g0 - g1, or, on purpose, a gradient of the wrong shape. */
static cg_status two_out_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                  const int *needs, cg_tensor **gin) {
    cg_tensor *t = NULL;
    cg_status st;
    if (n_out != 2 || n_in < 1 || !needs[0]) return CG_OK;
    if (*(const int *)ctx) return cg_sum(gout[0], NULL, 0, 0, &gin[0]); /* wrong shape */
    st = cg_mul_scalar(gout[0], 2.0, &t);
    if (st == CG_OK) st = cg_sub(t, gout[1], &gin[0]);
    cg_tensor_free(t);
    return st;
}

/* The schedules, each with options drawn from the input; the contract:
 * a status in range, a message on failure and *lr untouched then. */
static void fuzz_schedule(reader *r) {
    const double sentinel = 12345.0;
    double lr = sentinel, base = rd_or(r, 0.1), extra1 = 0, extra2 = 0;
    double *out = (rd(r) == 0) ? NULL : &lr;
    int64_t step = rd_i64(r), ms[4];
    int use_null = rd(r) == 1, which = (int)rd_mod(r, 14), k;
    cg_status st;
    cg_clear_error();
    switch (which) {
    case 0: { cg_lr_step_options o; o.step_size = rd_i64(r); o.gamma = rd_or(r, 0.5);
              st = cg_lr_step(use_null ? NULL : &o, base, step, out); break; }
    case 1: { cg_lr_multistep_options o; int n = (int)rd_mod(r, 6) - 1;
              for (k = 0; k < 4; ++k) ms[k] = rd_i64(r);
              o.milestones = (rd(r) == 2) ? NULL : ms; o.n_milestones = n > 4 ? 4 : n;
              o.gamma = rd_or(r, 0.1);
              st = cg_lr_multistep(use_null ? NULL : &o, base, step, out); break; }
    case 2: { cg_lr_constant_options o; o.factor = rd_or(r, 0.5); o.total_iters = rd_i64(r);
              st = cg_lr_constant(use_null ? NULL : &o, base, step, out); break; }
    case 3: { cg_lr_linear_options o; o.start_factor = rd_or(r, 0.5); o.end_factor = rd_or(r, 1.0);
              o.total_iters = rd_i64(r);
              st = cg_lr_linear(use_null ? NULL : &o, base, step, out); break; }
    case 4: { cg_lr_exponential_options o; o.gamma = rd_or(r, 0.9);
              st = cg_lr_exponential(use_null ? NULL : &o, base, step, out); break; }
    case 5: { cg_lr_cosine_options o; o.T_max = rd_i64(r); o.eta_min = rd_or(r, 0.0);
              st = cg_lr_cosine(use_null ? NULL : &o, base, step, out); break; }
    case 6: case 7: { cg_lr_cosine_warm_restarts_options o; o.T_0 = rd_i64(r); o.T_mult = rd_i64(r);
              o.eta_min = rd_or(r, 0.0);
              if (which == 6) st = cg_lr_cosine_warm_restarts(use_null ? NULL : &o, base, step, out);
              else st = cg_lr_cosine_warm_restarts_at(use_null ? NULL : &o, base,
                                                      rd_or(r, 2.5) + (double)rd_mod(r, 9), out,
                                                      (rd(r) & 1) ? &extra1 : NULL,
                                                      (rd(r) & 1) ? &extra2 : NULL);
              break; }
    case 8: case 9: { cg_lr_one_cycle_options o; o.total_steps = rd_i64(r); o.pct_start = rd_or(r, 0.3);
              o.anneal_strategy = (cg_anneal)rd_mod(r, 3); o.div_factor = rd_or(r, 25.0);
              o.final_div_factor = rd_or(r, 1e4); o.three_phase = (int)(rd(r) & 1);
              o.base_momentum = rd_or(r, 0.85); o.max_momentum = rd_or(r, 0.95);
              if (which == 8) st = cg_lr_one_cycle(use_null ? NULL : &o, base, step, out);
              else st = cg_lr_one_cycle_momentum(use_null ? NULL : &o, step, out);
              break; }
    case 10: { cg_lr_polynomial_options o; o.total_iters = rd_i64(r); o.power = rd_or(r, 1.0);
              st = cg_lr_polynomial(use_null ? NULL : &o, base, step, out); break; }
    default: { cg_lr_warmup_cosine_options o; o.warmup_steps = rd_i64(r); o.total_steps = rd_i64(r);
              o.warmup_start_factor = rd_or(r, 0.0); o.eta_min = rd_or(r, 0.0);
              st = cg_lr_warmup_cosine(use_null ? NULL : &o, base, step, out); break; }
    }
    check_status("cg_lr_*", st);
    if (st != CG_OK && lr != sentinel) fail_contract("failed but wrote lr", "cg_lr_*");
    if (st == CG_OK && (!out || use_null)) fail_contract("NULL options or lr accepted", "cg_lr_*");
}

/* The optimizer object: create (SGD / Adam / AdamW, options from the
 * input, params from the slots), or one of its calls. */
static void fuzz_optimizer(reader *r, int create) {
    int i;
    if (create) {
        cg_tensor *ps[3];
        cg_optimizer *o = POISON_OPT;
        cg_status st;
        int n = (int)rd_mod(r, 4) - (rd(r) == 0), kind = (int)rd_mod(r, 3);
        for (i = 0; i < 3; ++i) ps[i] = slot[rd_slot(r)];
        cg_clear_error();
        if (kind == 0) {
            cg_sgd_options so = rd_sgd_options(r);
            st = cg_optimizer_new_sgd(n, ps, (rd(r) == 0) ? NULL : &so, &o);
        } else {
            cg_adam_options ao = rd_adam_options(r);
            if (kind == 1) st = cg_optimizer_new_adam(n, ps, (rd(r) == 0) ? NULL : &ao, &o);
            else st = cg_optimizer_new_adamw(n, ps, (rd(r) & 1) ? NULL : &ao, &o);
        }
        check_status("cg_optimizer_new_*", st);
        if (o == POISON_OPT) fail_contract("optimizer output not written", "cg_optimizer_new_*");
        if ((st == CG_OK) != (o != NULL)) fail_contract("status and output disagree", "cg_optimizer_new_*");
        if (o) {
            cg_optimizer_free(fz_opt);
            fz_opt = o;
        }
        return;
    }
    switch (rd_mod(r, 7)) {
    case 0: case 1: CALL(cg_optimizer_step(fz_opt)); break;
    case 2: cg_optimizer_zero_grad(fz_opt); break;
    case 3: {
        double before = cg_optimizer_get_lr(fz_opt), lr = rd_double(r);
        cg_status st;
        cg_clear_error();
        st = cg_optimizer_set_lr(fz_opt, lr);
        check_status("cg_optimizer_set_lr", st);
        if (fz_opt && st == CG_OK && cg_optimizer_get_lr(fz_opt) != lr)
            fail_contract("lr not set", "cg_optimizer_set_lr");
        if (fz_opt && st != CG_OK && !(cg_optimizer_get_lr(fz_opt) == before))
            fail_contract("failed but changed lr", "cg_optimizer_set_lr");
        break;
    }
    case 4: {
        static const char *names[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq",
                                      "momentum_buffer", "bogus", NULL};
        cg_tensor *t = cg_optimizer_state(fz_opt, (int)rd_mod(r, 5) - 1, names[rd_mod(r, 6)]);
        if (t) {
            check_contract("cg_optimizer_state", CG_OK, t);
            if (rd(r) & 1) { /* keep it in a slot: it may outlive the optimizer */
                int k = rd_slot(r);
                cg_tensor_retain(t);
                cg_tensor_free(slot[k]);
                slot[k] = t;
            }
        }
        break;
    }
    case 5: (void)cg_optimizer_param_steps(fz_opt, (int)rd_mod(r, 5) - 1); break;
    default: /* a fresh one in its place, or none */
        cg_optimizer_free(fz_opt);
        fz_opt = NULL;
        break;
    }
}

/* Clipping by norm / value / AGC, total norm, over slots or their .grads. */
static void fuzz_clip(reader *r) {
    static const double norms[] = {2.0, 1.0, INFINITY, 0.5, 3.0};
    cg_tensor *ts[4], *ps[4];
    int n = (int)rd_mod(r, 5) - (rd(r) == 0), i;
    double norm_type = (rd(r) & 7) ? norms[rd_mod(r, 5)] : rd_double(r), tn = 0, coef = 0;
    int64_t c1 = 0, c2 = 0;
    for (i = 0; i < 4; ++i) {
        ps[i] = slot[rd_slot(r)];
        ts[i] = (ps[i] && (rd(r) & 3)) ? cg_tensor_grad(ps[i]) : ps[i];
    }
    cg_tensor *res = NULL;
    switch (rd_mod(r, 7)) {
    case 4:
        CALL(cg_clip_grad_norm_tensor(n, ts, rd_or(r, 1.0), norm_type, (rd(r) == 0) ? NULL : &res));
        cg_tensor_free(res);
        break;
    case 5:
        CALL(cg_clip_grad_value_tensor(n, ts, rd_or(r, 0.5), (rd(r) == 0) ? NULL : &res));
        cg_tensor_free(res);
        break;
    case 6:
        CALL(cg_clip_grad_agc_tensor(n, ps, ts, rd_or(r, 0.01), rd_or(r, 1e-3),
                                     (rd(r) == 0) ? NULL : &res, (rd(r) & 1) ? &c1 : NULL));
        cg_tensor_free(res);
        break;
    case 0: CALL(cg_clip_grad_norm(n, ts, rd_or(r, 1.0), norm_type, (int)(rd(r) & 1),
                                   (rd(r) & 1) ? &tn : NULL, (rd(r) & 1) ? &coef : NULL)); break;
    case 1: CALL(cg_clip_grad_value(n, ts, rd_or(r, 0.5), (rd(r) & 1) ? &c1 : NULL)); break;
    case 2: CALL(cg_total_norm(n, ts, norm_type, (rd(r) == 0) ? NULL : &tn)); break;
    default: CALL(cg_clip_grad_agc(n, ps, ts, rd_or(r, 0.01), rd_or(r, 1e-3),
                                   (rd(r) & 1) ? &c1 : NULL, (rd(r) & 1) ? &c2 : NULL)); break;
    }
}

/* The fused update kernels on slot a (param) and b or a fresh gradient. */
static void fuzz_update(reader *r, cg_tensor *A, cg_tensor *B) {
    cg_tensor *g = NULL, *b1 = NULL, *b2 = NULL, *b3 = NULL;
    int64_t stepn = rd_i64(r); /* 0 and negative steps included */
    if (A && !(rd(r) & 3)) {
        cg_status st = cg_randn(cg_tensor_dtype(A), cg_tensor_ndim(A), cg_tensor_shape(A), &g);
        if (st != CG_OK) g = NULL;
    } else if (B) {
        g = B;
        cg_tensor_retain(g);
    }
    b1 = rd_buffer(r, A);
    b2 = rd_buffer(r, A);
    b3 = (rd(r) & 1) ? rd_buffer(r, A) : NULL;
    /* the update norm out-parameter on every other step count: both paths
     * without reading another byte (the corpus keeps its meaning) */
    double usq_v = 0.0, *usq = (stepn & 1) ? &usq_v : NULL;
    switch (rd_mod(r, 4)) {
    case 0: { cg_sgd_options o = rd_sgd_options(r);
              CALL(cg_sgd_update(A, g, (rd(r) & 1) ? b1 : NULL, (int)(rd(r) & 1),
                                 (rd(r) == 0) ? NULL : &o, usq)); break; }
    case 1: { cg_adam_options o = rd_adam_options(r);
              CALL(cg_adam_update(A, g, b1, b2, b3, stepn, (rd(r) == 0) ? NULL : &o, usq)); break; }
    case 2: { cg_rmsprop_options o = cg_rmsprop_default_options();
              o.lr = rd_or(r, 1e-2); o.alpha = rd_or(r, 0.99); o.eps = rd_or(r, 1e-8);
              o.weight_decay = rd_or(r, 0.0); o.momentum = rd_or(r, (rd(r) & 1) ? 0.9 : 0.0);
              o.centered = (int)(rd(r) & 1); o.maximize = (int)(rd(r) & 1);
              CALL(cg_rmsprop_update(A, g, b1, (rd(r) & 1) ? b2 : NULL, (rd(r) & 1) ? b3 : NULL,
                                     (rd(r) == 0) ? NULL : &o, usq)); break; }
    default: { cg_adagrad_options o = cg_adagrad_default_options();
              o.lr = rd_or(r, 1e-2); o.lr_decay = rd_or(r, 0.0); o.weight_decay = rd_or(r, 0.0);
              o.eps = rd_or(r, 1e-10); o.initial_accumulator_value = rd_or(r, 0.0);
              o.maximize = (int)(rd(r) & 1);
              CALL(cg_adagrad_update(A, g, b1, stepn, (rd(r) == 0) ? NULL : &o, usq)); break; }
    }
    cg_tensor_free(b3);
    cg_tensor_free(b2);
    cg_tensor_free(b1);
    cg_tensor_free(g);
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
    if (trace) fprintf(stderr, "op %u  a=%d b=%d d=%d\n", op % 48, a, b, d);
    switch (op % 48) {
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
    case 34: fuzz_optimizer(r, 1); break;
    case 35: case 36: fuzz_optimizer(r, 0); break;
    case 37: fuzz_clip(r); break;
    case 38: fuzz_update(r, A, B); break;
    case 39: fuzz_schedule(r); break;
    case 40: { /* gradient statistics */
        cg_stats s;
        cg_status st;
        cg_clear_error();
        st = cg_tensor_stats(A, (rd(r) == 0) ? NULL : &s);
        check_status("cg_tensor_stats", st);
        if (st == CG_OK && (s.numel != cg_tensor_numel(A) || s.nonfinite < 0 ||
                            s.nonfinite > s.numel || !(s.max_abs >= 0) || !(s.sum_sq >= 0)))
            fail_contract("inconsistent statistics", "cg_tensor_stats");
        break;
    }
    case 41: /* anomaly mode */
        switch (rd_mod(r, 5)) {
        case 0: (void)cg_set_anomaly_mode(1); break;
        case 1: (void)cg_set_anomaly_mode(0); break;
        case 2:
            if (!cg_anomaly_report()) fail_contract("NULL report", "cg_anomaly_report");
            break;
        case 3:
            anomaly_hook_fails = (int)(rd(r) & 1);
            cg_set_anomaly_hook(anomaly_fn, NULL);
            break;
        default: cg_set_anomaly_hook(NULL, NULL); break;
        }
        break;
    case 42: { /* entry observers */
        unsigned sub = rd_mod(r, 4);
        if (sub == 0 && n_observers < MAX_OBSERVERS) {
            int *fails = (int *)malloc(sizeof *fails);
            int64_t h = -1;
            cg_status st;
            if (!fails) break;
            *fails = (rd(r) & 7) == 0;
            cg_clear_error();
            st = cg_entry_hook_push(rd(r) == 0 ? NULL : observer_fn, fails, free, &h);
            check_status("cg_entry_hook_push", st);
            if (st == CG_OK) observers[n_observers++] = h;
        } else if (sub == 1 && n_observers > 0) {
            CALL(cg_entry_hook_pop(observers[--n_observers]));
        } else if (sub == 2) { /* not the innermost: refused unless it happens to be */
            int64_t h = (int64_t)rd(r) - 2;
            cg_status st;
            cg_clear_error();
            st = cg_entry_hook_pop(h);
            check_status("cg_entry_hook_pop", st);
            if (st == CG_OK) {
                if (!n_observers || observers[n_observers - 1] != h)
                    fail_contract("popped a handle that is not the innermost", "cg_entry_hook_pop");
                --n_observers;
            }
        }
        break;
    }
    case 43: { /* custom op with two outputs, a malloc'd context */
        cg_tensor *y1 = POISON, *y2 = POISON;
        int *wrong = (int *)malloc(sizeof *wrong), prev;
        cg_status st;
        if (!wrong) break;
        *wrong = (rd(r) & 3) == 0;
        if (A) cg_tensor_retain(A);
        prev = cg_set_grad_enabled(0);
        cg_clear_error();
        st = cg_mul_scalar(A, 2.0, &y1);
        check_contract("two_out forward", st, y1);
        if (st == CG_OK) {
            cg_clear_error();
            st = cg_neg(A, &y2);
            check_contract("two_out forward", st, y2);
        } else {
            y2 = NULL;
        }
        cg_set_grad_enabled(prev);
        if (st == CG_OK) {
            cg_tensor *outs[2];
            outs[0] = y1, outs[1] = y2;
            CALL(cg_record_custom("two_out", 1, &A, 2, outs, two_out_backward, wrong, free));
            cg_tensor_free(slot[d]);
            slot[d] = y1;
            cg_tensor_free(slot[(d + 1) % N_SLOTS]);
            slot[(d + 1) % N_SLOTS] = y2;
        } else {
            cg_tensor_free(y1 == POISON ? NULL : y1);
            free(wrong);
        }
        cg_tensor_free(A);
        break;
    }
    case 44: { /* a float parameter with a gradient: what the optimizers want */
        cg_tensor *g = NULL;
        cg_dtype dt = (rd(r) & 1) ? CG_FLOAT64 : CG_FLOAT32;
        nd = rd_shape(r, shape);
        CALL_OUT(d, cg_randn(dt, nd, shape, &out));
        if (!slot[d] || cg_tensor_dtype(slot[d]) != dt) break;
        set_requires_grad(slot[d], 1);
        if (cg_randn(dt, nd, shape, &g) == CG_OK) {
            CALL(cg_tensor_set_grad(slot[d], g));
            cg_tensor_free(g);
        }
        break;
    }
    default: /* a cheap differentiable op most of the time keeps graphs growing */
        CALL_OUT(d, cg_mul(A, A, &out));
        break;
    }
}

/* Back to the start state: no tensors, no leaves, no optimizer, no
 * observers, anomaly mode off, grad mode on. */
static void reset_state(void) {
    int i;
    cg_optimizer_free(fz_opt);
    fz_opt = NULL;
    while (n_observers > 0)
        if (cg_entry_hook_pop(observers[--n_observers]) != CG_OK)
            fail_contract("popping an observer failed", "reset");
    (void)cg_set_anomaly_mode(0);
    cg_set_anomaly_hook(NULL, NULL);
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
