/* 01_fit_line.c -- fit y = 3x + 2 from noisy samples with cgrad from C alone.
 *
 *     cc 01_fit_line.c -o fit_line $(pkg-config --cflags --libs cgrad) -lm
 *
 * A model y_hat = x @ w + b with w (1, 1) and b (1), mean squared error, and
 * plain gradient descent written out by hand: after each backward the
 * parameters are updated in place with cg_add_ under no-grad (an in-place
 * change of a leaf that requires grad is refused while grad mode is on), and
 * the gradients are cleared. Prints the loss every epoch; exits non-zero if
 * the fit does not reach the noise floor or w, b are not close to 3, 2. */
#include <math.h>
#include <stdio.h>

#include "cgrad.h"

#define N_SAMPLES 128
#define EPOCHS 60
#define LR 0.1
#define NOISE 0.1

/* On failure: print the status and message, jump to the cleanup. */
#define TRY(call)                                                                 \
    do {                                                                          \
        cg_status st_ = (call);                                                   \
        if (st_ != CG_OK) {                                                       \
            fprintf(stderr, "%s failed: %s: %s\n", #call, cg_status_name(st_),    \
                    cg_last_error());                                             \
            goto done;                                                            \
        }                                                                         \
    } while (0)

/* loss = mean((x @ w + b - y)^2); every intermediate is freed here, the
 * graph stays alive through *loss. */
static cg_status mse_loss(cg_tensor *x, cg_tensor *y, cg_tensor *w, cg_tensor *b,
                          cg_tensor **loss) {
    cg_tensor *xw = NULL, *pred = NULL, *err = NULL, *sq = NULL;
    cg_status st = cg_matmul(x, w, &xw);                  /* (N, 1) */
    if (st == CG_OK) st = cg_add(xw, b, &pred);           /* b broadcasts */
    if (st == CG_OK) st = cg_sub(pred, y, &err);
    if (st == CG_OK) st = cg_mul(err, err, &sq);
    if (st == CG_OK) st = cg_mean(sq, NULL, 0, 0, loss);  /* 0-d */
    cg_tensor_free(sq);
    cg_tensor_free(err);
    cg_tensor_free(pred);
    cg_tensor_free(xw);
    return st;
}

/* p -= lr * p.grad, then p.grad = None. Caller has grad mode off. */
static cg_status sgd_update(cg_tensor *p, double lr) {
    cg_tensor *g = cg_tensor_grad(p); /* borrowed */
    if (!g) return cg_set_error(CG_ERR_AUTOGRAD, "sgd_update: parameter has no gradient");
    cg_status st = cg_add_(p, g, -lr);
    if (st == CG_OK) st = cg_tensor_set_grad(p, NULL);
    return st;
}

int main(void) {
    int64_t xshape[2] = {N_SAMPLES, 1}, wshape[2] = {1, 1}, bshape[1] = {1};
    cg_tensor *x = NULL, *noise = NULL, *y3 = NULL, *y32 = NULL, *y = NULL;
    cg_tensor *w = NULL, *b = NULL, *loss = NULL;
    double first = 0.0, last = 0.0, wv = 0.0, bv = 0.0;
    int ok = 0, epoch;

    cg_manual_seed(0);
    /* Data: x ~ N(0, 1), y = 3x + 2 + 0.1 * N(0, 1). */
    TRY(cg_randn(CG_FLOAT32, 2, xshape, &x));
    TRY(cg_randn(CG_FLOAT32, 2, xshape, &noise));
    TRY(cg_mul_scalar(x, 3.0, &y3));
    TRY(cg_add_scalar(y3, 2.0, &y32));
    TRY(cg_mul_scalar_(noise, NOISE));
    TRY(cg_add(y32, noise, &y));

    TRY(cg_zeros(CG_FLOAT32, 2, wshape, &w));
    TRY(cg_zeros(CG_FLOAT32, 1, bshape, &b));
    TRY(cg_tensor_set_requires_grad(w, 1));
    TRY(cg_tensor_set_requires_grad(b, 1));

    for (epoch = 0; epoch < EPOCHS; ++epoch) {
        int prev;
        cg_status st;
        TRY(mse_loss(x, y, w, b, &loss));
        TRY(cg_tensor_item(loss, &last));
        if (epoch == 0) first = last;
        printf("epoch %2d  loss %.6f\n", epoch, last);
        TRY(cg_backward(loss, NULL, 0, 0));
        cg_tensor_free(loss);
        loss = NULL;

        prev = cg_set_grad_enabled(0);
        st = sgd_update(w, LR);
        if (st == CG_OK) st = sgd_update(b, LR);
        cg_set_grad_enabled(prev);
        TRY(st);
    }
    {
        float wf = 0.0f, bf = 0.0f;
        TRY(cg_tensor_copy_to(w, &wf, sizeof wf));
        TRY(cg_tensor_copy_to(b, &bf, sizeof bf));
        wv = wf;
        bv = bf;
    }
    printf("w = %.4f  b = %.4f  (true 3, 2)\n", wv, bv);
    /* The noise has variance NOISE^2 = 0.01: the fit should sit near it. */
    ok = last < 2.0 * NOISE * NOISE && last < first && fabs(wv - 3.0) < 0.05 &&
         fabs(bv - 2.0) < 0.05;
    if (!ok) fprintf(stderr, "fit_line: did not converge (loss %.6f)\n", last);

done:
    cg_tensor_free(loss);
    cg_tensor_free(b);
    cg_tensor_free(w);
    cg_tensor_free(y);
    cg_tensor_free(y32);
    cg_tensor_free(y3);
    cg_tensor_free(noise);
    cg_tensor_free(x);
    return ok ? 0 : 1;
}
