/* bench_c_custom.c -- does a custom op registered from C cost more than a
 * built-in op? A chain of N ops y = y * s on a small float32 tensor,
 * forward and backward, built-in cg_mul_scalar against a "scale" op whose
 * forward and backward are written with the same call: recorded with
 * cg_record_custom, and registered (cg_op_register) then called by name
 * (cg_op_call) and through a handle (cg_op_call_handle). Prints
 * microseconds per op (median of repetitions).
 *
 *     make bench-c        (builds build/bench/bench_c_custom and runs it) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgrad.h"

#define N_OPS 20000
#define REPS 9
#define SCALE 1.00001

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static cg_status scale_backward(void *ctx, int n_out, cg_tensor *const *gout, int n_in,
                                const int *needs, cg_tensor **gin) {
    (void)ctx; (void)n_out; (void)n_in; (void)needs;
    return cg_mul_scalar(gout[0], SCALE, &gin[0]);
}

static cg_status custom_scale(cg_tensor *x, cg_tensor **out) {
    int prev = cg_set_grad_enabled(0);
    cg_status st = cg_mul_scalar(x, SCALE, out);
    cg_set_grad_enabled(prev);
    if (st) return st;
    st = cg_record_custom("scale", 1, &x, 1, out, scale_backward, NULL, NULL);
    if (st) {
        cg_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

static cg_status reg_fwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor **out) {
    (void)ctx; (void)n; (void)np;
    return cg_mul_scalar(x[0], p[0], out);
}

static cg_status reg_bwd(void *ctx, int n, cg_tensor *const *x, int np, const double *p, cg_tensor *y,
                         cg_tensor *g, const int *needs, cg_tensor **gx) {
    (void)ctx; (void)n; (void)x; (void)np; (void)y; (void)needs;
    return cg_mul_scalar(g, p[0], &gx[0]);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static cg_op_handle *bench_handle;

/* Runs the chain once; *fwd and *bwd in seconds. 0 on success. custom: 0
 * built-in, 1 cg_record_custom, 2 the op registry by name (cg_op_call), 3
 * by handle (cg_op_call_handle). */
static int chain(int custom, int64_t numel, double *fwd, double *bwd) {
    cg_tensor *x = NULL, *y = NULL, *s = NULL;
    if (cg_ones(CG_FLOAT32, 1, &numel, &x) || cg_tensor_set_requires_grad(x, 1)) return 1;
    cg_tensor_retain(x);
    y = x;
    double t0 = now();
    for (int i = 0; i < N_OPS; ++i) {
        cg_tensor *z = NULL;
        double s = SCALE;
        cg_status st = custom == 3   ? cg_op_call_handle(bench_handle, 1, &y, 1, &s, &z)
                       : custom == 2 ? cg_op_call("bench_scale", 1, &y, 1, &s, &z)
                       : custom == 1 ? custom_scale(y, &z)
                                     : cg_mul_scalar(y, SCALE, &z);
        cg_tensor_free(y);
        if (st) return 1;
        y = z;
    }
    if (cg_sum(y, NULL, 0, 0, &s)) return 1;
    double t1 = now();
    if (cg_backward(s, NULL, 0, 0)) return 1;
    double t2 = now();
    *fwd = t1 - t0;
    *bwd = t2 - t1;
    cg_tensor_free(s);
    cg_tensor_free(y);
    cg_tensor_free(x);
    return 0;
}

int main(void) {
    int64_t sizes[2] = {1, 256};
    static const char *const names[4] = {"built-in cg_mul_scalar", "custom op (cg_record_custom)",
                                         "registered op by name (cg_op_call)",
                                         "registered op by handle (cg_op_call_handle)"};
    /* scale's backward reads neither its input nor its output: say so, as a
     * built-in mul_scalar saves nothing either. */
    if (cg_op_register("bench_scale", 1, 1, reg_fwd, reg_bwd, NULL, NULL) ||
        cg_op_set_saves("bench_scale", 0, 0) || cg_op_find("bench_scale", &bench_handle)) {
        fprintf(stderr, "register failed: %s\n", cg_last_error());
        return 1;
    }
    printf("| op chain (%d ops), float32 | elements | forward us/op | backward us/op |\n", N_OPS);
    printf("|---|---|---|---|\n");
    for (int k = 0; k < 2; ++k)
        for (int custom = 0; custom < 4; ++custom) {
            double f[REPS], b[REPS];
            for (int r = 0; r < REPS; ++r)
                if (chain(custom, sizes[k], &f[r], &b[r])) {
                    fprintf(stderr, "bench failed: %s\n", cg_last_error());
                    return 1;
                }
            qsort(f, REPS, sizeof f[0], cmp);
            qsort(b, REPS, sizeof b[0], cmp);
            printf("| %s | %lld | %.3f | %.3f |\n",
                   names[custom],
                   (long long)sizes[k], f[REPS / 2] / N_OPS * 1e6, b[REPS / 2] / N_OPS * 1e6);
        }
    cg_op_handle_free(bench_handle);
    return cg_op_unregister("bench_scale") != CG_OK;
}
