/* 02_digits_mlp.c -- train a digits classifier from C alone.
 *
 *     cc 02_digits_mlp.c -o digits_mlp $(pkg-config --cflags --libs cgrad) -lm
 *     ./digits_mlp [path/to/digits.bin]   (default: data/digits.bin)
 *
 * An MLP 64 -> 128 (ReLU) -> 10 on scikit-learn's 8x8 digits (digits.h,
 * data/digits.bin), trained with
 *  - a custom op: softmax cross-entropy as ONE tape entry whose backward is
 *    written here by hand, d loss / d logits = (softmax - onehot) / N,
 *    checked against central differences with cg_gradcheck at start-up;
 *  - AdamW (cg_optimizer_new_adamw), its lr set before every step from a
 *    warmup + cosine schedule (cg_lr_warmup_cosine);
 *  - clipping of the global gradient norm (cg_clip_grad_norm);
 *  - PyTorch-like uniform init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from the
 *    seeded generator, and a seeded shuffle every epoch (cg_randperm).
 * Prints "epoch N loss L lr R max_grad_norm G" per epoch and the test
 * accuracy. 02_digits_mlp.py trains the same model from Python with the same
 * seed and prints the same lines (tests/python/test_c_python_parity.py
 * compares them). Exits non-zero on any failed call or below 95% accuracy. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cgrad.h"
#include "digits.h"

#define SEED 0
#define GRADCHECK_SEED 1234
#define HIDDEN 128
#define EPOCHS 20
#define BATCH 64
#define BASE_LR 1e-2
#define WEIGHT_DECAY 1e-2
#define WARMUP_EPOCHS 1
#define MAX_NORM 1.0
#define MIN_ACCURACY 0.95
#define N_PARAMS 4

/* On failure: print the call, the status and the message, jump to done. */
#define TRY(call)                                                                 \
    do {                                                                          \
        cg_status st_ = (call);                                                   \
        if (st_ != CG_OK) {                                                       \
            fprintf(stderr, "%s failed: %s: %s\n", #call, cg_status_name(st_),    \
                    cg_last_error());                                             \
            goto done;                                                            \
        }                                                                         \
    } while (0)

/* Evaluates `call` into st only while st is still CG_OK. */
#define CHAIN(st, call) ((st) == CG_OK ? ((st) = (call)) : (st))

/* ------------------------------------------------ the custom loss op */
/* What the backward needs: softmax(logits) and the one-hot labels (same
 * dtype and shape as the logits), and the batch size. Owned by the entry. */
typedef struct sce_ctx {
    cg_tensor *probs;
    cg_tensor *onehot;
    int64_t n;
} sce_ctx;

static void sce_ctx_free(void *p) {
    sce_ctx *c = (sce_ctx *)p;
    if (!c) return;
    cg_tensor_free(c->probs);
    cg_tensor_free(c->onehot);
    free(c);
}

/* grad_logits = (softmax - onehot) * (1/N) * g, written with cg_ ops so it
 * also runs (and is recorded) under create_graph. */
static cg_status sce_backward(void *ctx, int n_outputs, cg_tensor *const *grad_outputs,
                              int n_inputs, const int *needs_input_grad,
                              cg_tensor **grad_inputs) {
    const sce_ctx *c = (const sce_ctx *)ctx;
    cg_tensor *diff = NULL, *scaled = NULL;
    cg_status st = CG_OK;
    if (n_outputs != 1 || n_inputs != 1)
        return cg_set_error(CG_ERR_VALUE, "softmax_cross_entropy backward: expected 1 in, 1 out");
    if (!needs_input_grad[0]) return CG_OK;
    CHAIN(st, cg_sub(c->probs, c->onehot, &diff));
    CHAIN(st, cg_mul_scalar(diff, 1.0 / (double)c->n, &scaled));
    CHAIN(st, cg_mul(scaled, grad_outputs[0], &grad_inputs[0]));
    cg_tensor_free(scaled);
    cg_tensor_free(diff);
    return st;
}

/* onehot (N, C) of the logits' dtype with 1 at (i, labels[i]). */
static cg_status make_onehot(const cg_tensor *logits, const cg_tensor *labels, cg_tensor **out) {
    const int64_t *shape = cg_tensor_shape(logits);
    const int64_t *y = (const int64_t *)cg_tensor_data(labels);
    int64_t i, n = shape[0], c = shape[1];
    cg_dtype dt = cg_tensor_dtype(logits);
    cg_status st = cg_zeros(dt, 2, shape, out);
    if (st != CG_OK) return st;
    for (i = 0; i < n; ++i) {
        if (y[i] < 0 || y[i] >= c) {
            cg_tensor_free(*out);
            *out = NULL;
            return cg_set_error(CG_ERR_INDEX, "softmax_cross_entropy: label out of range");
        }
        if (dt == CG_FLOAT64) ((double *)cg_tensor_data(*out))[i * c + y[i]] = 1.0;
        else ((float *)cg_tensor_data(*out))[i * c + y[i]] = 1.0f;
    }
    return CG_OK;
}

/* loss = -mean_i log_softmax(logits)[i, labels[i]], 0-d; logits (N, C)
 * float32/float64, labels int64 (N) contiguous. The forward runs with grad
 * mode off; then one entry with the hand-written backward is recorded. */
static cg_status softmax_cross_entropy(cg_tensor *logits, cg_tensor *labels, cg_tensor **loss) {
    cg_tensor *ls = NULL, *yi = NULL, *picked = NULL, *m = NULL;
    sce_ctx *c = NULL;
    cg_status st = CG_OK;
    int prev;
    *loss = NULL;
    if (cg_tensor_ndim(logits) != 2 || cg_tensor_ndim(labels) != 1 ||
        cg_tensor_dtype(labels) != CG_INT64 || !cg_tensor_is_contiguous(labels) ||
        cg_tensor_shape(labels)[0] != cg_tensor_shape(logits)[0] ||
        cg_tensor_shape(logits)[0] == 0)
        return cg_set_error(CG_ERR_SHAPE, "softmax_cross_entropy: want logits (N, C), N > 0, "
                                          "and contiguous int64 labels (N)");
    c = (sce_ctx *)calloc(1, sizeof *c);
    if (!c) return cg_set_error(CG_ERR_NOMEM, "softmax_cross_entropy: out of memory");
    c->n = cg_tensor_shape(logits)[0];
    prev = cg_set_grad_enabled(0);
    CHAIN(st, cg_log_softmax(logits, 1, &ls));
    CHAIN(st, cg_unsqueeze(labels, 1, &yi));
    CHAIN(st, cg_gather(ls, 1, yi, &picked));
    CHAIN(st, cg_mean(picked, NULL, 0, 0, &m));
    CHAIN(st, cg_neg(m, loss));
    CHAIN(st, cg_exp(ls, &c->probs));
    CHAIN(st, make_onehot(logits, labels, &c->onehot));
    cg_set_grad_enabled(prev);
    cg_tensor_free(m);
    cg_tensor_free(picked);
    cg_tensor_free(yi);
    cg_tensor_free(ls);
    if (st != CG_OK) {
        sce_ctx_free(c);
        cg_tensor_free(*loss);
        *loss = NULL;
        return st;
    }
    /* From here the entry owns c (freed by cg_record_custom on failure too). */
    st = cg_record_custom("softmax_cross_entropy", 1, &logits, 1, loss, sce_backward, c,
                          sce_ctx_free);
    if (st != CG_OK) {
        cg_tensor_free(*loss);
        *loss = NULL;
    }
    return st;
}

static cg_status sce_fn(void *ctx, int n_inputs, cg_tensor *const *inputs, cg_tensor **out) {
    (void)n_inputs;
    return softmax_cross_entropy(inputs[0], (cg_tensor *)ctx, out);
}

/* The hand-written gradient against float64 central differences. */
static cg_status gradcheck_loss(void) {
    int64_t shape[2] = {6, 10}, lshape[1] = {6};
    int64_t labels_v[6] = {0, 3, 9, 3, 7, 1};
    cg_tensor *logits = NULL, *labels = NULL;
    cg_status st = CG_OK;
    cg_manual_seed(GRADCHECK_SEED);
    CHAIN(st, cg_randn(CG_FLOAT64, 2, shape, &logits));
    CHAIN(st, cg_tensor_set_requires_grad(logits, 1));
    CHAIN(st, cg_from_data(CG_INT64, 1, lshape, labels_v, &labels));
    CHAIN(st, cg_gradcheck(sce_fn, labels, 1, &logits, 1e-6, 1e-7, 1e-5));
    cg_tensor_free(labels);
    cg_tensor_free(logits);
    return st;
}

/* ------------------------------------------------------------ the model */
/* U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as rand * 2b - b, a leaf requiring grad. */
static cg_status uniform_param(int ndim, const int64_t *shape, int64_t fan_in, cg_tensor **out) {
    double bound = 1.0 / sqrt((double)fan_in);
    cg_tensor *u = NULL, *scaled = NULL;
    cg_status st = CG_OK;
    *out = NULL;
    CHAIN(st, cg_rand(CG_FLOAT32, ndim, shape, &u));
    CHAIN(st, cg_mul_scalar(u, 2.0 * bound, &scaled));
    CHAIN(st, cg_add_scalar(scaled, -bound, out));
    CHAIN(st, cg_tensor_set_requires_grad(*out, 1));
    cg_tensor_free(scaled);
    cg_tensor_free(u);
    if (st != CG_OK) {
        cg_tensor_free(*out);
        *out = NULL;
    }
    return st;
}

/* logits = relu(x @ w1 + b1) @ w2 + b2 */
static cg_status forward(cg_tensor *const *p, cg_tensor *x, cg_tensor **logits) {
    cg_tensor *xw = NULL, *pre = NULL, *h = NULL, *hw = NULL;
    cg_status st = CG_OK;
    CHAIN(st, cg_matmul(x, p[0], &xw));
    CHAIN(st, cg_add(xw, p[1], &pre));
    CHAIN(st, cg_relu(pre, &h));
    CHAIN(st, cg_matmul(h, p[2], &hw));
    CHAIN(st, cg_add(hw, p[3], logits));
    cg_tensor_free(hw);
    cg_tensor_free(h);
    cg_tensor_free(pre);
    cg_tensor_free(xw);
    return st;
}

/* Fraction of rows whose argmax logit is the label. */
static cg_status accuracy(cg_tensor *const *p, cg_tensor *x, const digits_split *s,
                          double *acc) {
    cg_tensor *logits = NULL, *pred = NULL;
    int prev = cg_set_grad_enabled(0);
    cg_status st = CG_OK;
    CHAIN(st, forward(p, x, &logits));
    CHAIN(st, cg_argmax(logits, 1, 0, 0, &pred));
    cg_set_grad_enabled(prev);
    if (st == CG_OK) {
        const int64_t *pv = (const int64_t *)cg_tensor_data(pred);
        int64_t i, right = 0;
        for (i = 0; i < s->rows; ++i) right += pv[i] == (int64_t)s->labels[i];
        *acc = (double)right / (double)s->rows;
    }
    cg_tensor_free(pred);
    cg_tensor_free(logits);
    return st;
}

/* One mini-batch: rows perm[first:last] -> forward, loss, backward, clip,
 * lr for this step, AdamW step. */
static cg_status train_step(cg_optimizer *opt, cg_tensor *const *p, cg_tensor *x, cg_tensor *y,
                            cg_tensor *perm, int64_t first, int64_t last,
                            const cg_lr_warmup_cosine_options *sched, int64_t step,
                            double *loss_v, double *grad_norm, double *lr) {
    cg_tensor *idx = NULL, *xb = NULL, *yb = NULL, *logits = NULL, *loss = NULL;
    cg_tensor *grads[N_PARAMS];
    cg_status st = CG_OK;
    int i;
    cg_optimizer_zero_grad(opt);
    CHAIN(st, cg_slice(perm, 0, first, last, 1, &idx));
    CHAIN(st, cg_index_select(x, 0, idx, &xb));
    CHAIN(st, cg_index_select(y, 0, idx, &yb));
    CHAIN(st, forward(p, xb, &logits));
    CHAIN(st, softmax_cross_entropy(logits, yb, &loss));
    CHAIN(st, cg_tensor_item(loss, loss_v));
    CHAIN(st, cg_backward(loss, NULL, 0, 0));
    for (i = 0; i < N_PARAMS && st == CG_OK; ++i) {
        grads[i] = cg_tensor_grad(p[i]); /* borrowed */
        if (!grads[i]) st = cg_set_error(CG_ERR_AUTOGRAD, "train_step: a parameter got no gradient");
    }
    CHAIN(st, cg_clip_grad_norm(N_PARAMS, grads, MAX_NORM, 2.0, 0, grad_norm, NULL));
    CHAIN(st, cg_lr_warmup_cosine(sched, BASE_LR, step, lr));
    CHAIN(st, cg_optimizer_set_lr(opt, *lr));
    CHAIN(st, cg_optimizer_step(opt));
    cg_tensor_free(loss);
    cg_tensor_free(logits);
    cg_tensor_free(yb);
    cg_tensor_free(xb);
    cg_tensor_free(idx);
    return st;
}

int main(int argc, char **argv) {
    /* Default: run from examples/c or from the repository root. */
    const char *path = argc > 1 ? argv[1] : "data/digits.bin";
    int64_t w1s[2] = {0, HIDDEN}, b1s[1] = {HIDDEN}, w2s[2] = {HIDDEN, 0}, b2s[1] = {0};
    digits_data d = {0, 0, {0, NULL, NULL}, {0, NULL, NULL}};
    cg_tensor *xtr = NULL, *ytr = NULL, *xte = NULL, *yte = NULL, *perm = NULL;
    cg_tensor *p[N_PARAMS] = {NULL, NULL, NULL, NULL};
    cg_optimizer *opt = NULL;
    cg_adam_options ao = cg_adamw_default_options();
    cg_lr_warmup_cosine_options sched;
    char err[256];
    int64_t steps_per_epoch, step = 0, first;
    double acc = 0.0;
    int ok = 0, epoch, i;

    if (digits_load(path, &d, err, sizeof err) != 0 &&
        (argc > 1 || digits_load("examples/c/data/digits.bin", &d, err, sizeof err) != 0)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    TRY(digits_tensors(&d, &d.train, &xtr, &ytr));
    TRY(digits_tensors(&d, &d.test, &xte, &yte));

    TRY(gradcheck_loss());
    printf("gradcheck softmax_cross_entropy: OK\n");

    /* Everything from here is reproduced by 02_digits_mlp.py call for call. */
    cg_manual_seed(SEED);
    w1s[0] = d.cols;
    w2s[1] = b2s[0] = d.n_classes;
    TRY(uniform_param(2, w1s, d.cols, &p[0]));
    TRY(uniform_param(1, b1s, d.cols, &p[1]));
    TRY(uniform_param(2, w2s, HIDDEN, &p[2]));
    TRY(uniform_param(1, b2s, HIDDEN, &p[3]));

    ao.lr = BASE_LR;
    ao.weight_decay = WEIGHT_DECAY;
    TRY(cg_optimizer_new_adamw(N_PARAMS, p, &ao, &opt));
    steps_per_epoch = (d.train.rows + BATCH - 1) / BATCH;
    sched.warmup_steps = WARMUP_EPOCHS * steps_per_epoch;
    sched.total_steps = EPOCHS * steps_per_epoch;
    sched.warmup_start_factor = 0.0;
    sched.eta_min = 0.0;

    for (epoch = 1; epoch <= EPOCHS; ++epoch) {
        double total = 0.0, max_gn = 0.0, lr = 0.0;
        TRY(cg_randperm(d.train.rows, &perm));
        for (first = 0; first < d.train.rows; first += BATCH) {
            int64_t last = first + BATCH < d.train.rows ? first + BATCH : d.train.rows;
            double loss_v = 0.0, gn = 0.0;
            TRY(train_step(opt, p, xtr, ytr, perm, first, last, &sched, step++, &loss_v, &gn,
                           &lr));
            total += loss_v * (double)(last - first);
            if (gn > max_gn) max_gn = gn;
        }
        cg_tensor_free(perm);
        perm = NULL;
        printf("epoch %d loss %.8f lr %.8e max_grad_norm %.6f\n", epoch,
               total / (double)d.train.rows, lr, max_gn);
    }
    TRY(accuracy(p, xte, &d.test, &acc));
    printf("test accuracy %.4f\n", acc);
    ok = acc >= MIN_ACCURACY;
    if (!ok) fprintf(stderr, "digits_mlp: test accuracy %.4f below %.2f\n", acc, MIN_ACCURACY);

done:
    cg_optimizer_free(opt);
    for (i = 0; i < N_PARAMS; ++i) cg_tensor_free(p[i]);
    cg_tensor_free(perm);
    cg_tensor_free(yte);
    cg_tensor_free(xte);
    cg_tensor_free(ytr);
    cg_tensor_free(xtr);
    digits_free(&d);
    return ok ? 0 : 1;
}
