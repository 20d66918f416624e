/* cg_optim.h -- option checks shared by the fused updates (optim.c) and the
 * C optimizer object (optimizer.c). Not installed. */
#ifndef CG_OPTIM_H
#define CG_OPTIM_H

#include "cg_internal.h"

/* CG_ERR_VALUE naming fn, the field and the value for a bad option. */
CG_INTERNAL cg_status cg__check_sgd_options(const char *fn, const cg_sgd_options *o);
CG_INTERNAL cg_status cg__check_adam_options(const char *fn, const cg_adam_options *o);

#endif /* CG_OPTIM_H */
