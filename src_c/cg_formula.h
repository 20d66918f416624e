/* cg_formula.h -- internal: the "arena" used to write longer backward
 * formulas as nested expressions of public ops.
 *
 * A backward formula such as g * (1 - 2y) makes several temporary tensors,
 * and any step may fail. Writing it out with a status check and a free per
 * temporary is long and easy to get wrong, so the formula's steps go through
 * an arena instead: each step's result is kept in the arena, a failed step
 * records its status there and every later step is skipped (it returns
 * NULL, and the ops are never called with it), and arena_done() frees
 * everything the arena holds on every path, success or failure.
 *
 *     arena A = {{0}, 0, CG_OK};
 *     cg_tensor *u = AS(&A, cg_add_scalar, AS(&A, cg_mul_scalar, y, -2.0), 1.0);
 *     cg_tensor *res = A2(&A, cg_mul, g, u);
 *     return arena_done(&A, res, &gin[0]);  // new ref to res, temporaries freed
 *
 * Only for the op files that write such formulas (ops_binary.c,
 * ops_unary.c); include it after cg_internal.h. Everything here is static
 * inline, so each includer gets its own inlined copy. */
#ifndef CG_FORMULA_H
#define CG_FORMULA_H

#include "cg_internal.h"

/* Signatures of the public ops a formula step can call. */
typedef cg_status (*bin_api)(cg_tensor *, cg_tensor *, cg_tensor **);
typedef cg_status (*un_api)(cg_tensor *, cg_tensor **);
typedef cg_status (*scal_api)(cg_tensor *, double, cg_tensor **);

/* Most temporaries one formula may hold; more is reported as an error. */
#define ARENA_MAX 32
typedef struct arena {
    cg_tensor *t[ARENA_MAX];
    int n;
    cg_status st; /* first failure; CG_OK while every step succeeded */
} arena;

/* Takes the result r of a step that returned st: kept (and returned) on
 * success, else the failure is recorded and NULL returned. */
static inline cg_tensor *keep(arena *A, cg_status st, cg_tensor *r) {
    if (st) {
        A->st = st;
        return NULL;
    }
    if (A->n == ARENA_MAX) {
        cg_tensor_free(r);
        A->st = cg__err(CG_ERR_UNSUPPORTED, "backward formula needs too many temporaries");
        return NULL;
    }
    A->t[A->n++] = r;
    return r;
}
/* One step each: f(x, y), f(x), f(x, s), where(c, x, y). */
static inline cg_tensor *A2(arena *A, bin_api f, cg_tensor *x, cg_tensor *y) {
    cg_tensor *r = NULL;
    if (A->st) return NULL;
    cg_status st = f(x, y, &r); /* before keep() reads r */
    return keep(A, st, r);
}
static inline cg_tensor *A1(arena *A, un_api f, cg_tensor *x) {
    cg_tensor *r = NULL;
    if (A->st) return NULL;
    cg_status st = f(x, &r); /* before keep() reads r */
    return keep(A, st, r);
}
static inline cg_tensor *AS(arena *A, scal_api f, cg_tensor *x, double s) {
    cg_tensor *r = NULL;
    if (A->st) return NULL;
    cg_status st = f(x, s, &r); /* before keep() reads r */
    return keep(A, st, r);
}
static inline cg_tensor *AW(arena *A, cg_tensor *c, cg_tensor *x, cg_tensor *y) {
    cg_tensor *r = NULL;
    if (A->st) return NULL;
    cg_status st = cg_where(c, x, y, &r); /* before keep() reads r */
    return keep(A, st, r);
}
/* *out (when out and no step failed) = new ref to r; then every kept
 * temporary is freed. Returns the arena's status. */
static inline cg_status arena_done(arena *A, cg_tensor *r, cg_tensor **out) {
    if (!A->st && out) {
        cg_tensor_retain(r);
        *out = r;
    }
    for (int i = 0; i < A->n; ++i) cg_tensor_free(A->t[i]);
    A->n = 0;
    return A->st;
}

#endif /* CG_FORMULA_H */
