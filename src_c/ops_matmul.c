/*
 * ops_matmul.c -- cg_matmul with NumPy semantics, and cg_linear (x @ w^T + b
 * as one op, at the end of the file).
 *
 *   1-D @ 1-D      -> 0-d dot product
 *   1-D @ N-D      -> a is (1, k), the 1 is removed from the result
 *   N-D @ 1-D      -> b is (k, 1), the 1 is removed from the result
 *   N-D @ N-D      -> batch dims (all but the last two) broadcast
 *
 * Each matrix is handed to the GEMM in place when its last two dims are
 * row-contiguous or column-contiguous (a transposed view becomes a trans
 * flag, not a copy); other layouts are copied once. When b has no batch dims
 * and a's batch dims are contiguous over its rows, the whole batch is one
 * GEMM with m * batch rows (the usual (N, T, C) @ (C, D) Linear case).
 *
 * On a device the backend's "matmul" kernel (cuBLAS through xp.matmul on
 * a GPU) gets both operands as they are; shapes, checks and recording stay
 * here.
 *
 * Backward (ops, so second derivatives work):
 *   grad_a = sum_to_shape(g @ b^T, a.shape),  grad_b = sum_to_shape(a^T @ g, b.shape)
 * with the 1-D operands unsqueezed to matrices first. A matrix b shared by
 * a batch gets one GEMM over all the rows instead of a batch and a sum, and
 * a transposed matrix operand (x @ w.T) gets its gradient in its own layout,
 * as PyTorch's mm backward does: the gradient of w is then contiguous and
 * becomes w.grad without a copy.
 */
#include <stdio.h>
#include <string.h>

#include "cg_internal.h"

static cg_status matmul_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_MATMUL = {"matmul", matmul_backward};

/* How one (rows x cols) matrix with element strides (rs, cs) is passed to a
 * row-major GEMM: as itself (trans 0, ld = row stride) or as the transpose
 * of a row-major (cols x rows) matrix (trans 1, ld = its row stride). The ld
 * is never below the stored row length (BLAS requires that). Returns 0 when
 * neither fits (broadcast, overlapping or gapped inner strides). */
static int gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs, int *trans,
                       int64_t *ld) {
    int64_t min_ld_plain = cols > 1 ? cols : 1, min_ld_trans = rows > 1 ? rows : 1;
    if ((cols == 1 || cs == 1) && (rows == 1 || rs >= min_ld_plain)) {
        *trans = 0;
        *ld = rows == 1 ? min_ld_plain : rs;
        return 1;
    }
    if ((rows == 1 || rs == 1) && (cols == 1 || cs >= min_ld_trans)) {
        *trans = 1;
        *ld = cols == 1 ? min_ld_trans : cs;
        return 1;
    }
    return 0;
}

/* One operand seen as a batch of matrices. */
typedef struct {
    cg_tensor *t;          /* owned: the tensor the data comes from (maybe a copy) */
    int64_t rows, cols;    /* matrix shape (after a 1-D operand is made 2-D) */
    int64_t rs, cs;        /* element strides of the matrix dims */
    int nbatch;            /* number of batch dims of t */
    int trans;
    int64_t ld;
} mat_operand;

/* Whether the leading dims of x (all but the last) fold into one dim of
 * rows: *rows their product, *rs the element stride between rows. */
static int fold_rows(const cg_tensor *x, int64_t *rows, int64_t *rs) {
    int64_t expect = -1;
    *rows = 1;
    *rs = 0;
    for (int d = x->ndim - 2; d >= 0; --d) {
        *rows *= x->shape[d];
        if (x->shape[d] == 1) continue;
        if (expect < 0) *rs = x->strides[d];
        else if (x->strides[d] != expect) return 0;
        expect = x->strides[d] * x->shape[d];
    }
    return 1;
}

enum { OPERAND_RIGHT, OPERAND_LEFT, OPERAND_ROWS };

/* Fills op for t: matmul's left operand (the 1-D case becomes (1, k)), its
 * right one ((k, 1)), or linear's input (.., k) with its leading dims
 * folded into the rows. Copies t to contiguous memory when its layout
 * cannot go to the GEMM. */
static cg_status operand_init(cg_tensor *t, int kind, mat_operand *op) {
    const int is_left = kind == OPERAND_LEFT;
    cg_tensor *src = t;
    cg_tensor_retain(src);
    for (int attempt = 0; attempt < 2; ++attempt) {
        int nd = src->ndim, fits = 1;
        if (kind == OPERAND_ROWS) {
            op->cols = src->shape[nd - 1];
            op->cs = src->strides[nd - 1];
            op->nbatch = 0;
            fits = fold_rows(src, &op->rows, &op->rs);
        } else if (nd == 1) {
            op->rows = is_left ? 1 : src->shape[0];
            op->cols = is_left ? src->shape[0] : 1;
            op->rs = is_left ? 0 : src->strides[0];
            op->cs = is_left ? src->strides[0] : 0;
            op->nbatch = 0;
        } else {
            op->rows = src->shape[nd - 2];
            op->cols = src->shape[nd - 1];
            op->rs = src->strides[nd - 2];
            op->cs = src->strides[nd - 1];
            op->nbatch = nd - 2;
        }
        if (fits && gemm_layout(op->rows, op->cols, op->rs, op->cs, &op->trans, &op->ld)) {
            op->t = src;
            return CG_OK;
        }
        /* A contiguous copy always fits, so the second attempt succeeds. */
        cg_tensor *c;
        cg_status st = cg__contig(src, &c);
        cg_tensor_free(src);
        if (st) return st;
        src = c;
    }
    cg_tensor_free(src);
    return cg__err(CG_ERR_UNSUPPORTED, "%s: internal error: no GEMM layout",
                   kind == OPERAND_ROWS ? "cg_linear" : "cg_matmul");
}

/* c (rows x n, contiguous) = op(a) @ op(b), for one pair of matrices. */
static void gemm_one(cg_dtype dt, const mat_operand *A, const mat_operand *B, int64_t m,
                     int64_t n, int64_t k, const char *pa, const char *pb, char *pc) {
    if (dt == CG_FLOAT32)
        cg__sgemm(A->trans, B->trans, m, n, k, 1.0f, (const float *)pa, A->ld,
                  (const float *)pb, B->ld, 0.0f, (float *)pc, n);
    else
        cg__dgemm(A->trans, B->trans, m, n, k, 1.0, (const double *)pa, A->ld,
                  (const double *)pb, B->ld, 0.0, (double *)pc, n);
}

static cg_status matmul_shape_err(const cg_tensor *a, const cg_tensor *b, const char *why) {
    char s1[CG_SHAPE_STR_LEN], s2[CG_SHAPE_STR_LEN];
    return cg__err(CG_ERR_SHAPE, "cg_matmul: shapes %s and %s %s",
                   cg__shape_str(a->ndim, a->shape, s1, sizeof s1),
                   cg__shape_str(b->ndim, b->shape, s2, sizeof s2), why);
}

cg_status cg_matmul(cg_tensor *a, cg_tensor *b, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(a);
    CG_CHECK_TD(b);
    int dev;
    cg_tensor *ab[2] = {a, b};
    CG_TRY(cg__same_device("cg_matmul", 2, ab, &dev));
    if (!cg__is_float(a->dtype) || !cg__is_float(b->dtype) || a->dtype != b->dtype)
        return cg__err(CG_ERR_DTYPE,
                       "cg_matmul: both operands must have the same floating dtype (got %s and %s)",
                       cg_dtype_name(a->dtype), cg_dtype_name(b->dtype));
    if (a->ndim == 0 || b->ndim == 0)
        return matmul_shape_err(a, b, "cannot be multiplied: matmul needs operands with at least 1 dim");

    int a1 = a->ndim == 1, b1 = b->ndim == 1;
    int64_t m = a1 ? 1 : a->shape[a->ndim - 2];
    int64_t k = a->shape[a->ndim - 1];
    int64_t kb = b1 ? b->shape[0] : b->shape[b->ndim - 2];
    int64_t n = b1 ? 1 : b->shape[b->ndim - 1];
    if (k != kb) {
        char why[128];
        snprintf(why, sizeof why, "are not aligned: %lld (dim %d of the first) != %lld (dim %d of the second)",
                 (long long)k, a->ndim - 1, (long long)kb, b1 ? 0 : b->ndim - 2);
        return matmul_shape_err(a, b, why);
    }

    /* Batch shape: broadcast of the leading dims. */
    int na_b = a1 ? 0 : a->ndim - 2, nb_b = b1 ? 0 : b->ndim - 2;
    int nbatch;
    int64_t bshape[CG_MAX_DIMS];
    if (cg__broadcast_shapes("cg_matmul", na_b, a->shape, nb_b, b->shape, &nbatch, bshape))
        return matmul_shape_err(a, b, "have batch dims that cannot broadcast");
    int64_t oshape[CG_MAX_DIMS + 2];
    int ond = 0;
    int64_t nmat = 1;
    for (int d = 0; d < nbatch; ++d) {
        oshape[ond++] = bshape[d];
        nmat *= bshape[d];
    }
    if (!a1) oshape[ond++] = m;
    if (!b1) oshape[ond++] = n;
    if (ond > CG_MAX_DIMS) return matmul_shape_err(a, b, "give a result with more than 8 dims");

    cg_tensor *r;
    CG_TRY(cg__new_on(dev, a->dtype, ond, oshape, k == 0, &r));
    cg_status st = CG_OK;
    if (dev) { /* the backend takes both operands in any layout */
        cg_tensor *ts[3] = {r, a, b};
        if (r->numel && k > 0) st = cg__kernel(dev, "matmul", 1, 3, ts, 0, NULL, 0, NULL);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    } else if (nmat > 0 && m > 0 && n > 0 && k > 0) {
        mat_operand A = {0}, B = {0};
        st = operand_init(a, OPERAND_LEFT, &A);
        if (!st) st = operand_init(b, OPERAND_RIGHT, &B);
        if (st) {
            cg_tensor_free(A.t);
            cg_tensor_free(B.t);
            cg_tensor_free(r);
            return st;
        }
        /* Element strides of each operand's batch dims under broadcasting
         * (0 on broadcast dims), aligned with bshape. */
        int64_t sa[CG_MAX_DIMS] = {0}, sb[CG_MAX_DIMS] = {0};
        for (int d = 0; d < nbatch; ++d) {
            int ia = A.nbatch - nbatch + d, ib = B.nbatch - nbatch + d;
            sa[d] = (ia >= 0 && A.t->shape[ia] != 1) ? A.t->strides[ia] : 0;
            sb[d] = (ib >= 0 && B.t->shape[ib] != 1) ? B.t->strides[ib] : 0;
        }
        size_t esz = cg_dtype_size(a->dtype);
        const char *pa = (const char *)cg__ptr(A.t), *pb = (const char *)cg__ptr(B.t);
        char *pc = (char *)cg__ptr(r);

        /* Fold the batch into the rows of one GEMM when B is shared by every
         * batch and a's batch dims step exactly over its rows. */
        int fold = !A.trans && nbatch > 0;
        int64_t expect = m * A.ld;
        for (int d = nbatch - 1; d >= 0 && fold; --d) {
            if (sb[d] != 0) fold = 0;
            if (bshape[d] == 1) continue;
            if (sa[d] != expect) fold = 0;
            expect *= bshape[d];
        }
        if (fold) {
            gemm_one(a->dtype, &A, &B, m * nmat, n, k, pa, pb, pc);
        } else {
            int64_t idx[CG_MAX_DIMS] = {0};
            for (int64_t t = 0; t < nmat; ++t) {
                int64_t oa = 0, ob = 0;
                for (int d = 0; d < nbatch; ++d) {
                    oa += idx[d] * sa[d];
                    ob += idx[d] * sb[d];
                }
                gemm_one(a->dtype, &A, &B, m, n, k, pa + (size_t)oa * esz, pb + (size_t)ob * esz,
                         pc + (size_t)(t * m * n) * esz);
                cg__next_index(nbatch, bshape, idx);
            }
        }
        cg_tensor_free(A.t);
        cg_tensor_free(B.t);
    }

    if (cg__wants_grad2(a, b)) {
        cg_tensor *ins[2] = {a, b};
        cg_node *node;
        st = cg__record(&OP_MATMUL, 2, ins, 1, &r, &node);
        if (!st) st = cg__save(node, a);
        if (!st) st = cg__save(node, b);
        if (st) {
            cg_tensor_free(r);
            return st;
        }
    }
    *out = r;
    return CG_OK;
}

/* Reduce t (a gradient with broadcast batch dims) to the shape of x; for a
 * 1-D operand that was made a column (k, 1), via that shape then reshape. */
static cg_status reduce_to(cg_tensor *t, const cg_tensor *x, int as_column, cg_tensor **out) {
    if (as_column) {
        int64_t col[2] = {x->shape[0], 1};
        cg_tensor *s;
        CG_TRY(cg_sum_to_shape(t, 2, col, &s));
        cg_status st = cg_reshape(s, 1, x->shape, out);
        cg_tensor_free(s);
        return st;
    }
    if (cg__same_shape(t, x)) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    return cg_sum_to_shape(t, x->ndim, x->shape, out);
}

/* A 2-D tensor stored column by column (a transposed contiguous matrix),
 * both dims above 1 (a dim of 1 leaves the layout ambiguous). */
static int col_major(const cg_tensor *t) {
    return t->ndim == 2 && t->shape[0] > 1 && t->shape[1] > 1 && t->strides[0] == 1 &&
           t->strides[1] >= t->shape[0];
}

/* Flattens the leading dims of t (.., r, c) into its rows: (prod .. * r, c),
 * a view where the layout allows (cg_reshape). */
static cg_status rows_flat(cg_tensor *t, cg_tensor **out) {
    if (t->ndim == 2) {
        cg_tensor_retain(t);
        *out = t;
        return CG_OK;
    }
    int64_t shape[2] = {1, t->shape[t->ndim - 1]};
    for (int d = 0; d < t->ndim - 1; ++d) shape[0] *= t->shape[d];
    return cg_reshape(t, 2, shape, out);
}

/* a^T g over rows a (m, k) and g (m, n), or g^T a when transposed, in
 * like's layout: for a column-major `like` (a transposed matrix, Linear's
 * w.T) the product of the other order is computed and transposed (a view),
 * as PyTorch's mm backward, so the gradient accumulates into like's .grad
 * without a copy. */
static cg_status rows_product(cg_tensor *a, cg_tensor *g, int transposed, const cg_tensor *like,
                              cg_tensor **out) {
    const int flip = col_major(like);
    cg_tensor *l = transposed != flip ? g : a, *r = transposed != flip ? a : g;
    cg_tensor *t = NULL, *prod = NULL;
    cg_status st = cg_transpose(l, 0, 1, &t);
    if (!st) st = cg_matmul(t, r, flip ? &prod : out);
    if (!st && flip) st = cg_transpose(prod, 0, 1, out);
    cg_tensor_free(t);
    cg_tensor_free(prod);
    return st;
}

/* The gradient of a matrix b (k, n) shared by every batch of a2 (.., m, k)
 * with g2 (.., m, n): one GEMM over all the rows, sum_rows a^T g (PyTorch's
 * folding; a batch of products then a sum otherwise), in b's layout. */
static cg_status matrix_grad_b(cg_tensor *a2, cg_tensor *b, cg_tensor *g2, cg_tensor **out) {
    cg_tensor *af = NULL, *gf = NULL;
    cg_status st = rows_flat(a2, &af);
    if (!st) st = rows_flat(g2, &gf);
    if (!st) st = rows_product(af, gf, 0, b, out);
    cg_tensor_free(af);
    cg_tensor_free(gf);
    return st;
}

static cg_status matmul_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *a = NULL, *b = NULL, *g = gout[0];
    cg_tensor *a2 = NULL, *b2 = NULL, *g2 = NULL, *tr = NULL, *prod = NULL;
    cg_status st = cg__saved(node, 0, &a);
    if (!st) st = cg__saved(node, 1, &b);
    if (st) goto done;
    int a1 = a->ndim == 1, b1 = b->ndim == 1;

    if (a1 && b1) { /* dot: g is 0-d */
        if (node->needs_grad[0]) st = cg_mul(g, b, &gin[0]);
        if (!st && node->needs_grad[1]) st = cg_mul(g, a, &gin[1]);
        goto done;
    }
    /* Matrix forms: a2 (.., m, k), b2 (.., k, n), g2 (.., m, n). */
    if (a1) st = cg_unsqueeze(a, 0, &a2);
    else { cg_tensor_retain(a); a2 = a; }
    if (!st) {
        if (b1) st = cg_unsqueeze(b, 1, &b2);
        else { cg_tensor_retain(b); b2 = b; }
    }
    if (!st) {
        if (a1) st = cg_unsqueeze(g, g->ndim - 1, &g2);      /* (.., n) -> (.., 1, n) */
        else if (b1) st = cg_unsqueeze(g, g->ndim, &g2);     /* (.., m) -> (.., m, 1) */
        else { cg_tensor_retain(g); g2 = g; }
    }
    if (st) goto done;

    if (node->needs_grad[0]) {
        if (col_major(a) && b2->ndim == 2) {
            /* a is a transposed matrix: its gradient in its layout,
             * (b @ g^T)^T, so it accumulates without a copy. */
            cg_tensor *gt = NULL;
            st = cg_transpose(g2, 0, 1, &gt);
            if (!st) st = cg_matmul(b2, gt, &prod);
            if (!st) st = cg_transpose(prod, 0, 1, &gin[0]);
            cg_tensor_free(gt);
        } else {
            st = cg_transpose(b2, -1, -2, &tr);
            if (!st) st = cg_matmul(g2, tr, &prod);
            if (!st) st = reduce_to(prod, a, 0, &gin[0]);
        }
        cg_tensor_free(tr);
        cg_tensor_free(prod);
        tr = prod = NULL;
        if (st) goto done;
    }
    if (node->needs_grad[1]) {
        if (!b1 && b->ndim == 2) st = matrix_grad_b(a2, b, g2, &gin[1]);
        else {
            st = cg_transpose(a2, -1, -2, &tr);
            if (!st) st = cg_matmul(tr, g2, &prod);
            if (!st) st = reduce_to(prod, b, b1, &gin[1]);
        }
    }
done:
    cg_tensor_free(tr);
    cg_tensor_free(prod);
    cg_tensor_free(a2);
    cg_tensor_free(b2);
    cg_tensor_free(g2);
    cg_tensor_free(a);
    cg_tensor_free(b);
    return st;
}

/* ================================================================ linear */
/*
 * cg_linear: y = x @ w^T + b (PyTorch's F.linear) as one op each way.
 * Forward: one GEMM with w as its transposed operand (no copy of w.T), the
 * bias written into y first and the GEMM accumulating onto it (beta = 1),
 * so there is no second pass over y. Backward (ops, so every order works):
 *   grad_x = g @ w,  grad_w = g_rows^T @ x_rows,  grad_b = sum of g's rows
 * with the leading dims of x and g flattened into rows; grad_w is computed
 * in w's layout when w is itself a transposed matrix, as matmul does.
 */
static cg_status linear_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin);
static const cg_op OP_LINEAR = {"linear", linear_backward};


/* y (M x N, contiguous) = x @ w^T (+ b in every row): host float32/64. */
static cg_status linear_host(cg_tensor *x, cg_tensor *w, cg_tensor *b, cg_tensor *y) {
    int64_t N = w->shape[0], K = w->shape[1], M = y->numel / (N ? N : 1);
    if (M == 0 || N == 0) return CG_OK;
    char *py = (char *)cg__ptr(y);
    if (b) { /* the bias in every row, then the GEMM adds onto it */
        const size_t es = cg_dtype_size(y->dtype), row = (size_t)N * es;
        if (b->strides[0] == 1 || N == 1) {
            memcpy(py, cg__ptr(b), row);
        } else {
            const char *pb = (const char *)cg__ptr(b);
            for (int64_t j = 0; j < N; ++j) memcpy(py + j * es, pb + j * b->strides[0] * es, es);
        }
        for (int64_t i = 1; i < M; ++i) memcpy(py + i * row, py, row);
    }
    if (K == 0) return CG_OK; /* y is the bias, or zeros */
    mat_operand A = {0}, B = {0};
    cg_status st = operand_init(x, OPERAND_ROWS, &A);
    cg_tensor *wc = w;
    cg_tensor_retain(wc);
    /* B = w^T (K x N): element (k, n) is w[n, k] */
    if (!st && !gemm_layout(K, N, w->strides[1], w->strides[0], &B.trans, &B.ld)) {
        cg_tensor_free(wc);
        wc = NULL;
        st = cg__contig(w, &wc);
        if (!st) gemm_layout(K, N, wc->strides[1], wc->strides[0], &B.trans, &B.ld);
    }
    if (!st) {
        const char *pa = (const char *)cg__ptr(A.t), *pw = (const char *)cg__ptr(wc);
        if (y->dtype == CG_FLOAT32)
            cg__sgemm(A.trans, B.trans, M, N, K, 1.0f, (const float *)pa, A.ld,
                      (const float *)pw, B.ld, b ? 1.0f : 0.0f, (float *)py, N);
        else
            cg__dgemm(A.trans, B.trans, M, N, K, 1.0, (const double *)pa, A.ld,
                      (const double *)pw, B.ld, b ? 1.0 : 0.0, (double *)py, N);
    }
    cg_tensor_free(A.t);
    cg_tensor_free(wc);
    return st;
}

cg_status cg_linear(cg_tensor *x, cg_tensor *w, cg_tensor *b, cg_tensor **out) {
    CG_CHECK_OUT(out);
    CG_CHECK_TD(x);
    CG_CHECK_TD(w);
    if (b) CG_CHECK_TD(b);
    int dev;
    cg_tensor *all[3] = {x, w, b};
    CG_TRY(cg__same_device("cg_linear", 3, all, &dev));
    if (!cg__is_float(x->dtype) || w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return cg__err(CG_ERR_DTYPE,
                       "cg_linear: input, weight and bias must share one floating dtype (got %s, %s, %s)",
                       cg_dtype_name(x->dtype), cg_dtype_name(w->dtype),
                       b ? cg_dtype_name(b->dtype) : "none");
    char s1[CG_SHAPE_STR_LEN], s2[CG_SHAPE_STR_LEN];
    if (x->ndim == 0)
        return cg__err(CG_ERR_SHAPE, "cg_linear: input must have at least 1 dim (its features), got a 0-d tensor");
    if (w->ndim != 2)
        return cg__err(CG_ERR_SHAPE, "cg_linear: weight must be 2-D (out_features, in_features), got shape %s",
                       cg__shape_str(w->ndim, w->shape, s1, sizeof s1));
    int64_t N = w->shape[0], K = w->shape[1];
    if (x->shape[x->ndim - 1] != K)
        return cg__err(CG_ERR_SHAPE,
                       "cg_linear: input of shape %s has %lld features, weight of shape %s takes %lld",
                       cg__shape_str(x->ndim, x->shape, s1, sizeof s1),
                       (long long)x->shape[x->ndim - 1], cg__shape_str(2, w->shape, s2, sizeof s2),
                       (long long)K);
    if (b && (b->ndim != 1 || b->shape[0] != N))
        return cg__err(CG_ERR_SHAPE, "cg_linear: bias must have shape (%lld,), got %s", (long long)N,
                       cg__shape_str(b->ndim, b->shape, s1, sizeof s1));

    int64_t oshape[CG_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; ++d) oshape[d] = x->shape[d];
    oshape[x->ndim - 1] = N;
    cg_tensor *r;
    CG_TRY(cg__new_on(dev, x->dtype, x->ndim, oshape, K == 0 && !b, &r));
    cg_status st = CG_OK;
    if (dev) { /* the backend's "linear" kernel takes every operand as it is */
        cg_tensor *ts[4] = {r, x, w, b};
        if (r->numel && (K > 0 || b)) st = cg__kernel(dev, "linear", 1, b ? 4 : 3, ts, 0, NULL, 0, NULL);
    } else {
        st = linear_host(x, w, b, r);
    }
    cg_tensor *ins[3] = {x, w, b};
    int nin = b ? 3 : 2;
    if (!st && cg__wants_gradn(nin, ins)) {
        cg_node *node;
        st = cg__record(&OP_LINEAR, nin, ins, 1, &r, &node);
        if (!st) st = cg__save(node, x);
        if (!st) st = cg__save(node, w);
    }
    if (st) {
        cg_tensor_free(r);
        return st;
    }
    *out = r;
    return CG_OK;
}

/* t (.., c) as rows (prod .., c); a 1-D t is one row (1, c). */
static cg_status as_rows(cg_tensor *t, cg_tensor **out) {
    if (t->ndim == 1) return cg_unsqueeze(t, 0, out);
    return rows_flat(t, out);
}

static cg_status linear_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    cg_tensor *x = NULL, *w = NULL, *g = gout[0], *xr = NULL, *gr = NULL;
    cg_status st = cg__saved(node, 0, &x);
    if (!st) st = cg__saved(node, 1, &w);
    if (!st && node->needs_grad[0]) st = cg_matmul(g, w, &gin[0]);
    if (!st && node->needs_grad[1]) {
        st = as_rows(x, &xr);
        if (!st) st = as_rows(g, &gr);
        if (!st) st = rows_product(xr, gr, 1, w, &gin[1]); /* g^T x, in w's layout */
    }
    if (!st && node->n_inputs > 2 && node->needs_grad[2])
        st = cg_sum_to_shape(g, 1, &w->shape[0], &gin[2]); /* g itself when 1-D */
    cg_tensor_free(xr);
    cg_tensor_free(gr);
    cg_tensor_free(x);
    cg_tensor_free(w);
    return st;
}
