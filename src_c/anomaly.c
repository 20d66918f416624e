/* anomaly.c -- NaN/Inf localisation on the tape (cg_set_anomaly_mode).
 *
 * While anomaly mode is on for a thread, every entry recorded there scans
 * its floating outputs once (the "finite flag per entry") and keeps where it
 * was created (an opaque tag from the location hook, formatted only when a
 * report needs it: Python's hook keeps the user's code object and line). The first entry whose forward produced a
 * non-finite value is remembered and reported through the anomaly hook; a
 * backward that computes a non-finite gradient fails naming the entry and
 * where it was created. Off (the default), the tape pays one thread-local
 * test per recorded op. */
#include <stdio.h>

#include "cg_internal.h"

static __thread int anomaly_on = 0;
static __thread int anomaly_seen = 0;
static __thread char anomaly_first[512];

static cg_location_fn location_fn = NULL;
static cg_location_str_fn location_str_fn = NULL;
static cg_location_free_fn location_free_fn = NULL;
static void *location_ctx = NULL;
static cg_anomaly_fn anomaly_fn = NULL;
static void *anomaly_ctx = NULL;

int cg_set_anomaly_mode(int enabled) {
    int prev = anomaly_on;
    anomaly_on = enabled != 0;
    if (anomaly_on && !prev) {
        anomaly_seen = 0;
        anomaly_first[0] = '\0';
    }
    return prev;
}

int cg_anomaly_mode(void) { return anomaly_on; }
int cg__anomaly_on(void) { return anomaly_on; }

void cg_set_location_hook(cg_location_fn fn, cg_location_str_fn str, cg_location_free_fn free_fn,
                          void *ctx) {
    location_fn = fn;
    location_str_fn = str;
    location_free_fn = free_fn;
    location_ctx = ctx;
}

void cg__location_free(void *tag) {
    if (tag && location_free_fn) location_free_fn(tag);
}

void cg_set_anomaly_hook(cg_anomaly_fn fn, void *ctx) {
    anomaly_fn = fn;
    anomaly_ctx = ctx;
}

const char *cg_anomaly_report(void) { return anomaly_first; }

/* Non-finite elements of a floating tensor (any strides, row-sparse
 * included); 0 for int/bool. The one-pass statistics kernel counts them. */
int64_t cg__count_nonfinite(const cg_tensor *t) {
    if (!t || !cg__is_float(t->dtype) || t->numel == 0) return 0;
    cg_stats st; /* one pass, on the tensor's own device */
    if (cg_tensor_stats(t, &st) != CG_OK) {
        cg_clear_error();
        return 0;
    }
    return st.nonfinite;
}

const char *cg__node_location(const cg_node *n, char *buf, size_t size) {
    if (!n->location || !location_str_fn || size == 0) return NULL;
    buf[0] = '\0';
    location_str_fn(n->location, buf, size);
    return buf[0] ? buf : NULL;
}

/* The entry's creation site, formatted into buf, for messages. */
static const char *where(const cg_node *n, char *buf, size_t size) {
    const char *w = cg__node_location(n, buf, size);
    return w ? w : "an unknown location";
}

/* What kind of non-finite values t holds, for messages. */
static const char *kind_of(const cg_tensor *t) {
    int nan = 0, inf = 0;
    if (t->layout) t = t->sp_values;
    if (t->dtype == CG_FLOAT32 || t->dtype == CG_FLOAT64) {
        cg_tensor *c = NULL; /* a contiguous host copy (device tensors included) */
        if (cg__new(t->dtype, t->ndim, t->shape, 0, &c) == CG_OK && cg__copy_elems(c, t) == CG_OK) {
            for (int64_t i = 0; i < c->numel && !(nan && inf); ++i) {
                double v = cg__load(cg__ptr(c), c->dtype, i);
                nan |= isnan(v);
                inf |= isinf(v);
            }
        }
        cg_tensor_free(c);
        cg_clear_error();
    }
    return nan && inf ? "nan and inf" : nan ? "nan" : "inf";
}

cg_status cg__anomaly_record(cg_node *n, int n_inputs, cg_tensor *const *inputs, int n_outputs,
                             cg_tensor *const *outputs) {
    if (location_fn) n->location = location_fn(location_ctx);
    char loc[256];
    for (int o = 0; o < n_outputs; ++o) {
        if (!cg__count_nonfinite(outputs[o])) continue;
        n->nonfinite_out = 1;
        if (anomaly_seen) return CG_OK;
        anomaly_seen = 1;
        int bad_in = -1;
        for (int i = 0; i < n_inputs && bad_in < 0; ++i)
            if (inputs[i] && cg__count_nonfinite(inputs[i])) bad_in = i;
        if (bad_in < 0)
            snprintf(anomaly_first, sizeof anomaly_first,
                     "op '%s' (created at %s) produced %s in output %d from finite inputs",
                     cg__node_name(n), where(n, loc, sizeof loc), kind_of(outputs[o]), o);
        else
            snprintf(anomaly_first, sizeof anomaly_first,
                     "op '%s' (created at %s) produced %s in output %d; its input %d already held "
                     "non-finite values%s",
                     cg__node_name(n), where(n, loc, sizeof loc), kind_of(outputs[o]), o, bad_in,
                     inputs[bad_in]->grad_fn ? "" : " (a tensor not produced on the tape)");
        if (anomaly_fn) {
            cg_clear_error();
            cg_status st = anomaly_fn(anomaly_ctx, anomaly_first);
            if (st && cg_last_error()[0] == '\0') cg__err(st, "the anomaly hook failed");
            return st;
        }
        return CG_OK;
    }
    return CG_OK;
}

cg_status cg__anomaly_backward(const cg_node *n, int n_grad_outputs, cg_tensor *const *grad_outputs,
                               int n_inputs, cg_tensor *const *grad_inputs) {
    char loc[256];
    for (int i = 0; i < n_inputs; ++i) {
        if (!grad_inputs[i] || !cg__count_nonfinite(grad_inputs[i])) continue;
        /* Only now (the error path) look at what flowed in. */
        int incoming_finite = cg__anomaly_all_finite(n_grad_outputs, grad_outputs);
        return cg__err(CG_ERR_AUTOGRAD,
                       "anomaly detected: backward of op '%s' (created at %s) returned %s in the "
                       "gradient of its input %d; %s",
                       cg__node_name(n), where(n, loc, sizeof loc), kind_of(grad_inputs[i]), i,
                       incoming_finite ? "the gradients flowing into it were finite"
                                       : "the gradients flowing into it already held non-finite values");
    }
    return CG_OK;
}

int cg__anomaly_all_finite(int n, cg_tensor *const *ts) {
    for (int i = 0; i < n; ++i)
        if (ts[i] && cg__count_nonfinite(ts[i])) return 0;
    return 1;
}
