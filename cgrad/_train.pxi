# Bindings of the training kernels (include/cgrad.h, "training" section):
# fused optimizer updates, clipping, tensor statistics. The _*_update
# functions return the update's squared norm (cg_*_update's update_sum_sq)
# when want_update is set, else None. Included into
# _core.pyx. The Python layer (cgrad/optim, cgrad/nn/utils, cgrad/amp) calls
# these private functions; the C side checks every argument and the status
# becomes the matching Python exception through _check.

cdef inline cg_tensor *_opt_c(Tensor t):
    return NULL if t is None else t.c


cdef inline bint _big(Tensor t):
    return cg_tensor_numel(t.c) >= NOGIL_MIN


def _sgd_update(Tensor param not None, Tensor grad not None, Tensor momentum_buffer,
                bint init_buffer, double lr, double momentum, double dampening,
                double weight_decay, bint nesterov, bint maximize, bint want_update=False):
    cdef cg_sgd_options o
    o.lr = lr
    o.momentum = momentum
    o.dampening = dampening
    o.weight_decay = weight_decay
    o.nesterov = nesterov
    o.maximize = maximize
    cdef cg_tensor *buf = _opt_c(momentum_buffer)
    cdef double usq = 0.0
    cdef double *upd = &usq if want_update else NULL
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_sgd_update(param.c, grad.c, buf, init_buffer, &o, upd)
    else:
        st = cg_sgd_update(param.c, grad.c, buf, init_buffer, &o, upd)
    _check(st)
    return usq if want_update else None


def _adam_update(Tensor param not None, Tensor grad not None, Tensor exp_avg not None,
                 Tensor exp_avg_sq not None, Tensor max_exp_avg_sq, int64_t step, double lr,
                 double beta1, double beta2, double eps, double weight_decay,
                 bint decoupled_weight_decay, bint amsgrad, bint maximize,
                 bint want_update=False):
    cdef cg_adam_options o
    o.lr = lr
    o.beta1 = beta1
    o.beta2 = beta2
    o.eps = eps
    o.weight_decay = weight_decay
    o.decoupled_weight_decay = decoupled_weight_decay
    o.amsgrad = amsgrad
    o.maximize = maximize
    cdef cg_tensor *vmax = _opt_c(max_exp_avg_sq)
    cdef double usq = 0.0
    cdef double *upd = &usq if want_update else NULL
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_adam_update(param.c, grad.c, exp_avg.c, exp_avg_sq.c, vmax, step, &o, upd)
    else:
        st = cg_adam_update(param.c, grad.c, exp_avg.c, exp_avg_sq.c, vmax, step, &o, upd)
    _check(st)
    return usq if want_update else None


def _rmsprop_update(Tensor param not None, Tensor grad not None, Tensor square_avg not None,
                    Tensor grad_avg, Tensor momentum_buffer, double lr, double alpha,
                    double eps, double weight_decay, double momentum, bint centered,
                    bint maximize, bint want_update=False):
    cdef cg_rmsprop_options o
    o.lr = lr
    o.alpha = alpha
    o.eps = eps
    o.weight_decay = weight_decay
    o.momentum = momentum
    o.centered = centered
    o.maximize = maximize
    cdef cg_tensor *ga = _opt_c(grad_avg)
    cdef cg_tensor *buf = _opt_c(momentum_buffer)
    cdef double usq = 0.0
    cdef double *upd = &usq if want_update else NULL
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_rmsprop_update(param.c, grad.c, square_avg.c, ga, buf, &o, upd)
    else:
        st = cg_rmsprop_update(param.c, grad.c, square_avg.c, ga, buf, &o, upd)
    _check(st)
    return usq if want_update else None


def _adagrad_update(Tensor param not None, Tensor grad not None, Tensor state_sum not None,
                    int64_t step, double lr, double lr_decay, double weight_decay, double eps,
                    double initial_accumulator_value, bint maximize, bint want_update=False):
    cdef cg_adagrad_options o
    o.lr = lr
    o.lr_decay = lr_decay
    o.weight_decay = weight_decay
    o.eps = eps
    o.initial_accumulator_value = initial_accumulator_value
    o.maximize = maximize
    cdef double usq = 0.0
    cdef double *upd = &usq if want_update else NULL
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_adagrad_update(param.c, grad.c, state_sum.c, step, &o, upd)
    else:
        st = cg_adagrad_update(param.c, grad.c, state_sum.c, step, &o, upd)
    _check(st)
    return usq if want_update else None


cdef class _TensorArray:
    """A C array of borrowed cg_tensor pointers for a list of Tensors (the
    list keeps them alive); numel is their total size, to decide on the GIL."""
    cdef cg_tensor **ptrs
    cdef int n
    cdef int64_t numel
    cdef list keep

    def __cinit__(self, tensors, str what):
        self.keep = list(tensors)
        self.n = len(self.keep)
        self.ptrs = <cg_tensor **>malloc(sizeof(cg_tensor *) * (self.n if self.n else 1))
        if self.ptrs == NULL:
            raise MemoryError(f"cannot allocate {self.n} tensor pointers")
        self.numel = 0
        cdef int i
        for i in range(self.n):
            t = self.keep[i]
            if not isinstance(t, Tensor):
                raise TypeError(f"{what} {i} must be a cgrad.Tensor, got {type(t).__name__}")
            self.ptrs[i] = (<Tensor>t).c
            self.numel += cg_tensor_numel((<Tensor>t).c)

    def __dealloc__(self):
        free(self.ptrs)


def _total_norm(tensors, double norm_type):
    """Global norm_type-norm of the tensors (float, computed in double)."""
    cdef _TensorArray arr = _TensorArray(tensors, "tensor")
    cdef double total = 0.0
    cdef cg_status st
    with nogil:
        st = cg_total_norm(arr.n, arr.ptrs, norm_type, &total)
    _check(st)
    return total


def _clip_grad_norm(grads, double max_norm, double norm_type, bint error_if_nonfinite):
    """Scales grads in place; returns (total_norm, clip_coef). A non-finite
    total norm with error_if_nonfinite raises RuntimeError (as PyTorch)."""
    cdef _TensorArray arr = _TensorArray(grads, "gradient")
    cdef double total = 0.0, coef = 1.0
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_norm(arr.n, arr.ptrs, max_norm, norm_type, error_if_nonfinite,
                               &total, &coef)
    if st == CG_ERR_VALUE and error_if_nonfinite and not (total == total and
                                                          total != INFINITY):
        raise RuntimeError(cg_last_error().decode("utf-8", "replace"))
    _check(st)
    return total, coef


def _clip_grad_value(grads, double clip_value):
    """Clamps grads into [-clip_value, clip_value]; returns how many
    elements changed."""
    cdef _TensorArray arr = _TensorArray(grads, "gradient")
    cdef int64_t n_clipped = 0
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_value(arr.n, arr.ptrs, clip_value, &n_clipped)
    _check(st)
    return n_clipped


def _clip_grad_agc(params, grads, double clipping, double eps):
    """Unit-wise adaptive clipping in place; returns (units clipped, units)."""
    cdef _TensorArray parr = _TensorArray(params, "parameter")
    cdef _TensorArray garr = _TensorArray(grads, "gradient")
    if parr.n != garr.n:
        raise ValueError(f"clip_grad_agc: {parr.n} parameters but {garr.n} gradients")
    cdef int64_t n_clipped = 0, n_units = 0
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_agc(parr.n, parr.ptrs, garr.ptrs, clipping, eps, &n_clipped, &n_units)
    _check(st)
    return n_clipped, n_units


def _tensor_stats(Tensor t not None):
    """(sum of squares, max |x|, non-finite count, numel) in one pass; the
    sums leave the non-finite elements out."""
    cdef cg_stats s
    cdef cg_status st
    if _big(t):
        with nogil:
            st = cg_tensor_stats(t.c, &s)
    else:
        st = cg_tensor_stats(t.c, &s)
    _check(st)
    return s.sum_sq, s.max_abs, s.nonfinite, s.numel


def _tensor_stats_many(tensors, double[:, ::1] out not None):
    """cg_tensor_stats of every tensor in one C call: row i of out (a
    C-contiguous float64 array of shape (len(tensors), 4)) gets (sum of
    squares, max |x|, non-finite count, numel) of tensors[i]; a None entry
    gets zeros. The GIL is released when the tensors are large together."""
    tensors = list(tensors)  # holds every tensor while the GIL is released
    cdef Py_ssize_t n = len(tensors)
    if out.shape[0] != n or out.shape[1] != 4:
        raise ValueError(f"_tensor_stats_many: out must have shape ({n}, 4), got "
                         f"({out.shape[0]}, {out.shape[1]})")
    if n > 2147483647:
        raise ValueError(f"_tensor_stats_many: too many tensors ({n})")
    cdef cg_tensor **ptrs = <cg_tensor **>malloc(sizeof(cg_tensor *) * (n if n else 1))
    cdef cg_stats *st = <cg_stats *>malloc(sizeof(cg_stats) * (n if n else 1))
    if ptrs == NULL or st == NULL:
        free(ptrs)
        free(st)
        raise MemoryError(f"cannot allocate stats for {n} tensors")
    cdef int64_t total = 0
    cdef Py_ssize_t i
    cdef cg_status status
    try:
        for i in range(n):
            t = tensors[i]
            if t is None:
                ptrs[i] = NULL
            elif isinstance(t, Tensor):
                ptrs[i] = (<Tensor>t).c
                total += cg_tensor_numel(ptrs[i])
            else:
                raise TypeError(f"_tensor_stats_many: entry {i} must be a cgrad.Tensor or None, "
                                f"got {type(t).__name__}")
        if total >= NOGIL_MIN:
            with nogil:
                status = cg_tensor_stats_many(<int>n, ptrs, st)
        else:
            status = cg_tensor_stats_many(<int>n, ptrs, st)
        _check(status)
        for i in range(n):
            out[i, 0] = st[i].sum_sq
            out[i, 1] = st[i].max_abs
            out[i, 2] = <double>st[i].nonfinite
            out[i, 3] = <double>st[i].numel
    finally:
        free(ptrs)
        free(st)
