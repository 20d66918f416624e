/* tape.c -- tape entries (nodes), saved tensors, grad mode and the reverse
 * sweep shared by cg_backward and cg_grad.
 *
 * Each recorded op creates a node with a thread-local, increasing sequence
 * number. A node owns references to the nodes that produced its inputs
 * (edges) and to the leaves it feeds, so the graph stays alive exactly as
 * long as some tensor can reach it. Backward collects the nodes reachable
 * from the roots with an explicit stack (no recursion), sorts them by
 * decreasing sequence number and runs each once: every consumer of a tensor
 * was recorded after its producer, so all gradient contributions to a node
 * have arrived when it runs, and the order of float sums is fixed. */
#include <stdio.h>

#include "cg_internal.h"

static void release_override_tensors(cg_node *n);
static void override_decref(cg_override *o);

static __thread int grad_enabled = 1;
static __thread uint64_t next_seq = 1;
static __thread uint64_t epoch = 0;

int cg_is_grad_enabled(void) { return grad_enabled; }
int cg__grad_mode(void) { return grad_enabled; }
int cg_set_grad_enabled(int enabled) {
    int prev = grad_enabled;
    grad_enabled = enabled != 0;
    return prev;
}

int cg__wants_grad1(const cg_tensor *a) { return grad_enabled && a->requires_grad; }
int cg__wants_grad2(const cg_tensor *a, const cg_tensor *b) {
    return grad_enabled && (a->requires_grad || b->requires_grad);
}
int cg__wants_gradn(int n, cg_tensor *const *ts) {
    if (!grad_enabled) return 0;
    for (int i = 0; i < n; ++i)
        if (ts[i] && ts[i]->requires_grad) return 1;
    return 0;
}

const char *cg__node_name(const cg_node *node) {
    if (!node) return "?";
    if (node->custom_name) return node->custom_name;
    return node->op ? node->op->name : "?";
}

/* ----------------------------------------------------------------- nodes */
static void release_saved(cg_node *n) {
    for (int i = 0; i < n->n_saved; ++i) {
        cg_tensor_free(n->saved[i].t);
        n->saved[i].t = NULL;
    }
    release_override_tensors(n);
    /* A registered op's call may keep more saved tensors than the slots. */
    if (n->op && n->op->backward == cg__registered_backward) cg__registered_release(n);
    /* A released custom entry never runs its backward again: its context
     * (and what it saved) goes now, not when the graph dies. */
    if (n->custom_backward && n->ctx_free) {
        cg_ctx_free_fn f = n->ctx_free;
        void *ctx = n->ctx;
        n->ctx_free = NULL;
        n->ctx = NULL;
        f(ctx);
    }
}

void cg__node_destroy(cg_node *n) {
    cg__hooks_free(n->hooks);
    release_override_tensors(n);
    override_decref(n->override);
    release_saved(n);
    for (int i = 0; i < n->n_inputs; ++i) {
        cg__node_decref(n->next[i].node);
        cg_tensor_free(n->next[i].leaf);
    }
    if (n->grad_buf)
        for (int i = 0; i < n->n_outputs; ++i) cg_tensor_free(n->grad_buf[i]);
    free(n->grad_buf);
    if (n->ctx_free) n->ctx_free(n->ctx);
    if (n->extra_free) n->extra_free(n->extra);
    if (n->custom_name != n->custom_name_buf) free(n->custom_name);
    cg__location_free(n->location);
    free(n);
}

void cg__node_decref(cg_node *n) {
    if (!n || --n->refcount > 0) return;
    cg__node_dispose(n);
}

static cg_status node_new(const cg_op *op, int n_inputs, cg_tensor *const *inputs,
                          int n_outputs, cg_tensor *const *outputs, cg_node **out) {
    /* One block: node, edges, needs_grad flags, output metadata. */
    size_t sz = sizeof(cg_node) + (size_t)n_inputs * sizeof(cg_edge) +
                (size_t)n_outputs * sizeof(cg_out_meta) + (size_t)n_inputs;
    cg_node *n = (cg_node *)calloc(1, sz);
    if (!n) return cg__err(CG_ERR_NOMEM, "out of memory recording '%s'", op ? op->name : "custom");
    n->next = (cg_edge *)(n + 1);
    n->out_meta = (cg_out_meta *)(n->next + n_inputs);
    n->needs_grad = (unsigned char *)(n->out_meta + n_outputs);
    n->op = op;
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    n->seq = next_seq++;
    for (int i = 0; i < n_inputs; ++i) {
        cg_tensor *t = inputs[i];
        if (!t || !t->requires_grad) continue;
        n->needs_grad[i] = 1;
        if (t->grad_fn) {
            n->next[i].node = t->grad_fn;
            ++t->grad_fn->refcount;
            n->next[i].input_nr = t->output_nr;
        } else {
            n->next[i].leaf = t;
            cg_tensor_retain(t);
        }
    }
    for (int i = 0; i < n_outputs; ++i) {
        cg_tensor *o = outputs[i];
        n->out_meta[i].dtype = o->dtype;
        n->out_meta[i].device = cg__dev(o);
        n->out_meta[i].ndim = o->ndim;
        memcpy(n->out_meta[i].shape, o->shape, sizeof o->shape);
    }
    *out = n;
    return CG_OK;
}

static void attach_outputs(cg_node *n, int n_outputs, cg_tensor *const *outputs) {
    for (int i = 0; i < n_outputs; ++i) {
        cg_tensor *o = outputs[i];
        n->out_meta[i].weak = o;
        cg__node_decref(o->grad_fn); /* outputs are fresh; defensive */
        o->grad_fn = n;
        o->output_nr = i;
        o->requires_grad = 1;
        ++n->refcount;
    }
}

/* ------------------------------------------------------------ overrides */
static __thread cg_override *override_top;
static __thread int64_t next_override_id = 1;

static void override_decref(cg_override *o) {
    if (!o || --o->refcount > 0) return;
    if (o->ctx_free) o->ctx_free(o->ctx);
    free(o->op_name);
    free(o);
}

cg_status cg_override_push(const char *op_name, cg_override_fn fn, void *ctx,
                           cg_ctx_free_fn ctx_free, int64_t *handle) {
    cg_override *o = NULL;
    cg_status st = CG_OK;
    if (!op_name || !fn) st = cg__err(CG_ERR_NULL, "cg_override_push: op_name or fn is NULL");
    else if (!(o = (cg_override *)calloc(1, sizeof *o)) ||
             !(o->op_name = (char *)malloc(strlen(op_name) + 1)))
        st = cg__err(CG_ERR_NOMEM, "cg_override_push: out of memory");
    if (st) {
        if (o) free(o);
        if (ctx_free) ctx_free(ctx);
        return st;
    }
    strcpy(o->op_name, op_name);
    o->refcount = 1;
    o->id = next_override_id++;
    o->fn = fn;
    o->ctx = ctx;
    o->ctx_free = ctx_free;
    o->outer = override_top;
    override_top = o;
    if (handle) *handle = o->id;
    return CG_OK;
}

cg_status cg_override_pop(int64_t handle) {
    cg_override *o = override_top;
    if (!o || o->id != handle)
        return cg__err(CG_ERR_VALUE, "cg_override_pop: %lld is not the innermost override of this thread",
                       (long long)handle);
    override_top = o->outer;
    override_decref(o);
    return CG_OK;
}

static cg_override *find_override(const char *name) {
    for (cg_override *o = override_top; o; o = o->outer)
        if ((o->op_name[0] == '*' && o->op_name[1] == '\0') || strcmp(o->op_name, name) == 0) return o;
    return NULL;
}

/* Keeps what an override needs: the inputs and detached output aliases. */
static cg_status attach_override(cg_node *n, cg_override *o, cg_tensor *const *inputs,
                                 cg_tensor *const *outputs) {
    int total = n->n_inputs + n->n_outputs;
    n->ov_tensors = (cg_tensor **)calloc((size_t)total, sizeof(cg_tensor *));
    if (!n->ov_tensors) return cg__err(CG_ERR_NOMEM, "out of memory recording an override");
    for (int i = 0; i < n->n_inputs; ++i) {
        n->ov_tensors[i] = inputs[i];
        cg_tensor_retain(inputs[i]);
    }
    for (int i = 0; i < n->n_outputs; ++i) {
        cg_tensor *out = outputs[i];
        CG_TRY(cg__view(out, out->ndim, out->shape, out->strides, out->offset,
                        &n->ov_tensors[n->n_inputs + i]));
    }
    n->override = o;
    ++o->refcount;
    return CG_OK;
}

static void release_override_tensors(cg_node *n) {
    if (!n->ov_tensors) return;
    for (int i = 0; i < n->n_inputs + n->n_outputs; ++i) cg_tensor_free(n->ov_tensors[i]);
    free(n->ov_tensors);
    n->ov_tensors = NULL;
}

static cg_status run_override(cg_node *n, cg_tensor *const *gout, cg_tensor **gin) {
    if (!n->ov_tensors)
        return cg__err(CG_ERR_AUTOGRAD,
                       "Trying to backward through the graph a second time (overridden op '%s'). Pass "
                       "retain_graph=True to the first backward if you need to backward twice.",
                       cg__node_name(n));
    int n_in = n->n_inputs, n_out = n->n_outputs, st_ok = 1;
    cg_tensor **outs = (cg_tensor **)calloc((size_t)n_out, sizeof *outs);
    int *needs = (int *)calloc((size_t)n_in + 1, sizeof *needs);
    cg_status st = (!outs || !needs) ? cg__err(CG_ERR_NOMEM, "out of memory") : CG_OK;
    /* Outputs are handed over linked to this entry (as saved outputs are). */
    for (int i = 0; i < n_out && !st; ++i) {
        cg_tensor *a = n->ov_tensors[n_in + i];
        st = cg__view(a, a->ndim, a->shape, a->strides, a->offset, &outs[i]);
        if (!st) {
            outs[i]->grad_fn = n;
            ++n->refcount;
            outs[i]->output_nr = i;
            outs[i]->requires_grad = 1;
        }
    }
    for (int i = 0; i < n_in && needs; ++i) needs[i] = n->needs_grad[i];
    if (!st) {
        cg_clear_error();
        st = n->override->fn(n->override->ctx, n->op ? n->op->name : "?", n_in, n->ov_tensors, n_out,
                             outs, gout, needs, gin);
        if (st && cg_last_error()[0] == '\0')
            cg__err(st, "backward override of '%s' failed with %s", cg__node_name(n), cg_status_name(st));
    }
    for (int i = 0; i < n_in && !st; ++i) {
        cg_tensor *g = gin[i], *x = n->ov_tensors[i];
        if (!g) continue;
        if (!cg__same_shape(g, x) || g->dtype != x->dtype) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            st = cg__err(CG_ERR_SHAPE,
                         "backward override of '%s' returned a gradient of shape %s dtype %s for input %d "
                         "of shape %s dtype %s",
                         cg__node_name(n), cg__shape_str(g->ndim, g->shape, b1, sizeof b1),
                         cg_dtype_name(g->dtype), i, cg__shape_str(x->ndim, x->shape, b2, sizeof b2),
                         cg_dtype_name(x->dtype));
            st_ok = 0;
        }
    }
    (void)st_ok;
    if (st)
        for (int i = 0; i < n_in; ++i) {
            cg_tensor_free(gin[i]);
            gin[i] = NULL;
        }
    if (outs)
        for (int i = 0; i < n_out; ++i) cg_tensor_free(outs[i]);
    free(outs);
    free(needs);
    return st;
}

cg_status cg__record(const cg_op *op, int n_inputs, cg_tensor *const *inputs, int n_outputs,
                     cg_tensor *const *outputs, cg_node **node_out) {
    cg_node *n;
    CG_TRY(node_new(op, n_inputs, inputs, n_outputs, outputs, &n));
    if (override_top) {
        cg_override *o = find_override(op->name);
        cg_status st = o ? attach_override(n, o, inputs, outputs) : CG_OK;
        if (st) {
            cg__node_destroy(n);
            return st;
        }
    }
    if (cg__anomaly_on()) {
        cg_status st = cg__anomaly_record(n, n_inputs, inputs, n_outputs, outputs);
        if (st) {
            cg__node_destroy(n);
            return st;
        }
    }
    attach_outputs(n, n_outputs, outputs);
    if (node_out) *node_out = n;
    return CG_OK;
}

cg_status cg__save(cg_node *node, cg_tensor *t) {
    if (node->n_saved >= CG_NODE_MAX_SAVED)
        return cg__err(CG_ERR_UNSUPPORTED, "'%s': too many saved tensors", cg__node_name(node));
    cg__save_into(&node->saved[node->n_saved++], t);
    return CG_OK;
}

void cg__save_into(cg_saved *s, cg_tensor *t) {
    cg_tensor_retain(t);
    s->t = t;
    s->storage = t ? t->storage : NULL;
    s->version = t ? t->storage->version : 0;
    s->is_output = 0;
}

cg_status cg__save_output(cg_node *node, int output_nr) {
    if (node->n_saved >= CG_NODE_MAX_SAVED)
        return cg__err(CG_ERR_UNSUPPORTED, "'%s': too many saved tensors", cg__node_name(node));
    CG_TRY(cg__save_output_into(node, output_nr, &node->saved[node->n_saved]));
    ++node->n_saved;
    return CG_OK;
}

cg_status cg__save_output_into(cg_node *node, int output_nr, cg_saved *s) {
    if (output_nr < 0 || output_nr >= node->n_outputs || !node->out_meta[output_nr].weak)
        return cg__err(CG_ERR_INDEX, "'%s': no output %d to save", cg__node_name(node), output_nr);
    /* The output holds the node, so the node keeps only a detached alias and
     * cg__saved rebuilds the link when unpacking. */
    cg_tensor *out = node->out_meta[output_nr].weak;
    cg_tensor *alias;
    CG_TRY(cg__view(out, out->ndim, out->shape, out->strides, out->offset, &alias));
    s->t = alias;
    s->storage = alias->storage;
    s->version = out->storage->version;
    s->is_output = output_nr + 1;
    return CG_OK;
}

cg_status cg__saved(cg_node *node, int i, cg_tensor **out) {
    *out = NULL;
    if (node->released)
        return cg__err(CG_ERR_AUTOGRAD,
                       "Trying to backward through the graph a second time (op '%s'): its saved tensors "
                       "were freed by the first backward. Pass retain_graph=True to the first backward "
                       "if you need to backward twice.",
                       cg__node_name(node));
    if (i < 0 || i >= node->n_saved)
        return cg__err(CG_ERR_INDEX, "'%s': saved tensor %d does not exist", cg__node_name(node), i);
    return cg__saved_unpack(node, &node->saved[i], out);
}

cg_status cg__saved_unpack(cg_node *node, const cg_saved *s, cg_tensor **out) {
    *out = NULL;
    if (!s->t) {
        return CG_OK; /* a NULL was saved (optional argument) */
    }
    if (s->t->storage != s->storage)
        return cg__err(CG_ERR_AUTOGRAD,
                       "one of the tensors needed for gradient computation had its data replaced "
                       "(a .data assignment / cg_tensor_set_data) after op '%s' saved it",
                       cg__node_name(node));
    if (s->t->storage->version != s->version)
        return cg__err(CG_ERR_AUTOGRAD,
                       "one of the tensors needed for gradient computation has been modified by an "
                       "in-place operation: op '%s' saved it at version %llu, it is now at version %llu",
                       cg__node_name(node), (unsigned long long)s->version,
                       (unsigned long long)s->t->storage->version);
    if (s->is_output) {
        cg_tensor *t;
        CG_TRY(cg__view(s->t, s->t->ndim, s->t->shape, s->t->strides, s->t->offset, &t));
        t->grad_fn = node;
        ++node->refcount;
        t->output_nr = s->is_output - 1;
        t->requires_grad = 1;
        *out = t;
        return CG_OK;
    }
    cg_tensor_retain(s->t);
    *out = s->t;
    return CG_OK;
}

/* ------------------------------------------------------------ custom ops */
/* A custom backward's gradient for input i, against that input's dtype and
 * shape (the producing entry's output metadata, or the leaf): the same is
 * kept, the input's broadcast shape is summed down to it (as PyTorch), any
 * other shape or dtype is an error naming the op and the input. */
static cg_status custom_check_grad(cg_node *node, int i, cg_tensor **g) {
    const cg_edge *e = &node->next[i];
    cg_dtype dtype;
    int ndim;
    const int64_t *shape;
    if (!*g || !node->needs_grad[i] || (!e->node && !e->leaf)) return CG_OK;
    int device;
    if (e->node) {
        const cg_out_meta *m = &e->node->out_meta[e->input_nr];
        dtype = m->dtype, ndim = m->ndim, shape = m->shape, device = m->device;
    } else {
        dtype = e->leaf->dtype, ndim = e->leaf->ndim, shape = e->leaf->shape, device = cg__dev(e->leaf);
    }
    char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
    if (!(*g)->layout && cg__dev(*g) != device)
        return cg__err(CG_ERR_VALUE,
                       "custom backward of '%s' returned a gradient on device '%s' for input %d on device '%s'",
                       cg__node_name(node), cg_device_name(cg__dev(*g)), i, cg_device_name(device));
    if ((*g)->dtype != dtype)
        return cg__err(CG_ERR_DTYPE,
                       "custom backward of '%s' returned a gradient of dtype %s for input %d of dtype %s",
                       cg__node_name(node), cg_dtype_name((*g)->dtype), i, cg_dtype_name(dtype));
    if ((*g)->ndim == ndim && memcmp((*g)->shape, shape, (size_t)ndim * sizeof *shape) == 0)
        return CG_OK;
    cg_tensor *red = NULL;
    if (cg_sum_to_shape(*g, ndim, shape, &red) != CG_OK)
        return cg__err(CG_ERR_SHAPE,
                       "custom backward of '%s' returned a gradient of shape %s for input %d of shape %s",
                       cg__node_name(node), cg__shape_str((*g)->ndim, (*g)->shape, b1, sizeof b1), i,
                       cg__shape_str(ndim, shape, b2, sizeof b2));
    cg_tensor_free(*g);
    *g = red;
    return CG_OK;
}

cg_status cg__check_custom_grad(cg_node *node, int i, cg_tensor **g) { return custom_check_grad(node, i, g); }

static cg_status custom_backward(cg_node *node, cg_tensor *const *gout, cg_tensor **gin) {
    if (node->released)
        return cg__err(CG_ERR_AUTOGRAD,
                       "Trying to backward through the graph a second time (op '%s'). Pass "
                       "retain_graph=True to the first backward if you need to backward twice.",
                       cg__node_name(node));
    int needs[64];
    int *nd = needs;
    if (node->n_inputs > 64) {
        nd = (int *)malloc((size_t)node->n_inputs * sizeof(int));
        if (!nd) return cg__err(CG_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < node->n_inputs; ++i) nd[i] = node->needs_grad[i];
    cg_clear_error();
    cg_status st = node->custom_backward(node->ctx, node->n_outputs, gout, node->n_inputs, nd, gin);
    if (nd != needs) free(nd);
    if (st != CG_OK) {
        if (cg_last_error()[0] == '\0')
            cg__err(st, "custom backward of '%s' failed with %s", cg__node_name(node), cg_status_name(st));
    }
    /* The callback's gradients flow into other entries' backwards, which
     * trust their shapes: check each against its input, as PyTorch does. */
    for (int i = 0; i < node->n_inputs && st == CG_OK; ++i)
        st = custom_check_grad(node, i, &gin[i]);
    if (st != CG_OK) {
        for (int i = 0; i < node->n_inputs; ++i) {
            cg_tensor_free(gin[i]);
            gin[i] = NULL;
        }
        return st;
    }
    return CG_OK;
}

static const cg_op OP_CUSTOM = {"custom", custom_backward};

cg_status cg_record_custom(const char *name, int n_inputs, cg_tensor *const *inputs,
                           int n_outputs, cg_tensor *const *outputs,
                           cg_custom_backward_fn backward, void *ctx, cg_ctx_free_fn ctx_free) {
    cg_status st = CG_OK;
    if (n_inputs < 0 || n_outputs < 1 || (n_inputs && !inputs) || !outputs || !backward) {
        st = cg__err(CG_ERR_NULL, "cg_record_custom: bad arguments (n_inputs=%d n_outputs=%d)", n_inputs, n_outputs);
        goto fail;
    }
    for (int i = 0; i < n_outputs; ++i) {
        if (!outputs[i]) {
            st = cg__err(CG_ERR_NULL, "cg_record_custom: output %d is NULL", i);
            goto fail;
        }
        if (outputs[i]->grad_fn) {
            st = cg__err(CG_ERR_AUTOGRAD, "cg_record_custom: output %d already has a grad_fn ('%s')", i,
                         cg__node_name(outputs[i]->grad_fn));
            goto fail;
        }
    }
    if (!cg__wants_gradn(n_inputs, inputs)) goto fail; /* nothing to record: st == CG_OK */
    for (int i = 0; i < n_outputs; ++i)
        if (!cg__is_float(outputs[i]->dtype)) {
            st = cg__err(CG_ERR_DTYPE, "cg_record_custom: output %d has dtype %s; only floating outputs can carry gradients",
                         i, cg_dtype_name(outputs[i]->dtype));
            goto fail;
        }
    cg_node *n;
    st = node_new(&OP_CUSTOM, n_inputs, inputs, n_outputs, outputs, &n);
    if (st) goto fail;
    /* The node owns ctx before anything else can fail, so destroying it
     * frees ctx on every path below. */
    n->custom_backward = backward;
    n->ctx = ctx;
    n->ctx_free = ctx_free;
    size_t len = strlen(name ? name : "custom");
    /* Short names (almost all) live in the node: no allocation per call. */
    n->custom_name = len < sizeof n->custom_name_buf ? n->custom_name_buf : (char *)malloc(len + 1);
    if (!n->custom_name) {
        cg__node_destroy(n); /* frees ctx */
        return cg__err(CG_ERR_NOMEM, "out of memory");
    }
    memcpy(n->custom_name, name ? name : "custom", len + 1);
    if (cg__anomaly_on()) {
        st = cg__anomaly_record(n, n_inputs, inputs, n_outputs, outputs);
        if (st) {
            cg__node_destroy(n); /* frees ctx */
            return st;
        }
    }
    attach_outputs(n, n_outputs, outputs);
    return CG_OK;
fail:
    if (ctx_free) ctx_free(ctx);
    return st;
}

/* ---------------------------------------------------------------- engine */
typedef struct vec {
    cg_node **p;
    size_t n, cap;
} vec;

static int vec_push(vec *v, cg_node *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        cg_node **p = (cg_node **)realloc(v->p, cap * sizeof *p);
        if (!p) return 0;
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = x;
    return 1;
}

static int by_seq_desc(const void *a, const void *b) {
    uint64_t x = (*(cg_node *const *)a)->seq, y = (*(cg_node *const *)b)->seq;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Gradient bookkeeping: acc = acc + g (g consumed). */
static cg_status accumulate(cg_tensor **acc, cg_tensor *g) {
    if (!*acc) {
        *acc = g;
        return CG_OK;
    }
    if ((*acc)->layout || g->layout) return cg__sparse_accumulate(acc, g);
    cg_tensor *sum;
    cg_status st = cg_add(*acc, g, &sum);
    cg_tensor_free(g);
    if (st) return st;
    cg_tensor_free(*acc);
    *acc = sum;
    return CG_OK;
}

static int owns_exclusively(const cg_tensor *g) {
    return g->refcount == 1 && g->storage->refcount == 1 && !g->requires_grad && !g->grad_fn &&
           cg__is_contig(g) && !g->storage->release;
}

/* Row-sparse gradients into .grad (PyTorch's rules): the first one is kept
 * as it is (its parts copied when someone else holds them, since clipping
 * and optimizers write the values in place), sparse + sparse concatenates
 * without densifying, and a sparse/dense mix densifies. */
static cg_status accumulate_leaf_sparse(cg_tensor *leaf, cg_tensor *g, int create_graph) {
    if (!leaf->grad) {
        if (!g->layout || (g->refcount == 1 && g->sp_values->refcount == 1 &&
                           g->sp_indices->refcount == 1 && g->sp_values->storage->refcount == 1)) {
            leaf->grad = g;
            return CG_OK;
        }
        cg_tensor *vc = NULL, *ic = NULL;
        cg_tensor *v = g->sp_values, *i = g->sp_indices;
        cg_status st = cg__new_on(cg__dev(v), v->dtype, v->ndim, v->shape, 0, &vc);
        if (!st) st = cg__copy_elems(vc, v);
        if (!st) st = cg__new_on(cg__dev(i), CG_INT64, 1, i->shape, 0, &ic);
        if (!st) st = cg__copy_elems(ic, i);
        if (!st) st = cg__sparse_make(ic, vc, g->shape[0], g->sp_coalesced, &leaf->grad);
        cg_tensor_free(vc);
        cg_tensor_free(ic);
        cg_tensor_free(g);
        return st;
    }
    cg_tensor *old = leaf->grad;
    if (g->layout && !old->layout && !create_graph && !old->requires_grad && cg__is_contig(old)) {
        cg_status st = cg__sparse_add_into(old, g); /* dense += sparse, in place */
        cg_tensor_free(g);
        return st;
    }
    cg_tensor *sum;
    cg_status st = cg_sparse_add(old, g, &sum);
    cg_tensor_free(g);
    if (st) return st;
    leaf->grad = sum;
    cg_tensor_free(old);
    return CG_OK;
}

/* leaf.grad += g (g consumed). In-place when nothing is being recorded. */
static cg_status accumulate_leaf(cg_tensor *leaf, cg_tensor *g, int create_graph) {
    if (g->layout || (leaf->grad && leaf->grad->layout))
        return accumulate_leaf_sparse(leaf, g, create_graph);
    if (!leaf->grad) {
        if (g == leaf) { /* root == leaf with itself as the gradient: never its own grad */
            cg_tensor *c;
            cg_status st = cg_clone(g, &c);
            cg_tensor_free(g);
            if (st) return st;
            leaf->grad = c;
            return CG_OK;
        }
        if (create_graph || owns_exclusively(g)) {
            leaf->grad = g;
            return CG_OK;
        }
        cg_tensor *c;
        cg_status st = cg__new_on(cg__dev(g), g->dtype, g->ndim, g->shape, 0, &c);
        if (!st) st = cg__copy_elems(c, g);
        cg_tensor_free(g);
        if (st) {
            cg_tensor_free(c);
            return st;
        }
        leaf->grad = c;
        return CG_OK;
    }
    if (create_graph || leaf->grad->requires_grad) {
        cg_tensor *sum;
        cg_status st = cg_add(leaf->grad, g, &sum);
        cg_tensor_free(g);
        if (st) return st;
        cg_tensor_free(leaf->grad);
        leaf->grad = sum;
        return CG_OK;
    }
    int prev = cg_set_grad_enabled(0);
    cg_status st = cg_add_(leaf->grad, g, 1.0);
    cg_set_grad_enabled(prev);
    cg_tensor_free(g);
    return st;
}

static cg_status check_grad_matches(const char *what, const cg_tensor *t, const cg_tensor *g) {
    if (!cg__same_shape(t, g)) {
        char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
        return cg__err(CG_ERR_SHAPE, "%s: gradient has shape %s but the tensor has shape %s", what,
                       cg__shape_str(g->ndim, g->shape, b1, sizeof b1),
                       cg__shape_str(t->ndim, t->shape, b2, sizeof b2));
    }
    if (g->dtype != t->dtype)
        return cg__err(CG_ERR_DTYPE, "%s: gradient has dtype %s but the tensor has dtype %s", what,
                       cg_dtype_name(g->dtype), cg_dtype_name(t->dtype));
    if (!g->layout && !t->layout && cg__dev(g) != cg__dev(t))
        return cg__err(CG_ERR_VALUE, "%s: gradient is on device '%s' but the tensor is on '%s'", what,
                       cg_device_name(cg__dev(g)), cg_device_name(cg__dev(t)));
    return CG_OK;
}

/* Runs the grad hooks of list h that watch output_nr on *g (replacing it). */
static cg_status run_grad_hooks(cg_hook *h, int output_nr, cg_tensor **g, const char *what) {
    for (; h; h = h->next) {
        if (h->post_accumulate || h->output_nr != output_nr || !*g) continue;
        cg_tensor *rep = NULL;
        cg_clear_error();
        cg_status st = h->fn(h->ctx, *g, &rep);
        if (st) {
            cg_tensor_free(rep);
            if (cg_last_error()[0] == '\0')
                cg__err(st, "a gradient hook on %s failed with %s", what, cg_status_name(st));
            return st;
        }
        if (!rep) continue;
        if (!cg__same_shape(rep, *g) || rep->dtype != (*g)->dtype) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            cg__err(CG_ERR_SHAPE,
                    "a gradient hook on %s returned shape %s dtype %s; the gradient has shape %s dtype %s",
                    what, cg__shape_str(rep->ndim, rep->shape, b1, sizeof b1), cg_dtype_name(rep->dtype),
                    cg__shape_str((*g)->ndim, (*g)->shape, b2, sizeof b2), cg_dtype_name((*g)->dtype));
            cg_tensor_free(rep);
            return CG_ERR_SHAPE;
        }
        if (!rep->layout && !(*g)->layout && cg__dev(rep) != cg__dev(*g)) {
            cg__err(CG_ERR_VALUE, "a gradient hook on %s returned a tensor on device '%s'; the gradient "
                                  "is on '%s'", what, cg_device_name(cg__dev(rep)), cg_device_name(cg__dev(*g)));
            cg_tensor_free(rep);
            return CG_ERR_VALUE;
        }
        cg_tensor_free(*g);
        *g = rep;
    }
    return CG_OK;
}

/* Leaf gradients of one sweep are summed in leaf->engine_grad and handed
 * over at the end, so a leaf's hooks see its total gradient once. */
typedef struct leafvec {
    cg_tensor **p;
    size_t n, cap;
} leafvec;

static cg_status leaf_collect(leafvec *lv, cg_tensor *leaf, cg_tensor *g, uint64_t ep) {
    if (leaf->engine_mark != ep) {
        if (lv->n == lv->cap) {
            size_t cap = lv->cap ? lv->cap * 2 : 16;
            cg_tensor **p = (cg_tensor **)realloc(lv->p, cap * sizeof *p);
            if (!p) {
                cg_tensor_free(g);
                return cg__err(CG_ERR_NOMEM, "backward: out of memory");
            }
            lv->p = p;
            lv->cap = cap;
        }
        lv->p[lv->n++] = leaf;
        leaf->engine_mark = ep;
        leaf->engine_grad = NULL;
    }
    return accumulate(&leaf->engine_grad, g);
}

/* The reverse sweep. inputs == NULL: accumulate into leaves' .grad
 * (cg_backward). Otherwise capture gradients for inputs into grads[]
 * (cg_grad) and leave .grad alone. */
static cg_status run_engine(int n_roots, cg_tensor *const *roots, cg_tensor *const *root_grads,
                            int n_inputs, cg_tensor *const *inputs, cg_tensor **grads,
                            int retain_graph, int create_graph) {
    cg_status st = CG_OK;
    vec order = {0}, stack = {0};
    leafvec leaves = {0};
    cg_tensor **seeds = (cg_tensor **)calloc((size_t)n_roots + 1, sizeof *seeds);
    if (!seeds) return cg__err(CG_ERR_NOMEM, "backward: out of memory");
    int prev_mode = grad_enabled;
    uint64_t my_epoch = ++epoch;

    /* 1. Seed gradients. */
    for (int r = 0; r < n_roots; ++r) {
        cg_tensor *root = roots[r];
        if (!root) {
            st = cg__err(CG_ERR_NULL, "backward: output %d is NULL", r);
            goto done;
        }
        if (!root->requires_grad) {
            st = cg__err(CG_ERR_AUTOGRAD,
                         "element %d of tensors does not require grad and does not have a grad_fn", r);
            goto done;
        }
        cg_tensor *g = root_grads ? root_grads[r] : NULL;
        if (g) {
            st = check_grad_matches("backward", root, g);
            if (!st && g->layout)
                st = cg__err(CG_ERR_UNSUPPORTED, "backward: the gradient of output %d is row-sparse; "
                                                 "pass a dense gradient (to_dense())", r);
            if (st) goto done;
            cg_tensor_retain(g);
        } else {
            if (root->numel != 1) {
                char b[CG_SHAPE_STR_LEN];
                st = cg__err(CG_ERR_AUTOGRAD,
                             "grad can be implicitly created only for outputs with one element; output %d "
                             "has shape %s: pass a gradient",
                             r, cg__shape_str(root->ndim, root->shape, b, sizeof b));
                goto done;
            }
            st = cg_full(root->dtype, root->ndim, root->shape, 1.0, &g);
            if (!st && cg__dev(root)) {
                cg_tensor *h = g;
                st = cg_to_device(h, cg__dev(root), &g);
                cg_tensor_free(h);
            }
            if (st) goto done;
        }
        seeds[r] = g;
    }

    /* 2. Collect reachable nodes (explicit stack). */
    for (int r = 0; r < n_roots; ++r) {
        cg_node *n = roots[r]->grad_fn;
        if (n && n->mark != my_epoch) {
            n->mark = my_epoch;
            if (!vec_push(&stack, n)) goto nomem;
        }
    }
    while (stack.n) {
        cg_node *n = stack.p[--stack.n];
        if (!vec_push(&order, n)) goto nomem;
        for (int i = 0; i < n->n_inputs; ++i) {
            cg_node *m = n->next[i].node;
            if (m && m->mark != my_epoch) {
                m->mark = my_epoch;
                if (!vec_push(&stack, m)) goto nomem;
            }
        }
    }
    if (order.n > 1) qsort(order.p, order.n, sizeof *order.p, by_seq_desc);

    /* 3. For cg_grad: prune to nodes that lead to a requested input. Nodes
     * are visited producers-first (increasing seq). */
    if (inputs) {
        for (size_t k = order.n; k-- > 0;) {
            cg_node *n = order.p[k];
            n->needed = 0;
            for (int j = 0; j < n_inputs && !n->needed; ++j)
                if (inputs[j]->grad_fn == n) n->needed = 1;
            for (int i = 0; i < n->n_inputs && !n->needed; ++i) {
                cg_edge *e = &n->next[i];
                if (e->node && e->node->mark == my_epoch && e->node->needed) n->needed = 1;
                if (e->leaf)
                    for (int j = 0; j < n_inputs; ++j)
                        if (inputs[j] == e->leaf) n->needed = 1;
            }
        }
    }

    for (size_t k = 0; k < order.n; ++k) {
        cg_node *n = order.p[k];
        if (!n->grad_buf) {
            n->grad_buf = (cg_tensor **)calloc((size_t)n->n_outputs, sizeof(cg_tensor *));
            if (!n->grad_buf) goto nomem;
        }
    }
    grad_enabled = create_graph;
    for (int r = 0; r < n_roots && !st; ++r) {
        cg_tensor *root = roots[r];
        cg_tensor *g = seeds[r];
        seeds[r] = NULL;
        if (root->grad_fn)
            st = accumulate(&root->grad_fn->grad_buf[root->output_nr], g);
        else /* a leaf root: d root / d root */
            st = leaf_collect(&leaves, root, g, my_epoch);
    }
    grad_enabled = prev_mode;
    if (st) goto done;

    /* 4. Run nodes in decreasing sequence order. */
    for (size_t k = 0; k < order.n; ++k) {
        cg_node *n = order.p[k];
        if (inputs && !n->needed) continue;
        if (n->hooks) {
            grad_enabled = create_graph;
            for (int o = 0; o < n->n_outputs && !st; ++o)
                st = run_grad_hooks(n->hooks, o, &n->grad_buf[o], cg__node_name(n));
            grad_enabled = prev_mode;
            if (st) goto done;
        }
        int any = 0;
        for (int o = 0; o < n->n_outputs; ++o) any |= n->grad_buf[o] != NULL;
        if (inputs)
            for (int j = 0; j < n_inputs; ++j)
                if (inputs[j]->grad_fn == n && n->grad_buf[inputs[j]->output_nr]) {
                    cg_tensor *g = n->grad_buf[inputs[j]->output_nr];
                    cg_tensor_retain(g);
                    grad_enabled = create_graph;
                    st = accumulate(&grads[j], g);
                    grad_enabled = prev_mode;
                    if (st) goto done;
                }
        if (!any) {
            if (!retain_graph && !inputs) {
                release_saved(n);
                n->released = 1;
            }
            continue;
        }
        if (n->released) {
            st = cg__err(CG_ERR_AUTOGRAD,
                         "Trying to backward through the graph a second time (op '%s'): its saved tensors "
                         "were freed by the first backward. Pass retain_graph=True to the first backward "
                         "if you need to backward twice.",
                         cg__node_name(n));
            goto done;
        }
        for (int o = 0; o < n->n_outputs; ++o) {
            if (n->grad_buf[o]) continue;
            cg_out_meta *m = &n->out_meta[o];
            st = cg__new_on(m->device, m->dtype, m->ndim, m->shape, 1, &n->grad_buf[o]);
            if (st) goto done;
        }
        if (cg__entry_hooks_on()) {
            grad_enabled = 0; /* observers look; they do not record */
            st = cg__run_entry_hooks(n, n->n_outputs, n->grad_buf);
            grad_enabled = prev_mode;
            if (st) goto done;
        }
        /* Pruned inputs need no gradient in cg_grad mode. */
        unsigned char saved_needs[64];
        int prune = inputs && n->n_inputs <= 64;
        if (prune) {
            memcpy(saved_needs, n->needs_grad, (size_t)n->n_inputs);
            for (int i = 0; i < n->n_inputs; ++i) {
                cg_edge *e = &n->next[i];
                int want = 0;
                if (e->node && e->node->mark == my_epoch && e->node->needed) want = 1;
                if (e->leaf)
                    for (int j = 0; j < n_inputs; ++j)
                        if (inputs[j] == e->leaf) want = 1;
                n->needs_grad[i] = (unsigned char)(n->needs_grad[i] && want);
            }
        }
        cg_tensor *gin_small[8] = {0};
        cg_tensor **gin = gin_small;
        if (n->n_inputs > 8) {
            gin = (cg_tensor **)calloc((size_t)n->n_inputs, sizeof *gin);
            if (!gin) goto nomem;
        }
        grad_enabled = create_graph;
        st = n->override ? run_override(n, n->grad_buf, gin) : n->op->backward(n, n->grad_buf, gin);
        grad_enabled = prev_mode;
        if (!st && cg__anomaly_on())
            st = cg__anomaly_backward(n, n->n_outputs, n->grad_buf, n->n_inputs, gin);
        if (prune) memcpy(n->needs_grad, saved_needs, (size_t)n->n_inputs);
        for (int o = 0; o < n->n_outputs; ++o) {
            cg_tensor_free(n->grad_buf[o]);
            n->grad_buf[o] = NULL;
        }
        if (!st && !retain_graph) {
            release_saved(n);
            n->released = 1;
        }
        /* Route input gradients. */
        grad_enabled = create_graph;
        for (int i = 0; i < n->n_inputs; ++i) {
            cg_tensor *g = gin[i];
            gin[i] = NULL;
            if (!g) continue;
            cg_edge *e = &n->next[i];
            if (!st && n->needs_grad[i] && e->node && g->layout &&
                (e->node->override || !e->node->op || !cg__op_takes_sparse_grads(e->node->op))) {
                /* Only leaves and the ops that say so (a device move) keep
                 * row-sparse gradients; the other ops' backwards, and
                 * overrides, take dense ones. */
                cg_tensor *d = NULL;
                st = cg_sparse_to_dense(g, &d);
                cg_tensor_free(g);
                g = d;
            }
            if (st || !n->needs_grad[i])
                cg_tensor_free(g);
            else if (e->node)
                st = accumulate(&e->node->grad_buf[e->input_nr], g);
            else if (e->leaf)
                st = leaf_collect(&leaves, e->leaf, g, my_epoch);
            else
                cg_tensor_free(g);
        }
        grad_enabled = prev_mode;
        if (gin != gin_small) free(gin);
        if (st) goto done;
    }

    /* 5. Hand the leaves their gradients (hooks first). */
    grad_enabled = create_graph;
    for (size_t k = 0; k < leaves.n && !st; ++k) {
        cg_tensor *leaf = leaves.p[k];
        cg_tensor *g = leaf->engine_grad;
        leaf->engine_grad = NULL;
        st = run_grad_hooks(leaf->hooks, 0, &g, "a leaf tensor");
        if (st) {
            cg_tensor_free(g);
            break;
        }
        if (inputs) {
            for (int j = 0; j < n_inputs && !st; ++j)
                if (inputs[j] == leaf) {
                    cg_tensor_retain(g);
                    st = accumulate(&grads[j], g);
                }
            cg_tensor_free(g);
        } else if (!cg__same_shape(leaf, g) || leaf->dtype != g->dtype) {
            char b1[CG_SHAPE_STR_LEN], b2[CG_SHAPE_STR_LEN];
            st = cg__err(CG_ERR_AUTOGRAD,
                         "a leaf changed to shape %s dtype %s (a .data assignment?) after this graph "
                         "was recorded for shape %s dtype %s",
                         cg__shape_str(leaf->ndim, leaf->shape, b1, sizeof b1), cg_dtype_name(leaf->dtype),
                         cg__shape_str(g->ndim, g->shape, b2, sizeof b2), cg_dtype_name(g->dtype));
            cg_tensor_free(g);
        } else {
            st = accumulate_leaf(leaf, g, create_graph);
            for (cg_hook *h = leaf->hooks; h && !st; h = h->next)
                if (h->post_accumulate) {
                    cg_clear_error();
                    st = h->post_fn(h->ctx, leaf);
                    if (st && cg_last_error()[0] == '\0')
                        cg__err(st, "a post-accumulate hook failed with %s", cg_status_name(st));
                }
        }
    }
    grad_enabled = prev_mode;
    goto done;
nomem:
    st = cg__err(CG_ERR_NOMEM, "backward: out of memory");
done:
    grad_enabled = prev_mode;
    for (size_t k = 0; k < order.n; ++k) {
        cg_node *n = order.p[k];
        if (n->grad_buf) {
            for (int o = 0; o < n->n_outputs; ++o) cg_tensor_free(n->grad_buf[o]);
            free(n->grad_buf);
            n->grad_buf = NULL;
        }
    }
    for (size_t k = 0; k < leaves.n; ++k) {
        cg_tensor_free(leaves.p[k]->engine_grad);
        leaves.p[k]->engine_grad = NULL;
    }
    for (int r = 0; r < n_roots; ++r) cg_tensor_free(seeds[r]);
    free(seeds);
    free(leaves.p);
    free(order.p);
    free(stack.p);
    return st;
}

/* ----------------------------------------------------------------- hooks */
static __thread int64_t next_hook_id = 1;

void cg__hooks_free(cg_hook *h) {
    while (h) {
        cg_hook *next = h->next;
        if (h->ctx_free) h->ctx_free(h->ctx);
        free(h);
        h = next;
    }
}

static cg_status add_hook(cg_tensor *t, cg_hook *proto, int64_t *handle) {
    cg_hook *h = (cg_hook *)malloc(sizeof *h);
    if (!h) {
        if (proto->ctx_free) proto->ctx_free(proto->ctx);
        return cg__err(CG_ERR_NOMEM, "register_hook: out of memory");
    }
    *h = *proto;
    h->id = next_hook_id++;
    h->next = NULL;
    cg_hook **slot = t->grad_fn ? &t->grad_fn->hooks : &t->hooks;
    h->output_nr = t->grad_fn ? t->output_nr : 0;
    while (*slot) slot = &(*slot)->next; /* registration order */
    *slot = h;
    if (handle) *handle = h->id;
    return CG_OK;
}

cg_status cg_tensor_register_hook(cg_tensor *t, cg_grad_hook_fn fn, void *ctx,
                                  cg_ctx_free_fn ctx_free, int64_t *handle) {
    cg_status st = CG_OK;
    if (!t || !fn) st = cg__err(CG_ERR_NULL, "cg_tensor_register_hook: tensor or fn is NULL");
    else if (!t->requires_grad)
        st = cg__err(CG_ERR_AUTOGRAD, "cannot register a hook on a tensor that doesn't require gradient");
    if (st) {
        if (ctx_free) ctx_free(ctx);
        return st;
    }
    cg_hook proto = {0};
    proto.fn = fn;
    proto.ctx = ctx;
    proto.ctx_free = ctx_free;
    return add_hook(t, &proto, handle);
}

cg_status cg_tensor_register_post_accumulate_hook(cg_tensor *t, cg_post_accumulate_hook_fn fn,
                                                  void *ctx, cg_ctx_free_fn ctx_free,
                                                  int64_t *handle) {
    cg_status st = CG_OK;
    if (!t || !fn) st = cg__err(CG_ERR_NULL, "cg_tensor_register_post_accumulate_hook: tensor or fn is NULL");
    else if (!t->requires_grad)
        st = cg__err(CG_ERR_AUTOGRAD, "cannot register a hook on a tensor that doesn't require gradient");
    else if (t->grad_fn)
        st = cg__err(CG_ERR_AUTOGRAD, "post-accumulate-grad hooks can only be registered on leaf tensors");
    if (st) {
        if (ctx_free) ctx_free(ctx);
        return st;
    }
    cg_hook proto = {0};
    proto.post_accumulate = 1;
    proto.post_fn = fn;
    proto.ctx = ctx;
    proto.ctx_free = ctx_free;
    return add_hook(t, &proto, handle);
}

cg_status cg_tensor_remove_hook(cg_tensor *t, int64_t handle) {
    CG_CHECK_TD(t);
    cg_hook **slot = t->grad_fn ? &t->grad_fn->hooks : &t->hooks;
    for (; *slot; slot = &(*slot)->next)
        if ((*slot)->id == handle) {
            cg_hook *h = *slot;
            *slot = h->next;
            h->next = NULL;
            cg__hooks_free(h);
            return CG_OK;
        }
    return cg__err(CG_ERR_VALUE, "no hook with handle %lld on this tensor", (long long)handle);
}

cg_status cg_backward(cg_tensor *root, cg_tensor *grad, int retain_graph, int create_graph) {
    CG_CHECK_TD(root);
    cg_tensor *gs[1] = {grad};
    return run_engine(1, &root, gs, 0, NULL, NULL, retain_graph, create_graph);
}

cg_status cg_grad(int n_outputs, cg_tensor *const *outputs, cg_tensor *const *grad_outputs,
                  int n_inputs, cg_tensor *const *inputs, int retain_graph, int create_graph,
                  int allow_unused, cg_tensor **grads) {
    if (n_outputs < 1 || !outputs) return cg__err(CG_ERR_NULL, "cg_grad: no outputs");
    if (n_inputs < 1 || !inputs || !grads) return cg__err(CG_ERR_NULL, "cg_grad: no inputs");
    for (int j = 0; j < n_inputs; ++j) {
        grads[j] = NULL;
        if (!inputs[j]) return cg__err(CG_ERR_NULL, "cg_grad: input %d is NULL", j);
        if (!inputs[j]->requires_grad)
            return cg__err(CG_ERR_AUTOGRAD, "cg_grad: input %d does not require grad", j);
    }
    cg_status st = run_engine(n_outputs, outputs, grad_outputs, n_inputs, inputs, grads,
                              retain_graph, create_graph);
    if (!st && !allow_unused)
        for (int j = 0; j < n_inputs; ++j)
            if (!grads[j]) {
                st = cg__err(CG_ERR_AUTOGRAD,
                             "cg_grad: input %d was not used in the graph (pass allow_unused=True "
                             "to get None for it)",
                             j);
                break;
            }
    if (st)
        for (int j = 0; j < n_inputs; ++j) {
            cg_tensor_free(grads[j]);
            grads[j] = NULL;
        }
    return st;
}
