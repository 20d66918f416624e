# Bindings of the training kernels (include/cgrad.h, "training" section):
# fused optimizer updates, clipping, tensor statistics. The _*_update
# functions take an optional _StatsSink (cgrad.monitor): a watched
# parameter's update then also measures its gradient, old weights and
# update (cg_*_update_stats) into the sink. Included into
# _core.pyx. The Python layer (cgrad/optim, cgrad/nn/utils, cgrad/amp) calls
# these private functions; the C side checks every argument and the status
# becomes the matching Python exception through _check.
from libc.stdlib cimport calloc
from libc.string cimport memset


cdef inline cg_tensor *_opt_c(Tensor t):
    return NULL if t is None else t.c


cdef inline bint _big(Tensor t):
    return cg_tensor_numel(t.c) >= NOGIL_MIN


cdef object _shape_mismatch(st, tuple keys, cg_tensor *p):
    """The first of keys whose entry in st is a tensor of another shape than
    p's, or None (an absent or non-tensor entry is skipped)."""
    cdef int nd = cg_tensor_ndim(p), k
    cdef const int64_t *ps = cg_tensor_shape(p)
    cdef const int64_t *vs
    cdef cg_tensor *t
    for key in keys:
        value = st.get(key)
        if not isinstance(value, Tensor):
            continue
        t = (<Tensor>value).c
        if cg_tensor_ndim(t) != nd:
            return key
        vs = cg_tensor_shape(t)
        for k in range(nd):
            if vs[k] != ps[k]:
                return key
    return None


def _step_problem(params, state, tuple keys not None, bint sparse_ok,
                  bint dense_ok, layout_key):
    """The first of a group's parameters with a gradient that a built-in
    optimizer's step cannot update, as (index, what, state key or None), or
    None: what is 'dtype' (not floating), 'half' (float16 on the cpu),
    'contiguous', 'sparse' / 'dense' (a gradient layout not taken), 'shape'
    (the state tensor under key has another shape than the parameter; keys:
    the state the update reads) or 'layout' (the buffer under layout_key
    was made from gradients of the other layout). The step checks every
    group with it before any parameter moves (cgrad/optim/_checks.py)."""
    cdef Py_ssize_t i = 0
    cdef cg_tensor *p
    cdef cg_tensor *g
    cdef int d
    cdef bint sparse
    for item in params:
        p = (<Tensor?>item).c
        g = cg_tensor_grad(p)
        if g != NULL:
            d = cg_tensor_dtype(p)
            if d != CG_FLOAT32 and d != CG_FLOAT64 and d != CG_FLOAT16:
                return (i, "dtype", None)
            if d == CG_FLOAT16 and cg_tensor_device(p) == CG_DEVICE_CPU:
                return (i, "half", None)
            if not cg_tensor_is_contiguous(p):
                return (i, "contiguous", None)
            sparse = cg_tensor_is_sparse(g) != 0
            if sparse and not sparse_ok:
                return (i, "sparse", None)
            if not sparse and not dense_ok:
                return (i, "dense", None)
            st = state.get(item)
            if st:
                key = _shape_mismatch(st, keys, p)
                if key is not None:
                    return (i, "shape", key)
                if layout_key is not None:
                    buf = st.get(layout_key)
                    if isinstance(buf, Tensor) and \
                            (cg_tensor_is_sparse((<Tensor>buf).c) != 0) != sparse:
                        return (i, "layout", layout_key)
        i += 1
    return None


cdef class _StatsSink:
    """Where a built-in optimizer's step writes what its fused updates
    measured (cg_*_update_stats), for cgrad.monitor: one cg_update_stats per
    watched parameter (k: its index in `params`), found by id(param) (the
    sink's list keeps the parameters alive, so an id cannot be reused).
    begin(what) arms it for one step; seen(k) says whether an update
    measured parameter k this step (one without a gradient, or not the
    optimizer's, was not)."""
    cdef dict index
    cdef list params
    cdef cg_update_stats *st
    cdef char *seen_
    cdef Py_ssize_t hint   # where the next parameter usually is (steps visit them in order)
    cdef readonly Py_ssize_t n
    cdef readonly int what

    def __cinit__(self, params):
        self.params = list(params)
        self.n = len(self.params)
        self.index = {}
        cdef Py_ssize_t k
        for k in range(self.n):
            if not isinstance(self.params[k], Tensor):
                raise TypeError(f"_StatsSink: parameter {k} must be a cgrad.Tensor, got "
                                f"{type(self.params[k]).__name__}")
            self.index[id(self.params[k])] = k
        self.st = <cg_update_stats *>calloc(self.n if self.n else 1, sizeof(cg_update_stats))
        self.seen_ = <char *>calloc(self.n if self.n else 1, 1)
        if self.st == NULL or self.seen_ == NULL:
            raise MemoryError(f"_StatsSink: cannot allocate for {self.n} parameters")

    def __dealloc__(self):
        free(self.st)
        free(self.seen_)

    cpdef begin(self, int what):
        """Arms the sink for one step measuring `what` (CG_MEASURE_* bits)."""
        if what & ~(CG_MEASURE_GRAD | CG_MEASURE_WEIGHT | CG_MEASURE_UPDATE):
            raise ValueError(f"_StatsSink.begin: unknown measure bits in {what}")
        self.what = what
        self.hint = 0
        memset(self.seen_, 0, self.n if self.n else 1)

    cdef void end(self) noexcept:
        """Disarms it: the updates measure nothing until the next begin()."""
        self.what = 0

    cdef cg_update_stats *slot(self, Tensor p):
        """The record of parameter p for this step, marked seen; NULL when
        p is not watched or the sink is not armed."""
        if not self.what:
            return NULL
        cdef Py_ssize_t i = self.hint
        if i >= self.n or <PyObject *>self.params[i] is not <PyObject *>p:
            k = self.index.get(id(p))
            if k is None:
                return NULL
            i = <Py_ssize_t>k
        self.hint = i + 1
        self.seen_[i] = 1
        self.st[i].what = self.what
        return &self.st[i]

    def seen(self, Py_ssize_t k):
        """Whether an update measured parameter k this step."""
        if k < 0 or k >= self.n:
            raise IndexError(f"_StatsSink.seen: index {k} out of range for {self.n} parameters")
        return bool(self.seen_[k])

    def stats(self, Py_ssize_t k):
        """(grad sum_sq, max_abs, nonfinite, numel, weight ..., update_sum_sq)
        of parameter k as last measured (tests)."""
        if k < 0 or k >= self.n:
            raise IndexError(f"_StatsSink.stats: index {k} out of range for {self.n} parameters")
        cdef cg_update_stats *u = &self.st[k]
        return (u.grad.sum_sq, u.grad.max_abs, u.grad.nonfinite, u.grad.numel,
                u.weight.sum_sq, u.weight.max_abs, u.weight.nonfinite, u.weight.numel,
                u.update_sum_sq)


cdef inline cg_update_stats *_sink_slot(_StatsSink sink, Tensor param,
                                        cg_update_stats *nothing):
    """param's record in sink, else `nothing` set to measure nothing (the
    _stats call is then the plain update)."""
    cdef cg_update_stats *us = NULL if sink is None else sink.slot(param)
    if us == NULL:
        memset(nothing, 0, sizeof(cg_update_stats))
        us = nothing
    return us


def _sgd_update(Tensor param not None, Tensor grad not None, Tensor momentum_buffer,
                bint init_buffer, double lr, double momentum, double dampening,
                double weight_decay, bint nesterov, bint maximize, _StatsSink sink=None):
    cdef cg_sgd_options o
    o.lr = lr
    o.momentum = momentum
    o.dampening = dampening
    o.weight_decay = weight_decay
    o.nesterov = nesterov
    o.maximize = maximize
    cdef cg_tensor *buf = _opt_c(momentum_buffer)
    cdef cg_update_stats nothing
    cdef cg_update_stats *us = _sink_slot(sink, param, &nothing)
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_sgd_update_stats(param.c, grad.c, buf, init_buffer, &o, us)
    else:
        st = cg_sgd_update_stats(param.c, grad.c, buf, init_buffer, &o, us)
    _check(st)


def _adam_update(Tensor param not None, Tensor grad not None, Tensor exp_avg not None,
                 Tensor exp_avg_sq not None, Tensor max_exp_avg_sq, int64_t step, double lr,
                 double beta1, double beta2, double eps, double weight_decay,
                 bint decoupled_weight_decay, bint amsgrad, bint maximize,
                 _StatsSink sink=None):
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
    cdef cg_update_stats nothing
    cdef cg_update_stats *us = _sink_slot(sink, param, &nothing)
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_adam_update_stats(param.c, grad.c, exp_avg.c, exp_avg_sq.c, vmax, step, &o, us)
    else:
        st = cg_adam_update_stats(param.c, grad.c, exp_avg.c, exp_avg_sq.c, vmax, step, &o, us)
    _check(st)


cdef cg_tensor **_c_lists(str fn, Py_ssize_t n, tuple named) except NULL:
    """The C pointers of the lists (name, list of n Tensors, or None where
    the C call takes no list) in one calloc'ed block, list j at j * n: free
    it. A list of the wrong length or holding a non-Tensor raises, naming
    it."""
    for name, lst in named:
        if lst is not None and len(lst) != n:
            raise ValueError(f"{fn}: {name} must list {n} tensors, one per parameter, got {len(lst)}")
    cdef cg_tensor **c = <cg_tensor **>calloc(len(named) * n if n else 1, sizeof(cg_tensor *))
    if c == NULL:
        raise MemoryError(f"{fn}: no memory for {n} parameters")
    cdef Py_ssize_t j, k
    try:
        for j, (name, lst) in enumerate(named):
            for k in range(n if lst is not None else 0):
                if not isinstance(lst[k], Tensor):
                    raise TypeError(f"{name}[{k}] must be a Tensor, got {type(lst[k]).__name__}")
                c[j * n + k] = (<Tensor>lst[k]).c
    except BaseException:
        free(c)
        raise
    return c


def _sgd_update_multi(list params not None, list grads not None, list momentum_buffers,
                      bint init_buffer, double lr, double momentum, double dampening,
                      double weight_decay, bint nesterov, bint maximize):
    """cg_sgd_update_multi: SGD on every parameter of the lists with one
    init_buffer (all checked first; one kernel call on a device)."""
    cdef Py_ssize_t n = len(params)
    if momentum != 0 and momentum_buffers is None:
        raise ValueError(f"_sgd_update_multi: momentum_buffers must list {n} tensors, one per "
                         "parameter, got None")
    cdef cg_sgd_options o
    o.lr = lr
    o.momentum = momentum
    o.dampening = dampening
    o.weight_decay = weight_decay
    o.nesterov = nesterov
    o.maximize = maximize
    cdef cg_tensor **c = _c_lists("_sgd_update_multi", n, (
        ("params", params), ("grads", grads),
        ("momentum_buffers", momentum_buffers if momentum != 0 else None)))
    cdef cg_status st = cg_sgd_update_multi(<int>n, c, c + n, c + 2 * n if momentum != 0 else NULL,
                                            init_buffer, &o)
    free(c)
    _check(st)


def _adam_update_multi(list params not None, list grads not None, list exp_avgs not None,
                       list exp_avg_sqs not None, list max_exp_avg_sqs, int64_t step, double lr,
                       double beta1, double beta2, double eps, double weight_decay,
                       bint decoupled_weight_decay, bint amsgrad, bint maximize):
    """cg_adam_update_multi: Adam on every parameter of the lists at one
    step count (all checked first; one kernel call on a device)."""
    cdef Py_ssize_t n = len(params)
    if amsgrad and max_exp_avg_sqs is None:
        raise ValueError(f"_adam_update_multi: max_exp_avg_sqs must list {n} tensors, one per "
                         "parameter, got None")
    cdef cg_adam_options o
    o.lr = lr
    o.beta1 = beta1
    o.beta2 = beta2
    o.eps = eps
    o.weight_decay = weight_decay
    o.decoupled_weight_decay = decoupled_weight_decay
    o.amsgrad = amsgrad
    o.maximize = maximize
    cdef cg_tensor **c = _c_lists("_adam_update_multi", n, (
        ("params", params), ("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs),
        ("max_exp_avg_sqs", max_exp_avg_sqs if amsgrad else None)))
    cdef cg_status st = cg_adam_update_multi(<int>n, c, c + n, c + 2 * n, c + 3 * n,
                                             c + 4 * n if amsgrad else NULL, step, &o)
    free(c)
    _check(st)


def _rmsprop_update_multi(list params not None, list grads not None, list square_avgs not None,
                          list grad_avgs, list momentum_buffers, double lr, double alpha,
                          double eps, double weight_decay, double momentum, bint centered,
                          bint maximize):
    """cg_rmsprop_update_multi: RMSprop on every parameter of the lists (all
    checked first; one kernel call on a device)."""
    cdef Py_ssize_t n = len(params)
    cdef bint mom = momentum > 0
    for name, lst, needed in (("grad_avgs", grad_avgs, centered),
                              ("momentum_buffers", momentum_buffers, mom)):
        if needed and lst is None:
            raise ValueError(f"_rmsprop_update_multi: {name} must list {n} tensors, one per "
                             "parameter, got None")
    cdef cg_rmsprop_options o
    o.lr = lr
    o.alpha = alpha
    o.eps = eps
    o.weight_decay = weight_decay
    o.momentum = momentum
    o.centered = centered
    o.maximize = maximize
    cdef cg_tensor **c = _c_lists("_rmsprop_update_multi", n, (
        ("params", params), ("grads", grads), ("square_avgs", square_avgs),
        ("grad_avgs", grad_avgs if centered else None),
        ("momentum_buffers", momentum_buffers if mom else None)))
    cdef cg_status st = cg_rmsprop_update_multi(<int>n, c, c + n, c + 2 * n,
                                                c + 3 * n if centered else NULL,
                                                c + 4 * n if mom else NULL, &o)
    free(c)
    _check(st)


def _rmsprop_update(Tensor param not None, Tensor grad not None, Tensor square_avg not None,
                    Tensor grad_avg, Tensor momentum_buffer, double lr, double alpha,
                    double eps, double weight_decay, double momentum, bint centered,
                    bint maximize, _StatsSink sink=None):
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
    cdef cg_update_stats nothing
    cdef cg_update_stats *us = _sink_slot(sink, param, &nothing)
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_rmsprop_update_stats(param.c, grad.c, square_avg.c, ga, buf, &o, us)
    else:
        st = cg_rmsprop_update_stats(param.c, grad.c, square_avg.c, ga, buf, &o, us)
    _check(st)


def _adagrad_update(Tensor param not None, Tensor grad not None, Tensor state_sum not None,
                    int64_t step, double lr, double lr_decay, double weight_decay, double eps,
                    double initial_accumulator_value, bint maximize, _StatsSink sink=None):
    cdef cg_adagrad_options o
    o.lr = lr
    o.lr_decay = lr_decay
    o.weight_decay = weight_decay
    o.eps = eps
    o.initial_accumulator_value = initial_accumulator_value
    o.maximize = maximize
    cdef cg_update_stats nothing
    cdef cg_update_stats *us = _sink_slot(sink, param, &nothing)
    cdef cg_status st
    if _big(param):
        with nogil:
            st = cg_adagrad_update_stats(param.c, grad.c, state_sum.c, step, &o, us)
    else:
        st = cg_adagrad_update_stats(param.c, grad.c, state_sum.c, step, &o, us)
    _check(st)



def _adagrad_update_multi(list params not None, list grads not None, list state_sums not None,
                          int64_t step, double lr, double lr_decay, double weight_decay,
                          double eps, double initial_accumulator_value, bint maximize):
    """cg_adagrad_update_multi: Adagrad on every (dense) parameter of the
    lists at one step count (all checked first; one kernel call on a
    device)."""
    cdef Py_ssize_t n = len(params)
    cdef cg_adagrad_options o
    o.lr = lr
    o.lr_decay = lr_decay
    o.weight_decay = weight_decay
    o.eps = eps
    o.initial_accumulator_value = initial_accumulator_value
    o.maximize = maximize
    cdef cg_tensor **c = _c_lists("_adagrad_update_multi", n, (
        ("params", params), ("grads", grads), ("state_sums", state_sums)))
    cdef cg_status st = cg_adagrad_update_multi(<int>n, c, c + n, c + 2 * n, step, &o)
    free(c)
    _check(st)

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


def _clip_grad_norm_tensor(grads, double max_norm, double norm_type):
    """Scales grads in place; returns a float64 Tensor [2] = (total_norm,
    clip_coef) on the grads' device, where nothing was copied back when
    they are all on one device (the cpu when on the host or on several)."""
    cdef _TensorArray arr = _TensorArray(grads, "gradient")
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_norm_tensor(arr.n, arr.ptrs, max_norm, norm_type, &r)
    _check(st)
    return _wrap(r)


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


def _clip_grad_value_tensor(grads, double clip_value):
    """_clip_grad_value with the count as an int64 0-d Tensor on the grads'
    device (nothing copied back when they are all on one device; the cpu
    otherwise)."""
    cdef _TensorArray arr = _TensorArray(grads, "gradient")
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_value_tensor(arr.n, arr.ptrs, clip_value, &r)
    _check(st)
    return _wrap(r)


def _clip_grad_agc_tensor(params, grads, double clipping, double eps):
    """_clip_grad_agc with the count of clipped units as an int64 0-d
    Tensor, as _clip_grad_value_tensor; returns (that, units)."""
    cdef _TensorArray parr = _TensorArray(params, "parameter")
    cdef _TensorArray garr = _TensorArray(grads, "gradient")
    if parr.n != garr.n:
        raise ValueError(f"clip_grad_agc: {parr.n} parameters but {garr.n} gradients")
    cdef cg_tensor *r = NULL
    cdef int64_t n_units = 0
    cdef cg_status st
    with nogil:
        st = cg_clip_grad_agc_tensor(parr.n, parr.ptrs, garr.ptrs, clipping, eps, &r, &n_units)
    _check(st)
    return _wrap(r), n_units


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


def _amp_unscale_(grads, double inv_scale):
    """cg_amp_unscale_: every tensor of grads multiplied in place by
    inv_scale, its NaN/inf elements counted first, in one pass each (one
    kernel per device); returns the total non-finite count. The GIL is
    released when the tensors are large together."""
    grads = list(grads)  # holds every tensor while the GIL is released
    cdef Py_ssize_t n = len(grads)
    if n > 2147483647:
        raise ValueError(f"_amp_unscale_: too many tensors ({n})")
    cdef cg_tensor **ptrs = <cg_tensor **>malloc(sizeof(cg_tensor *) * (n if n else 1))
    if ptrs == NULL:
        raise MemoryError(f"cannot allocate a list of {n} tensors")
    cdef int64_t total = 0
    cdef int64_t bad = 0
    cdef Py_ssize_t i
    cdef cg_status status
    try:
        for i in range(n):
            t = grads[i]
            if not isinstance(t, Tensor):
                raise TypeError(f"_amp_unscale_: grads[{i}] must be a cgrad.Tensor, "
                                f"got {type(t).__name__}")
            ptrs[i] = (<Tensor>t).c
            total += cg_tensor_numel(ptrs[i])
        if total >= NOGIL_MIN:
            with nogil:
                status = cg_amp_unscale_(<int>n, ptrs, inv_scale, &bad)
        else:
            status = cg_amp_unscale_(<int>n, ptrs, inv_scale, &bad)
        _check(status)
    finally:
        free(ptrs)
    return bad
