# Learning-rate schedules of include/cgrad.h (pure functions of the step),
# one thin wrapper each for cgrad/optim/lr_scheduler.py. Included into
# _core.pyx for _check. Arguments arrive already type-checked by the
# scheduler classes; value checks are the C library's (ValueError with its
# message). Each returns the lr as a float.

def _lr_step(double base_lr, int64_t step, int64_t step_size, double gamma):
    cdef cg_lr_step_options o
    cdef double lr = 0.0
    o.step_size = step_size
    o.gamma = gamma
    _check(cg_lr_step(&o, base_lr, step, &lr))
    return lr

def _lr_multistep(double base_lr, int64_t step, milestones, double gamma):
    """milestones: a sorted sequence of ints."""
    cdef cg_lr_multistep_options o
    cdef double lr = 0.0
    cdef Py_ssize_t n = len(milestones), i
    cdef int64_t *ms = <int64_t *>malloc(max(n, 1) * sizeof(int64_t))
    if ms == NULL:
        raise MemoryError("_lr_multistep: cannot allocate the milestones")
    try:
        for i in range(n):
            ms[i] = milestones[i]
        o.milestones = ms
        o.n_milestones = n
        o.gamma = gamma
        _check(cg_lr_multistep(&o, base_lr, step, &lr))
    finally:
        free(ms)
    return lr

def _lr_constant(double base_lr, int64_t step, double factor, int64_t total_iters):
    cdef cg_lr_constant_options o
    cdef double lr = 0.0
    o.factor = factor
    o.total_iters = total_iters
    _check(cg_lr_constant(&o, base_lr, step, &lr))
    return lr

def _lr_linear(double base_lr, int64_t step, double start_factor, double end_factor,
               int64_t total_iters):
    cdef cg_lr_linear_options o
    cdef double lr = 0.0
    o.start_factor = start_factor
    o.end_factor = end_factor
    o.total_iters = total_iters
    _check(cg_lr_linear(&o, base_lr, step, &lr))
    return lr

def _lr_exponential(double base_lr, int64_t step, double gamma):
    cdef cg_lr_exponential_options o
    cdef double lr = 0.0
    o.gamma = gamma
    _check(cg_lr_exponential(&o, base_lr, step, &lr))
    return lr

def _lr_cosine(double base_lr, int64_t step, int64_t T_max, double eta_min):
    cdef cg_lr_cosine_options o
    cdef double lr = 0.0
    o.T_max = T_max
    o.eta_min = eta_min
    _check(cg_lr_cosine(&o, base_lr, step, &lr))
    return lr

def _lr_cosine_warm_restarts(double base_lr, double epoch, int64_t T_0, int64_t T_mult,
                             double eta_min):
    """(lr, T_cur, T_i) at a possibly fractional epoch."""
    cdef cg_lr_cosine_warm_restarts_options o
    cdef double lr = 0.0, t_cur = 0.0, t_i = 0.0
    o.T_0 = T_0
    o.T_mult = T_mult
    o.eta_min = eta_min
    _check(cg_lr_cosine_warm_restarts_at(&o, base_lr, epoch, &lr, &t_cur, &t_i))
    return lr, t_cur, t_i

_ANNEAL = {"cos": CG_ANNEAL_COS, "linear": CG_ANNEAL_LINEAR}

def _lr_one_cycle(double max_lr, int64_t step, int64_t total_steps, double pct_start,
                  str anneal_strategy, double div_factor, double final_div_factor,
                  bint three_phase, double base_momentum, double max_momentum):
    """(lr, momentum) of one group at step."""
    cdef cg_lr_one_cycle_options o
    cdef double lr = 0.0, momentum = 0.0
    if anneal_strategy not in _ANNEAL:
        raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', got {anneal_strategy!r}")
    o.total_steps = total_steps
    o.pct_start = pct_start
    o.anneal_strategy = <cg_anneal>_ANNEAL[anneal_strategy]
    o.div_factor = div_factor
    o.final_div_factor = final_div_factor
    o.three_phase = three_phase
    o.base_momentum = base_momentum
    o.max_momentum = max_momentum
    _check(cg_lr_one_cycle(&o, max_lr, step, &lr))
    _check(cg_lr_one_cycle_momentum(&o, step, &momentum))
    return lr, momentum

def _lr_polynomial(double base_lr, int64_t step, int64_t total_iters, double power):
    cdef cg_lr_polynomial_options o
    cdef double lr = 0.0
    o.total_iters = total_iters
    o.power = power
    _check(cg_lr_polynomial(&o, base_lr, step, &lr))
    return lr

def _lr_warmup_cosine(double base_lr, int64_t step, int64_t warmup_steps, int64_t total_steps,
                      double warmup_start_factor, double eta_min):
    cdef cg_lr_warmup_cosine_options o
    cdef double lr = 0.0
    o.warmup_steps = warmup_steps
    o.total_steps = total_steps
    o.warmup_start_factor = warmup_start_factor
    o.eta_min = eta_min
    _check(cg_lr_warmup_cosine(&o, base_lr, step, &lr))
    return lr
