/* cg_optim.h -- option checks shared by the fused updates (optim.c) and the
 * C optimizer object (optimizer.c). Not installed. */
#ifndef CG_OPTIM_H
#define CG_OPTIM_H

#include "cg_internal.h"

/* CG_ERR_VALUE naming fn, the field and the value for a bad option. */
CG_INTERNAL cg_status cg__check_sgd_options(const char *fn, const cg_sgd_options *o);
CG_INTERNAL cg_status cg__check_adam_options(const char *fn, const cg_adam_options *o);

/* sum over i of ((double)a[i] - (double)b[i])^2: the squared norm of an
 * update (new weights a, old weights b), in gradstats.c, which lets the
 * compiler split the sum across SIMD lanes (optim.c must not: its update
 * arithmetic follows PyTorch operation for operation). */
CG_INTERNAL double cg__sum_sq_diff_f32(const float *a, const float *b, int64_t n);
CG_INTERNAL double cg__sum_sq_diff_f64(const double *a, const double *b, int64_t n);

#endif /* CG_OPTIM_H */
