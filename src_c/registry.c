/* registry.c -- named custom ops callable from C and from Python
 * (cg_op_register / cg_op_call). A registered op records one tape entry per
 * call through cg_record_custom, so it costs what any custom op costs; the
 * registry itself is a short list searched by name under a mutex. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "cg_internal.h"

#if !defined(_WIN32)
#include <pthread.h>
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
#define LOCK() pthread_mutex_lock(&registry_mu)
#define UNLOCK() pthread_mutex_unlock(&registry_mu)
#else
#define LOCK() ((void)0)
#define UNLOCK() ((void)0)
#endif

#define CG_OP_NAME_MAX 64

typedef struct reg_op {
    int64_t refcount; /* the registry's and every recorded call's (atomic) */
    int save_inputs, save_output; /* what backward gets (cg_op_set_saves) */
    char name[CG_OP_NAME_MAX];
    int n_inputs, n_params;
    cg_op_forward_fn forward;
    cg_op_backward_fn backward;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    struct reg_op *next;
} reg_op;

static reg_op *ops = NULL;

static void op_incref(reg_op *op) { __atomic_add_fetch(&op->refcount, 1, __ATOMIC_RELAXED); }

static void op_decref(reg_op *op) {
    if (__atomic_sub_fetch(&op->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (op->ctx_free) op->ctx_free(op->ctx);
    free(op);
}

static reg_op *find_locked(const char *name) {
    for (reg_op *op = ops; op; op = op->next)
        if (strcmp(op->name, name) == 0) return op;
    return NULL;
}

static int valid_name(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= CG_OP_NAME_MAX) return 0;
    for (size_t i = 0; i < n; ++i) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

cg_status cg_op_register(const char *name, int n_inputs, int n_params, cg_op_forward_fn forward,
                         cg_op_backward_fn backward, void *ctx, cg_ctx_free_fn ctx_free) {
    cg_status st = CG_OK;
    reg_op *op = NULL;
    if (!name || !forward || !backward)
        st = cg__err(CG_ERR_NULL, "cg_op_register: name, forward and backward are required");
    else if (!valid_name(name))
        st = cg__err(CG_ERR_VALUE, "cg_op_register: '%s' is not a valid op name (letters, digits, '_'; "
                                   "not starting with a digit; at most %d characters)", name, CG_OP_NAME_MAX - 1);
    else if (n_inputs < 1 || n_inputs > 16 || n_params < 0 || n_params > 16)
        st = cg__err(CG_ERR_VALUE, "cg_op_register: '%s' needs 1..16 inputs and 0..16 params, got %d and %d",
                     name, n_inputs, n_params);
    else if (!(op = (reg_op *)calloc(1, sizeof *op)))
        st = cg__err(CG_ERR_NOMEM, "cg_op_register: out of memory");
    if (st || !op) {
        if (ctx_free) ctx_free(ctx);
        return st;
    }
    memcpy(op->name, name, strlen(name) + 1); /* valid_name: shorter than the buffer */
    op->refcount = 1;
    op->save_inputs = op->save_output = 1;
    op->n_inputs = n_inputs;
    op->n_params = n_params;
    op->forward = forward;
    op->backward = backward;
    op->ctx = ctx;
    op->ctx_free = ctx_free;
    LOCK();
    int taken = find_locked(name) != NULL;
    if (!taken) {
        op->next = ops;
        ops = op;
    }
    UNLOCK();
    if (taken) {
        free(op);
        if (ctx_free) ctx_free(ctx);
        return cg__err(CG_ERR_VALUE, "cg_op_register: an op named '%s' is already registered", name);
    }
    return CG_OK;
}

cg_status cg_op_unregister(const char *name) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_unregister: name is NULL");
    LOCK();
    reg_op **slot = &ops;
    while (*slot && strcmp((*slot)->name, name) != 0) slot = &(*slot)->next;
    reg_op *op = *slot;
    if (op) {
        *slot = op->next;
    }
    UNLOCK();
    if (!op) return cg__err(CG_ERR_VALUE, "cg_op_unregister: no op named '%s'", name);
    op_decref(op); /* recorded calls keep it alive until they are released */
    return CG_OK;
}

cg_status cg_op_set_saves(const char *name, int save_inputs, int save_output) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_set_saves: name is NULL");
    LOCK();
    reg_op *op = find_locked(name);
    if (op) {
        op->save_inputs = save_inputs != 0;
        op->save_output = save_output != 0;
    }
    UNLOCK();
    return op ? CG_OK : cg__err(CG_ERR_VALUE, "cg_op_set_saves: no op named '%s'", name);
}

int cg_op_count(void) {
    int n = 0;
    LOCK();
    for (reg_op *op = ops; op; op = op->next) ++n;
    UNLOCK();
    return n;
}

/* Names in registration order (the list is newest first). */
const char *cg_op_name(int i) {
    const char *name = NULL;
    LOCK();
    int n = 0;
    for (reg_op *op = ops; op; op = op->next) ++n;
    if (i >= 0 && i < n) {
        reg_op *op = ops;
        for (int k = 0; k < n - 1 - i; ++k) op = op->next;
        name = op->name;
    }
    UNLOCK();
    return name;
}

cg_status cg_op_info(const char *name, int *n_inputs, int *n_params) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_info: name is NULL");
    LOCK();
    reg_op *op = find_locked(name);
    if (op) {
        if (n_inputs) *n_inputs = op->n_inputs;
        if (n_params) *n_params = op->n_params;
    }
    UNLOCK();
    return op ? CG_OK : cg__err(CG_ERR_VALUE, "no op named '%s' is registered", name);
}

/* One recorded call: what its backward needs. */
typedef struct op_call {
    reg_op *op;
    int n_inputs, n_params;
    cg_tensor *output;  /* owned, a detached view of the output (no cycle), or NULL */
    double *params;     /* n_params, in the same block */
    cg_tensor *inputs[]; /* n_inputs, owned (NULL when the op saves no inputs) */
} op_call;

static void call_free(void *p) {
    op_call *c = (op_call *)p;
    for (int i = 0; i < c->n_inputs; ++i) cg_tensor_free(c->inputs[i]);
    cg_tensor_free(c->output);
    op_decref(c->op);
    free(c);
}

/* The engine checks the returned gradients against the inputs (custom
 * entries: shape, dtype, broadcast sums), so this only forwards the call. */
static cg_status call_backward(void *p, int n_out, cg_tensor *const *gout, int n_in, const int *needs,
                               cg_tensor **gin) {
    op_call *c = (op_call *)p;
    (void)n_out;
    cg_clear_error();
    cg_status st = c->op->backward(c->op->ctx, c->n_inputs, c->inputs, c->n_params, c->params, c->output,
                                   gout[0], needs, gin);
    if (st && cg_last_error()[0] == '\0')
        cg__err(st, "backward of registered op '%s' failed with %s", c->op->name, cg_status_name(st));
    if (st)
        for (int j = 0; j < n_in; ++j) {
            cg_tensor_free(gin[j]);
            gin[j] = NULL;
        }
    return st;
}

/* Found under the mutex, with a reference for the caller. Increments only
 * happen here, while the registry's own reference is held, so a count
 * never comes back from zero. */
static reg_op *lookup(const char *name) {
    LOCK();
    reg_op *op = find_locked(name);
    if (op) op_incref(op);
    UNLOCK();
    return op;
}

cg_status cg_op_call(const char *name, int n_inputs, cg_tensor *const *inputs, int n_params,
                     const double *params, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_call: name is NULL");
    reg_op *op = lookup(name);
    if (!op) return cg__err(CG_ERR_VALUE, "no op named '%s' is registered", name);
    cg_status st = CG_OK;
    if (n_inputs != op->n_inputs || n_params != op->n_params)
        st = cg__err(CG_ERR_VALUE, "op '%s' takes %d tensor inputs and %d params, got %d and %d", name,
                     op->n_inputs, op->n_params, n_inputs, n_params);
    else if (n_params && !params)
        st = cg__err(CG_ERR_NULL, "op '%s': params is NULL", name);
    for (int i = 0; i < n_inputs && !st; ++i)
        if (!inputs || !inputs[i]) st = cg__err(CG_ERR_NULL, "op '%s': input %d is NULL", name, i);
    if (st) {
        op_decref(op);
        return st;
    }
    cg_tensor *y = NULL;
    int prev = cg_set_grad_enabled(0);
    cg_clear_error();
    st = op->forward(op->ctx, n_inputs, inputs, n_params, params, &y);
    cg_set_grad_enabled(prev);
    if (!st && !y) st = cg__err(CG_ERR_CALLBACK, "forward of registered op '%s' returned no tensor", name);
    if (st && cg_last_error()[0] == '\0')
        cg__err(st, "forward of registered op '%s' failed with %s", name, cg_status_name(st));
    if (!st && y->grad_fn) { /* forward ran with grad mode off: only a view of an input can do this */
        cg_tensor *fresh = NULL;
        st = cg_detach(y, &fresh);
        cg_tensor_free(y);
        y = fresh;
    }
    if (st) {
        cg_tensor_free(y);
        op_decref(op);
        return st;
    }
    if (!cg__wants_gradn(n_inputs, inputs)) {
        op_decref(op);
        *out = y;
        return CG_OK;
    }
    op_call *c = (op_call *)malloc(sizeof *c + (size_t)n_inputs * sizeof(cg_tensor *) +
                                   (size_t)n_params * sizeof(double));
    if (!c) {
        cg_tensor_free(y);
        op_decref(op);
        return cg__err(CG_ERR_NOMEM, "cg_op_call: out of memory");
    }
    c->op = op; /* the reference taken above */
    c->n_inputs = n_inputs;
    c->n_params = n_params;
    c->output = NULL;
    c->params = (double *)(void *)(c->inputs + n_inputs);
    for (int i = 0; i < n_inputs; ++i) {
        c->inputs[i] = op->save_inputs ? inputs[i] : NULL;
        if (op->save_inputs) cg_tensor_retain(inputs[i]);
    }
    for (int k = 0; k < n_params; ++k) c->params[k] = params[k];
    if (op->save_output) {
        st = cg_detach(y, &c->output);
        if (st) {
            call_free(c);
            cg_tensor_free(y);
            return st;
        }
    }
    st = cg_record_custom(op->name, n_inputs, inputs, 1, &y, call_backward, c, call_free);
    if (st) {
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}

typedef struct gc_ctx {
    const char *name;
    int n_params;
    const double *params;
} gc_ctx;

static cg_status gc_fn(void *p, int n, cg_tensor *const *inputs, cg_tensor **out) {
    gc_ctx *g = (gc_ctx *)p;
    return cg_op_call(g->name, n, inputs, g->n_params, g->params, out);
}

cg_status cg_op_gradcheck(const char *name, int n_inputs, cg_tensor *const *inputs, int n_params,
                          const double *params, double eps, double atol, double rtol) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_gradcheck: name is NULL");
    CG_TRY(cg_op_info(name, NULL, NULL));
    gc_ctx g = {name, n_params, params};
    return cg_gradcheck(gc_fn, &g, n_inputs, inputs, eps, atol, rtol);
}
