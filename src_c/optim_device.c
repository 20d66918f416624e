/* optim_device.c -- device helpers of the training kernels (see
 * optim_device.h). */
#include "optim_device.h"

cg_status cg__train_same_device(const char *fn, int n, cg_tensor *const *ts,
                                const char *const *names, int *device) {
    const int d = cg__dev(ts[0]);
    for (int i = 1; i < n; ++i)
        if (ts[i] && cg__dev(ts[i]) != d)
            return cg__err(CG_ERR_VALUE, "%s: expected all tensors on one device, but '%s' is on '%s' "
                                         "and '%s' on '%s'",
                           fn, names[0], cg__device_label(d), names[i], cg__device_label(cg__dev(ts[i])));
    *device = d;
    return CG_OK;
}

cg_status cg__kernel_result(int device, const char *name, int n_targets, int n_in,
                            cg_tensor *const *tensors, int n_f, const double *f, int n_i,
                            const int64_t *iparam, cg_dtype rdtype, int ndim, const int64_t *shape,
                            void *dst) {
    const int with_result = dst != NULL, total = n_targets + n_in + with_result;
    cg_tensor **ts = malloc(sizeof *ts * (size_t)(total ? total : 1));
    if (!ts) return cg__err(CG_ERR_NOMEM, "kernel '%s': out of memory for %d tensors", name, total);
    cg_tensor *r = NULL;
    cg_status st = CG_OK;
    if (with_result) st = cg__new_on(device, rdtype, ndim, shape, 1, &r);
    if (!st) {
        for (int i = 0; i < n_targets; ++i) ts[i] = tensors[i];
        if (with_result) ts[n_targets] = r;
        for (int i = 0; i < n_in; ++i) ts[n_targets + with_result + i] = tensors[n_targets + i];
        st = cg__kernel(device, name, n_targets + with_result, total, ts, n_f, f, n_i, iparam);
    }
    if (!st && with_result) st = cg__device_to_host(r, dst);
    cg_tensor_free(r);
    free(ts);
    return st;
}

cg_status cg__for_device_groups(int n, cg_tensor *const *ts, cg__device_group_fn fn, void *ctx) {
    int any = 0;
    for (int i = 0; i < n && !any; ++i) any = ts[i] && cg__dev(ts[i]);
    if (!any) return CG_OK;
    cg_tensor **sub = malloc(sizeof *sub * (size_t)n);
    int *idx = malloc(sizeof *idx * (size_t)n);
    if (!sub || !idx) {
        free(sub);
        free(idx);
        return cg__err(CG_ERR_NOMEM, "out of memory grouping %d tensors by device", n);
    }
    cg_status st = CG_OK;
    for (int d = 1; d < CG_MAX_DEVICES && !st; ++d) {
        int k = 0;
        for (int i = 0; i < n; ++i)
            if (ts[i] && cg__dev(ts[i]) == d) {
                sub[k] = ts[i];
                idx[k++] = i;
            }
        if (k) st = fn(d, k, sub, idx, ctx);
    }
    free(sub);
    free(idx);
    return st;
}
