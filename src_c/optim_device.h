/* optim_device.h -- what the training kernels (optim.c, optimizer.c,
 * clip.c, gradstats.c) share on backend devices: a strict device check
 * (their tensors are written, so a 0-d host scalar may not join), one
 * kernel call per device for a list of tensors, and kernels that hand a
 * small result (norms, counts, statistics) back to the host. Not
 * installed; the kernels are listed in docs/backend.md. */
#ifndef CG_OPTIM_DEVICE_H
#define CG_OPTIM_DEVICE_H

#include "cg_internal.h"

/* CG_ERR_VALUE naming fn, both arguments and both devices unless the
 * non-NULL ts[0..n) all live on ts[0]'s device (names[i] names ts[i]);
 * *device receives it. */
CG_INTERNAL cg_status cg__train_same_device(const char *fn, int n, cg_tensor *const *ts,
                                            const char *const *names, int *device);

/* Runs kernel `name` of device on tensors = (n_targets targets written in
 * place, then n_in inputs), borrowed. When dst is non-NULL a zero-filled
 * result tensor of rdtype and shape (ndim, shape) joins the outputs after
 * the targets, and its elements are copied, row-major, into dst (host
 * memory of its size) once the kernel ran. */
CG_INTERNAL cg_status cg__kernel_result(int device, const char *name, int n_targets, int n_in,
                                        cg_tensor *const *tensors, int n_f, const double *f,
                                        int n_i, const int64_t *iparam, cg_dtype rdtype, int ndim,
                                        const int64_t *shape, void *dst);

/* Calls fn once per backend device that holds a tensor of ts[0..n) (NULL
 * and host tensors skipped) with that device's k tensors in list order and
 * their positions idx[0..k) in ts (both arrays borrowed for the call). The
 * first failing call's status is returned. */
typedef cg_status (*cg__device_group_fn)(int device, int k, cg_tensor **ts, const int *idx,
                                          void *ctx);
CG_INTERNAL cg_status cg__for_device_groups(int n, cg_tensor *const *ts, cg__device_group_fn fn,
                                            void *ctx);

#endif /* CG_OPTIM_DEVICE_H */
