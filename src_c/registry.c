/* registry.c -- named custom ops callable from C and from Python
 * (cg_op_register / cg_op_call / cg_op_call_handle). The registry is a
 * short list searched by name under a mutex; a handle is the op itself
 * (refcounted), so a call through one takes no lock. A call records its tape
 * entry as a built-in does (cg__record): params, the op reference and the
 * saved tensors live in the node, so a call allocates nothing beyond the
 * node and its output. */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stddef.h>

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

typedef struct cg_op_handle reg_op;

struct cg_op_handle {
    int64_t refcount; /* the registry's, every handle's, every recorded call's (atomic) */
    cg_op entry;      /* what the call's entries point to: {name, cg__registered_backward} */
    int registered;   /* atomic: 1 while in the list */
    int save_inputs, save_output; /* atomic: what backward gets (cg_op_set_saves) */
    char name[CG_OP_NAME_MAX];
    int n_inputs, n_params;
    cg_op_forward_fn forward;
    cg_op_backward_fn backward;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    reg_op *next;
};

static reg_op *ops = NULL;

static void op_incref(reg_op *op) { __atomic_add_fetch(&op->refcount, 1, __ATOMIC_RELAXED); }

static void op_decref(reg_op *op) {
    if (__atomic_sub_fetch(&op->refcount, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (op->ctx_free) op->ctx_free(op->ctx);
    free(op);
}

static void op_release(void *op) { op_decref((reg_op *)op); }

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
    op->entry.name = op->name;
    op->entry.backward = cg__registered_backward;
    op->registered = 1;
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
        __atomic_store_n(&op->registered, 0, __ATOMIC_RELEASE);
    }
    UNLOCK();
    if (!op) return cg__err(CG_ERR_VALUE, "cg_op_unregister: no op named '%s'", name);
    op_decref(op); /* handles and recorded calls keep it alive until they go */
    return CG_OK;
}

cg_status cg_op_set_saves(const char *name, int save_inputs, int save_output) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_set_saves: name is NULL");
    LOCK();
    reg_op *op = find_locked(name);
    if (op) { /* calls through handles read these without the lock */
        __atomic_store_n(&op->save_inputs, save_inputs != 0, __ATOMIC_RELAXED);
        __atomic_store_n(&op->save_output, save_output != 0, __ATOMIC_RELAXED);
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

/* Found under the mutex, with a reference for the caller. Increments
 * happen here, while the registry's own reference is held, or on behalf of
 * a caller that holds a reference (handle), so a count never comes back
 * from zero. */
static reg_op *lookup(const char *name) {
    LOCK();
    reg_op *op = find_locked(name);
    if (op) op_incref(op);
    UNLOCK();
    return op;
}

cg_status cg_op_find(const char *name, cg_op_handle **out) {
    CG_CHECK_OUT(out);
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_find: name is NULL");
    reg_op *op = lookup(name);
    if (!op) return cg__err(CG_ERR_VALUE, "no op named '%s' is registered", name);
    *out = op;
    return CG_OK;
}

void cg_op_handle_free(cg_op_handle *handle) {
    if (handle) op_decref(handle);
}

int cg_op_handle_is_registered(const cg_op_handle *handle) {
    return handle && __atomic_load_n(&handle->registered, __ATOMIC_ACQUIRE);
}

/* ------------------------------------------------------- recorded calls */
/* A call's entry: node->op is &op->entry, node->ctx holds the entry's
 * reference to the op (node->ctx_free drops it), iparam[0] holds the flags
 * below (cg_op_set_saves may change between calls), params sit in fparam
 * and the saved tensors in node->saved, unless they do not fit: then a
 * reg_extra block (node->extra) holds all params or all saved tensors. */
enum { SAVED_INPUTS = 1, SAVED_OUTPUT = 2, SPILLED = 4 };
#define INLINE_PARAMS ((int)(sizeof ((cg_node *)0)->fparam / sizeof(double)))

typedef struct reg_extra {
    double *params;   /* n_params (in this block), or NULL: node->fparam */
    int n_saved;      /* 0: node->saved holds them */
    cg_saved saved[]; /* n_saved: the inputs (when saved), then the output */
} reg_extra;

static void extra_free(void *p) {
    reg_extra *ex = (reg_extra *)p;
    for (int i = 0; i < ex->n_saved; ++i) cg_tensor_free(ex->saved[i].t);
    free(ex);
}

void cg__registered_release(cg_node *node) {
    if (!(node->iparam[0] & SPILLED)) return;
    reg_extra *ex = (reg_extra *)node->extra;
    for (int i = 0; i < ex->n_saved; ++i) {
        cg_tensor_free(ex->saved[i].t);
        ex->saved[i].t = NULL;
    }
}

/* Records the entry for y = op(inputs), handing it the reference the
 * caller took for it. On failure y may already carry the node: the caller
 * frees y, which frees the node and all it holds (and the reference). */
static cg_status record_call(reg_op *op, int n_inputs, cg_tensor *const *inputs, const double *params,
                             cg_tensor *y) {
    if (!cg__is_float(y->dtype)) {
        op_decref(op);
        return cg__err(CG_ERR_DTYPE, "op '%s': its output has dtype %s; only floating outputs can carry "
                                     "gradients", op->name, cg_dtype_name(y->dtype));
    }
    int save_in = __atomic_load_n(&op->save_inputs, __ATOMIC_RELAXED);
    int save_out = __atomic_load_n(&op->save_output, __ATOMIC_RELAXED);
    int n_params = op->n_params, n_save = (save_in ? n_inputs : 0) + save_out;
    int spill_params = n_params > INLINE_PARAMS, spill_saved = n_save > CG_NODE_MAX_SAVED;
    cg_node *node;
    cg_status st = cg__record(&op->entry, n_inputs, inputs, 1, &y, &node);
    if (st) {
        op_decref(op);
        return st;
    }
    node->ctx = op;
    node->ctx_free = op_release;
    node->iparam[0] = (save_in ? SAVED_INPUTS : 0) | (save_out ? SAVED_OUTPUT : 0) |
                      (spill_params || spill_saved ? SPILLED : 0);
    node->n_iparam = 1;
    double *pdst = node->fparam;
    reg_extra *ex = NULL; /* spilled saves go to ex->saved, counted as they are taken */
    if (spill_params || spill_saved) {
        size_t head = sizeof(reg_extra) + (spill_saved ? (size_t)n_save : 0) * sizeof(cg_saved);
        ex = (reg_extra *)calloc(1, head + (spill_params ? (size_t)n_params * sizeof(double) : 0));
        if (!ex) return cg__err(CG_ERR_NOMEM, "op '%s': out of memory recording a call", op->name);
        node->extra = ex;
        node->extra_free = extra_free;
        if (spill_params) pdst = ex->params = (double *)(void *)((char *)ex + head);
    }
    for (int k = 0; k < n_params; ++k) pdst[k] = params[k];
    for (int i = 0; i < n_inputs && save_in; ++i) {
        if (spill_saved) cg__save_into(&ex->saved[ex->n_saved++], inputs[i]);
        else CG_TRY(cg__save(node, inputs[i]));
    }
    if (save_out && !spill_saved) return cg__save_output(node, 0);
    if (save_out) {
        CG_TRY(cg__save_output_into(node, 0, &ex->saved[ex->n_saved]));
        ++ex->n_saved;
    }
    return CG_OK;
}

/* New references to what the call saved, in the order record_call saved
 * them. Unpacking is where an in-place change since the call is caught. */
static cg_status unpack_saved(cg_node *node, const reg_extra *ex, int flags, cg_tensor **ins, cg_tensor **y) {
    const cg_saved *slots = ex && ex->n_saved ? ex->saved : node->saved;
    cg_status st = CG_OK;
    int k = 0;
    for (int i = 0; i < node->n_inputs && (flags & SAVED_INPUTS) && !st; ++i)
        st = cg__saved_unpack(node, &slots[k++], &ins[i]);
    if (!st && (flags & SAVED_OUTPUT)) st = cg__saved_unpack(node, &slots[k], y);
    return st;
}

/* The engine runs this for every call's entry (with grad mode ==
 * create_graph). The gradients are checked as any custom backward's are:
 * they flow into other entries' backwards, which trust their shapes. */
cg_status cg__registered_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    /* node->op is the op's own entry: the op, without reading node->ctx. */
    reg_op *op = (reg_op *)(void *)((char *)node->op - offsetof(reg_op, entry));
    int flags = (int)node->iparam[0], n_in = node->n_inputs, needs[16];
    const reg_extra *ex = (flags & SPILLED) ? (const reg_extra *)node->extra : NULL;
    const double *params = ex && ex->params ? ex->params : node->fparam;
    cg_tensor *ins[16], *y = NULL; /* n_in used: no 16-slot zero fill per call */
    cg_status st = CG_OK;
    for (int i = 0; i < n_in; ++i) {
        ins[i] = NULL;
        needs[i] = node->needs_grad[i];
    }
    if (flags & (SAVED_INPUTS | SAVED_OUTPUT)) st = unpack_saved(node, ex, flags, ins, &y);
    if (!st) {
        cg_clear_error();
        st = op->backward(op->ctx, n_in, ins, op->n_params, params, y, gout[0], needs, gin);
        if (st && cg_last_error()[0] == '\0')
            cg__err(st, "backward of registered op '%s' failed with %s", op->name, cg_status_name(st));
    }
    if (flags & (SAVED_INPUTS | SAVED_OUTPUT)) {
        for (int i = 0; i < n_in; ++i) cg_tensor_free(ins[i]);
        cg_tensor_free(y);
    }
    for (int i = 0; i < n_in && !st; ++i) st = cg__check_custom_grad(node, i, &gin[i]);
    if (st)
        for (int i = 0; i < n_in; ++i) {
            cg_tensor_free(gin[i]);
            gin[i] = NULL;
        }
    return st;
}

cg_status cg_op_call_handle(cg_op_handle *op, int n_inputs, cg_tensor *const *inputs, int n_params,
                            const double *params, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (!op) return cg__err(CG_ERR_NULL, "cg_op_call_handle: handle is NULL");
    const char *name = op->name;
    if (n_inputs != op->n_inputs || n_params != op->n_params)
        return cg__err(CG_ERR_VALUE, "op '%s' takes %d tensor inputs and %d params, got %d and %d", name,
                       op->n_inputs, op->n_params, n_inputs, n_params);
    if (n_params && !params) return cg__err(CG_ERR_NULL, "op '%s': params is NULL", name);
    if (!inputs) return cg__err(CG_ERR_NULL, "op '%s': inputs is NULL", name);
    int any_requires_grad = 0;
    for (int i = 0; i < n_inputs; ++i) {
        if (!inputs[i]) return cg__err(CG_ERR_NULL, "op '%s': input %d is NULL", name, i);
        any_requires_grad |= inputs[i]->requires_grad;
    }
    cg_tensor *y = NULL;
    int prev = cg_set_grad_enabled(0);
    /* The entry's reference on the op is taken before the forward: a locked
     * increment right after the entry's allocation waits for all its stores
     * to drain, here it costs a fraction of that. Whether the call records
     * depends only on the inputs and grad mode, which a forward has no
     * business changing. */
    int record = prev && any_requires_grad;
    if (record) op_incref(op); /* the caller holds one: the count is not zero */
    cg_clear_error();
    cg_status st = op->forward(op->ctx, n_inputs, inputs, n_params, params, &y);
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
    if (record) {
        if (st) op_decref(op);
        else st = record_call(op, n_inputs, inputs, params, y);
    }
    if (st) {
        cg_tensor_free(y);
        return st;
    }
    *out = y;
    return CG_OK;
}

cg_status cg_op_call(const char *name, int n_inputs, cg_tensor *const *inputs, int n_params,
                     const double *params, cg_tensor **out) {
    CG_CHECK_OUT(out);
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_call: name is NULL");
    reg_op *op = lookup(name);
    if (!op) return cg__err(CG_ERR_VALUE, "no op named '%s' is registered", name);
    cg_status st = cg_op_call_handle(op, n_inputs, inputs, n_params, params, out);
    op_decref(op);
    return st;
}

typedef struct gc_ctx {
    reg_op *op;
    int n_params;
    const double *params;
} gc_ctx;

static cg_status gc_fn(void *p, int n, cg_tensor *const *inputs, cg_tensor **out) {
    gc_ctx *g = (gc_ctx *)p;
    return cg_op_call_handle(g->op, n, inputs, g->n_params, g->params, out);
}

cg_status cg_op_gradcheck(const char *name, int n_inputs, cg_tensor *const *inputs, int n_params,
                          const double *params, double eps, double atol, double rtol) {
    if (!name) return cg__err(CG_ERR_NULL, "cg_op_gradcheck: name is NULL");
    gc_ctx g = {NULL, n_params, params};
    CG_TRY(cg_op_find(name, &g.op));
    cg_status st = cg_gradcheck(gc_fn, &g, n_inputs, inputs, eps, atol, rtol);
    cg_op_handle_free(g.op);
    return st;
}
