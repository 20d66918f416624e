/* cg_optim.h -- option checks shared by the fused updates (optim.c) and the
 * C optimizer object (optimizer.c). Not installed. */
#ifndef CG_OPTIM_H
#define CG_OPTIM_H

#include "cg_internal.h"

/* CG_ERR_VALUE naming fn, the field and the value for a bad option. */
CG_INTERNAL cg_status cg__check_sgd_options(const char *fn, const cg_sgd_options *o);
CG_INTERNAL cg_status cg__check_adam_options(const char *fn, const cg_adam_options *o);

/* The checks cg_sgd_update / cg_adam_update / cg_rmsprop_update make of
 * their operands before they write anything (messages naming fn; not the
 * options' values, which the optimizer checked when it was made): the C
 * optimizer object makes them for every parameter before the first moves. */
CG_INTERNAL cg_status cg__sgd_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                                    cg_tensor *momentum_buffer, const cg_sgd_options *o);
CG_INTERNAL cg_status cg__adam_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                                     cg_tensor *exp_avg, cg_tensor *exp_avg_sq,
                                     cg_tensor *max_exp_avg_sq, const cg_adam_options *o);
CG_INTERNAL cg_status cg__rmsprop_check(const char *fn, cg_tensor *param, cg_tensor *grad,
                                        cg_tensor *square_avg, cg_tensor *grad_avg,
                                        cg_tensor *momentum_buffer, const cg_rmsprop_options *o);

/* sum over i of ((double)a[i] - (double)b[i])^2: the squared norm of an
 * update (new weights a, old weights b), in gradstats.c, which lets the
 * compiler split the sum across SIMD lanes (optim.c must not: its update
 * arithmetic follows PyTorch operation for operation). */
CG_INTERNAL double cg__sum_sq_diff_f32(const float *a, const float *b, int64_t n);
CG_INTERNAL double cg__sum_sq_diff_f64(const double *a, const double *b, int64_t n);

/* acc += the statistics of n float32 (is_f32) or float64 elements at x
 * (sums and counts added, max_abs the larger): a fused update measuring
 * its blocks one by one (optim.c). */
CG_INTERNAL void cg__stats_add(const void *x, int is_f32, int64_t n, cg_stats *acc);
/* acc += s: sums and counts added, max_abs the larger (one block into a
 * tensor's statistics). */
CG_INTERNAL void cg__stats_merge(cg_stats *acc, const cg_stats *s);
/* Returns sum((a[i] - b[i])^2) over n float32 (is_f32) or float64 elements
 * (a the new weights, b the old) and adds b's statistics to acc, in one
 * pass and in double: cg__sum_sq_diff_* and the exact cg__stats_add(b)
 * together (the measuring kernels' fallback for a block they cannot
 * measure in lanes). */
CG_INTERNAL double cg__update_block(const void *a, const void *b, int is_f32, int64_t n,
                                    cg_stats *acc);

/* Whether float lanes may sum the squares of float32 values whose max |x|
 * has bit pattern m: 0, or within [2^-40, 2^50), where no square or run
 * sum overflows or underflows float (gradstats.c, optim.c's measuring
 * kernels); else the block is summed in double. */
#define LANES_LO 0x2b800000 /* bits of 2^-40 */
#define LANES_HI 0x58800000 /* bits of 2^50 */
#define LANES_SAFE(m) ((m) == 0 || ((m) >= LANES_LO && (m) < LANES_HI))

#endif /* CG_OPTIM_H */
