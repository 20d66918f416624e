/* observe.c -- tape-entry observers (cg_entry_hook_push): debugging hooks
 * that see the gradient flowing into every entry a backward runs, e.g. to
 * print or record per-op gradient statistics. A thread-local stack, so the
 * engine pays one pointer test per entry when none is installed. */
#include "cg_internal.h"

typedef struct cg_entry_hook {
    int64_t id;
    cg_entry_hook_fn fn;
    void *ctx;
    cg_ctx_free_fn ctx_free;
    struct cg_entry_hook *outer;
} cg_entry_hook;

static __thread cg_entry_hook *hook_top = NULL;
static __thread int64_t next_id = 1;

cg_status cg_entry_hook_push(cg_entry_hook_fn fn, void *ctx, cg_ctx_free_fn ctx_free,
                             int64_t *handle) {
    cg_entry_hook *h = NULL;
    cg_status st = CG_OK;
    if (!fn) st = cg__err(CG_ERR_NULL, "cg_entry_hook_push: fn is NULL");
    else if (!(h = (cg_entry_hook *)calloc(1, sizeof *h)))
        st = cg__err(CG_ERR_NOMEM, "cg_entry_hook_push: out of memory");
    if (st) {
        if (ctx_free) ctx_free(ctx);
        return st;
    }
    h->id = next_id++;
    h->fn = fn;
    h->ctx = ctx;
    h->ctx_free = ctx_free;
    h->outer = hook_top;
    hook_top = h;
    if (handle) *handle = h->id;
    return CG_OK;
}

cg_status cg_entry_hook_pop(int64_t handle) {
    cg_entry_hook *h = hook_top;
    if (!h || h->id != handle)
        return cg__err(CG_ERR_VALUE, "cg_entry_hook_pop: %lld is not the innermost entry hook of this thread",
                       (long long)handle);
    hook_top = h->outer;
    if (h->ctx_free) h->ctx_free(h->ctx);
    free(h);
    return CG_OK;
}

int cg__entry_hooks_on(void) { return hook_top != NULL; }

cg_status cg__run_entry_hooks(const cg_node *n, int n_outputs, cg_tensor *const *grad_outputs) {
    char loc[256];
    const char *where = cg__node_location(n, loc, sizeof loc);
    for (cg_entry_hook *h = hook_top; h; h = h->outer) {
        cg_clear_error();
        cg_status st = h->fn(h->ctx, cg__node_name(n), n->seq, where, n_outputs, grad_outputs);
        if (st) {
            if (cg_last_error()[0] == '\0')
                cg__err(st, "an entry hook failed at op '%s' with %s", cg__node_name(n), cg_status_name(st));
            return st;
        }
    }
    return CG_OK;
}
