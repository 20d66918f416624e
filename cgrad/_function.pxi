# Python custom autograd Functions on the C tape (cg_record_custom).
# Included into _core.pyx so it can reach Tensor internals.
#
#     class MySquare(Function):
#         @staticmethod
#         def forward(ctx, x):
#             ctx.save_for_backward(x)
#             return x * x
#
#         @staticmethod
#         def backward(ctx, g):
#             x, = ctx.saved_tensors
#             return 2 * x * g
#
#     y = MySquare.apply(x)
#
# apply() runs forward under no-grad, then records ONE tape entry named after
# the subclass with cg_record_custom: its inputs are the tensor arguments, its
# outputs the floating tensor outputs that are not marked non-differentiable,
# its context the FunctionCtx (owned by the entry: one Py_INCREF, dropped by
# _fn_ctx_free), its backward the trampoline _fn_backward_tramp. The engine
# runs that trampoline with grad mode == create_graph, so a backward written
# with cgrad ops is itself recorded (double backward works).
#
# A Python exception inside backward is stashed with _stash_callback_error
# (CG_ERR_CALLBACK) and re-raised, same object, by _raise() when cg_backward /
# cg_grad return.

from libc.string cimport memcpy

import functools as _functools
import warnings as _warnings
import weakref as _weakref

# ---------------------------------------------------------------- internals
# Two things the public C API cannot do yet (see the report / ARCHITECTURE):
#  * give a saved OUTPUT back to backward linked to its own entry (the ctx
#    holds only a detached alias: the entry owns the ctx, so holding the
#    output itself would be a reference cycle through C that nothing frees);
#  * tell whether the entry was released by a non-retained backward.
# Both are three field accesses, kept in the two functions below.
cdef extern from "cg_internal.h" nogil:
    ctypedef struct _cg_node_i "cg_node":
        int64_t refcount
        int released
    ctypedef struct _cg_tensor_i "cg_tensor":
        _cg_node_i *grad_fn
        int output_nr
        int requires_grad

cdef inline void *_grad_fn_ptr(cg_tensor *t) noexcept:
    return <void *>(<_cg_tensor_i *>t).grad_fn

cdef inline bint _node_released(void *node) noexcept:
    return (<_cg_node_i *>node).released != 0

cdef Tensor _relink_output(Tensor alias, void *node, int output_nr):
    """A new tensor over alias's storage that is output output_nr of node."""
    cdef cg_tensor *r = NULL
    _check(cg_detach(alias.c, &r))
    cdef _cg_tensor_i *ri = <_cg_tensor_i *>r
    cdef _cg_node_i *n = <_cg_node_i *>node
    ri.grad_fn = n
    n.refcount += 1
    ri.output_nr = output_nr
    ri.requires_grad = 1
    return _wrap(r)

# ---------------------------------------------------------------- helpers
DEF _META_STRIDE = 10  # per tensor input: dtype, ndim, shape[8]

cdef str _shape_str(int ndim, const int64_t *shape):
    if ndim == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join([str(shape[i]) for i in range(ndim)]) + ")"

cdef inline Tensor _wrap_retained(cg_tensor *t):
    cg_tensor_retain(t)
    return _wrap(t)

cdef inline bint _has_ptr(list tensors, cg_tensor *p):
    for t in tensors:
        if (<Tensor>t).c == p:
            return True
    return False

cdef inline bint _has_obj(tuple objs, object o):
    for x in objs:
        if x is o:
            return True
    return False

cdef str _fname(FunctionCtx ctx):
    return ctx._info.name if ctx._info is not None else "Function"


cdef class _FnInfo:
    """What apply() needs of a Function subclass, computed once per class."""
    cdef object cls
    cdef bytes cname
    cdef str name
    cdef bint setup_ctx
    cdef object sig  # inspect.Signature of forward, only once kwargs are used

    cdef tuple bind(self, tuple args, dict kwargs):
        """Binds keyword arguments to forward's positional parameters, so
        each of them gets a gradient slot (defaults fill the gaps)."""
        if self.sig is None:
            import inspect
            self.sig = inspect.signature(self.cls.forward)
        try:
            b = self.sig.bind(*args, **kwargs) if self.setup_ctx else \
                self.sig.bind(None, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{self.name}.apply: {e}") from None
        b.apply_defaults()
        pos = tuple(b.args) if self.setup_ctx else tuple(b.args)[1:]
        kw = dict(b.kwargs)
        if kw and cg_is_grad_enabled():
            for k, v in kw.items():
                if isinstance(v, Tensor) and cg_tensor_requires_grad((<Tensor>v).c):
                    raise TypeError(
                        f"{self.name}.apply: keyword-only argument '{k}' is a tensor that requires "
                        f"grad, but only positional parameters of forward can receive a gradient "
                        f"from backward; make '{k}' a positional parameter (or detach it)")
        return pos, kw


cdef _FnInfo _make_info(object cls):
    cdef _FnInfo info = _FnInfo.__new__(_FnInfo)
    info.cls = cls
    info.name = cls.__name__
    info.cname = info.name.encode("utf-8", "replace")
    sc = cls.__dict__.get("setup_context", None)
    if sc is None:
        for base in cls.__mro__[1:]:
            if base is Function:
                break
            if "setup_context" in base.__dict__:
                sc = base.__dict__["setup_context"]
                break
    info.setup_ctx = sc is not None
    info.sig = None
    return info


# ---------------------------------------------------------------- ctx
cdef class FunctionCtx:
    """The `ctx` given to a custom Function's forward and backward.

    save_for_backward(*tensors) / saved_tensors, needs_input_grad,
    mark_non_differentiable(*outputs), set_materialize_grads(bool), and any
    other attribute you set on it (numbers, shapes, flags). Tensors needed by
    backward should go through save_for_backward: it checks in-place
    modifications, is freed after a non-retained backward, and is the only
    safe place for an OUTPUT of forward (an output stored as a plain ctx
    attribute keeps its own graph alive forever)."""
    cdef dict __dict__
    cdef object __weakref__
    cdef _FnInfo _info
    cdef readonly tuple needs_input_grad
    cdef tuple _saved            # as saved (outputs replaced by detached aliases)
    cdef tuple _saved_versions
    cdef bytes _saved_kind       # None, or per saved entry: 0 plain, k+1 output k
    cdef tuple _non_diff
    cdef bint _materialize
    cdef bint _released
    cdef void *_node             # borrowed: the entry that owns this ctx
    cdef int _n_args
    cdef tuple _tidx             # arg index of each tensor input; None: all args are tensors
    cdef int _n_tin
    cdef int64_t *_meta          # per tensor input: dtype, ndim, shape[8]
    cdef tuple _out_map          # None: outputs == recorded outputs, in order
    cdef dict _nd_meta           # output index -> (shape, dtype) of non-diff tensor outputs
    cdef bytearray _got          # materialize_grads=False: output k got a gradient

    def __cinit__(self):
        self._materialize = True
        self._meta = NULL
        self._node = NULL

    def __dealloc__(self):
        free(self._meta)
        self._meta = NULL

    def save_for_backward(self, *tensors):
        """Saves tensors (or None) for backward; read them back with
        ctx.saved_tensors. Call it once, in forward (or setup_context)."""
        cdef Py_ssize_t i, n = len(tensors)
        vers = [0] * n
        for i in range(n):
            t = tensors[i]
            if t is None:
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"save_for_backward can only save tensors (or None), got "
                                f"{type(t).__name__} at position {i}; store other values as "
                                f"ctx attributes")
            vers[i] = cg_tensor_version((<Tensor>t).c)
        self._saved = tensors
        self._saved_versions = tuple(vers)
        self._saved_kind = None

    def mark_non_differentiable(self, *outputs):
        """Marks outputs of forward that get no gradient (they will not
        require grad; their grad_output in backward is zeros, or None with
        set_materialize_grads(False))."""
        for o in outputs:
            if not isinstance(o, Tensor):
                raise TypeError(f"mark_non_differentiable expects output tensors, got {type(o).__name__}")
        self._non_diff = outputs if self._non_diff is None else self._non_diff + outputs

    def set_materialize_grads(self, value):
        """With False, backward receives None (instead of a tensor of zeros)
        for each output that got no gradient in this backward."""
        self._materialize = bool(value)

    def mark_dirty(self, *args):
        raise NotImplementedError(
            "ctx.mark_dirty: in-place custom Functions are not supported by cgrad; return a new "
            "tensor from forward instead")

    @property
    def saved_tensors(self):
        """The tensors given to save_for_backward, checked for in-place
        modification. Raises RuntimeError once a non-retained backward has
        freed them."""
        if self._released or (self._node != NULL and _node_released(self._node)):
            raise RuntimeError(
                f"Trying to backward through the graph a second time (or directly access saved "
                f"tensors after they have already been freed) in {_fname(self)}. Saved values "
                f"are freed when you call .backward() or autograd.grad(). Specify "
                f"retain_graph=True if you need to backward through the graph a second time or "
                f"to access saved tensors after calling backward.")
        saved = self._saved
        if saved is None:
            return ()
        cdef Py_ssize_t i, n = len(saved)
        cdef bytes kind = self._saved_kind
        cdef Tensor t
        cdef uint64_t v
        cdef int k
        out = None
        for i in range(n):
            s = saved[i]
            if s is None:
                continue
            t = <Tensor>s
            v = self._saved_versions[i]
            if cg_tensor_version(t.c) != v:
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: saved tensor {i} of {_fname(self)} (shape "
                    f"{_shape_str(cg_tensor_ndim(t.c), cg_tensor_shape(t.c))}, dtype "
                    f"{t.dtype.name}) is at version {cg_tensor_version(t.c)}; expected version "
                    f"{v} instead.")
            if kind is not None and kind[i] != 0 and self._node != NULL:
                k = kind[i] - 1
                if out is None:
                    out = list(saved)
                out[i] = _relink_output(t, self._node, k)
        return tuple(out) if out is not None else saved

    @property
    def saved_variables(self):
        return self.saved_tensors

    @property
    def materialize_grads(self):
        return self._materialize

    cdef void _release(self):
        self._released = True
        self._node = NULL
        self._saved = None

    # ---- backward side
    cdef tuple _grad_outputs(self, int n_out, cg_tensor **gout):
        cdef int i, e
        cdef bytearray got = self._got
        cdef tuple omap = self._out_map
        if omap is None and got is None:
            if n_out == 1:
                return (_wrap_retained(gout[0]),)
            return tuple([_wrap_retained(gout[i]) for i in range(n_out)])
        res = []
        cdef int n = n_out if omap is None else len(omap)
        for i in range(n):
            e = i if omap is None else omap[i]
            if e >= 0:
                if got is not None and not got[e]:
                    res.append(None)
                else:
                    res.append(_wrap_retained(gout[e]))
            elif e == -1:
                res.append(None)
            elif self._materialize:
                shape, dt = self._nd_meta[i]
                res.append(zeros(shape, dtype=dt))
            else:
                res.append(None)
        if got is not None:
            for i in range(len(got)):
                got[i] = 0
        return tuple(res)

    cdef int _set_grad_inputs(self, object res, int n_in, const int *needs,
                              cg_tensor **gin) except -1:
        cdef int n = self._n_args
        if type(res) is not tuple:
            res = (res,)
        cdef Py_ssize_t nr = len(<tuple>res)
        cdef Py_ssize_t i
        if nr != n:
            if nr > n and all([x is None for x in (<tuple>res)[n:]]):
                pass  # trailing Nones are fine (as PyTorch)
            else:
                raise RuntimeError(
                    f"{_fname(self)}.backward returned an incorrect number of gradients "
                    f"(expected {n}, one per forward argument; got {nr})")
        cdef tuple tidx = self._tidx
        if tidx is not None:
            for i in range(n):
                if res[i] is not None and not _has_int(tidx, i):
                    raise TypeError(
                        f"{_fname(self)}.backward returned a gradient for input {i}, which is "
                        f"not a tensor; return None for it")
        cdef int j, ai, nd, gnd, d
        cdef Tensor g
        cdef const int64_t *gs
        cdef int64_t *m
        cdef cg_tensor *red
        for j in range(n_in):
            ai = j if tidx is None else tidx[j]
            gv = res[ai]
            if gv is None:
                continue
            if not isinstance(gv, Tensor):
                raise TypeError(
                    f"{_fname(self)}.backward returned {type(gv).__name__} for input {ai}; "
                    f"expected a Tensor or None")
            if not needs[j]:
                continue
            g = <Tensor>gv
            m = self._meta + j * _META_STRIDE
            if <int64_t>cg_tensor_dtype(g.c) != m[0]:
                raise TypeError(
                    f"{_fname(self)}.backward returned a gradient of dtype "
                    f"{cg_dtype_name(cg_tensor_dtype(g.c)).decode()} for input {ai} of dtype "
                    f"{cg_dtype_name(<cg_dtype>m[0]).decode()}")
            nd = <int>m[1]
            gnd = cg_tensor_ndim(g.c)
            gs = cg_tensor_shape(g.c)
            if not _same_shape(nd, m + 2, gnd, gs):
                if not _expandable(nd, m + 2, gnd, gs):
                    raise ValueError(
                        f"{_fname(self)}.backward returned a gradient of shape "
                        f"{_shape_str(gnd, gs)} for input {ai} of shape {_shape_str(nd, m + 2)}")
                # as PyTorch: a gradient of the broadcast shape is summed down
                red = NULL
                _check(cg_sum_to_shape(g.c, nd, m + 2, &red))
                gin[j] = red
                continue
            cg_tensor_retain(g.c)
            gin[j] = g.c
        return 0


cdef inline bint _has_int(tuple t, Py_ssize_t v):
    for x in t:
        if <Py_ssize_t>x == v:
            return True
    return False

cdef inline bint _same_shape(int na, const int64_t *a, int nb, const int64_t *b) noexcept:
    if na != nb:
        return False
    cdef int i
    for i in range(na):
        if a[i] != b[i]:
            return False
    return True

cdef inline bint _expandable(int n, const int64_t *shape, int gn, const int64_t *gshape) noexcept:
    """Is `shape` broadcastable to `gshape`?"""
    if gn < n:
        return False
    cdef int i
    for i in range(1, n + 1):
        if shape[n - i] != gshape[gn - i] and shape[n - i] != 1:
            return False
    return True


# ---------------------------------------------------------------- C callbacks
cdef void _fn_ctx_free(void *p) noexcept with gil:
    cdef FunctionCtx ctx = <FunctionCtx>p
    ctx._release()
    Py_DECREF(ctx)

cdef cg_status _fn_backward_tramp(void *p, int n_out, cg_tensor **gout, int n_in,
                                  const int *needs, cg_tensor **gin) noexcept with gil:
    cdef FunctionCtx ctx = <FunctionCtx>p
    try:
        grads = ctx._grad_outputs(n_out, gout)
        res = ctx._info.cls.backward(ctx, *grads)
        ctx._set_grad_inputs(res, n_in, needs, gin)
        return CG_OK
    except BaseException as e:
        return _stash_callback_error(e, f"{_fname(ctx)}.backward")


cdef class _GotGradHook:
    """set_materialize_grads(False): marks output idx as having received a
    gradient (a grad hook runs only on gradients that exist)."""
    cdef FunctionCtx ctx
    cdef int idx

cdef cg_status _got_grad_hook(void *p, cg_tensor *grad, cg_tensor **replacement) noexcept with gil:
    cdef _GotGradHook h = <_GotGradHook>p
    if h.ctx._got is not None:
        h.ctx._got[h.idx] = 1
    return CG_OK


# ---------------------------------------------------------------- apply
cdef object _function_apply(object cls, tuple args, dict kwargs):
    cdef _FnInfo info
    try:
        info = <_FnInfo?>cls._cg_info
    except AttributeError:
        raise TypeError("Function.apply must be called on a subclass of Function") from None
    if info.cls is not cls:  # a subclass created without Function.__init_subclass__
        info = _make_info(cls)
        cls._cg_info = info
    if kwargs:
        args, kwargs = info.bind(args, kwargs)
    cdef Py_ssize_t i, n = len(args)
    cdef bint grad_on = cg_is_grad_enabled()
    cdef bint any_rg = False, rg, all_t = True
    cdef FunctionCtx ctx = FunctionCtx.__new__(FunctionCtx)
    ctx._info = info
    ctx._n_args = <int>n
    tins = []
    tidx = None
    needs = [False] * n
    for i in range(n):
        a = args[i]
        if isinstance(a, Tensor):
            tins.append(a)
            if tidx is not None:
                tidx.append(i)
            rg = grad_on and cg_tensor_requires_grad((<Tensor>a).c)
            if rg:
                needs[i] = True
                any_rg = True
        elif all_t:
            all_t = False
            tidx = list(range(len(tins)))
    ctx.needs_input_grad = tuple(needs)

    cdef int prev = cg_set_grad_enabled(0)
    try:
        if info.setup_ctx:
            out = cls.forward(*args, **kwargs)
            cls.setup_context(ctx, args, out)
        elif kwargs:
            out = cls.forward(ctx, *args, **kwargs)
        else:
            out = cls.forward(ctx, *args)
    finally:
        cg_set_grad_enabled(prev)
    if not any_rg:
        return out
    ctx._tidx = None if tidx is None else tuple(tidx)
    return _record(ctx, info, args, tins, out)


cdef object _record(FunctionCtx ctx, _FnInfo info, tuple args, list tins, object out):
    cdef bint is_tuple = type(out) is tuple
    cdef tuple outs = <tuple>out if is_tuple else (out,)
    cdef Py_ssize_t i, no = len(outs)
    cdef tuple nondiff = ctx._non_diff
    cdef Tensor t
    cdef bint diff
    rec = []
    result = None
    omap = None
    for i in range(no):
        o = outs[i]
        if isinstance(o, Tensor):
            t = <Tensor>o
            diff = _float_tensor(t) and (nondiff is None or not _has_obj(nondiff, o))
            # An input returned as is (or a view of it that requires grad, or
            # an output listed twice) gets a fresh header over the same
            # storage: cg_record_custom needs fresh outputs without grad_fn.
            if cg_tensor_requires_grad(t.c) or _has_ptr(tins, t.c) or (diff and _has_ptr(rec, t.c)):
                t = t.detach()
                if result is None:
                    result = list(outs)
                result[i] = t
            if diff:
                if omap is not None:
                    omap.append(len(rec))
                rec.append(t)
            else:
                if omap is None:
                    omap = list(range(i))
                omap.append(-2)
                if ctx._nd_meta is None:
                    ctx._nd_meta = {}
                ctx._nd_meta[i] = (t.shape, t.dtype)
        else:
            if omap is None:
                omap = list(range(i))
            omap.append(-1)
    if result is not None:
        out = tuple(result) if is_tuple else result[0]
    cdef Py_ssize_t nr = len(rec), nt = len(tins)
    if nr == 0:
        return out  # nothing differentiable came out: nothing to record
    if omap is not None:
        ctx._out_map = tuple(omap)

    # Metadata of the tensor inputs for checking backward's gradients.
    cdef int64_t *m
    cdef int nd
    cdef Tensor ti
    if nt:
        ctx._meta = <int64_t *>malloc(nt * _META_STRIDE * sizeof(int64_t))
        if ctx._meta == NULL:
            raise MemoryError()
        for i in range(nt):
            ti = <Tensor>tins[i]
            m = ctx._meta + i * _META_STRIDE
            nd = cg_tensor_ndim(ti.c)
            m[0] = <int64_t>cg_tensor_dtype(ti.c)
            m[1] = nd
            if nd:
                memcpy(m + 2, cg_tensor_shape(ti.c), nd * sizeof(int64_t))
    ctx._n_tin = <int>nt

    cdef cg_tensor *ins_s[8]
    cdef cg_tensor *outs_s[8]
    cdef cg_tensor **ins = ins_s
    cdef cg_tensor **outc = outs_s
    if nt > 8:
        ins = <cg_tensor **>malloc(nt * sizeof(cg_tensor *))
    if nr > 8:
        outc = <cg_tensor **>malloc(nr * sizeof(cg_tensor *))
    if ins == NULL or outc == NULL:
        if ins != ins_s: free(ins)
        if outc != outs_s: free(outc)
        raise MemoryError()
    for i in range(nt):
        ins[i] = (<Tensor>tins[i]).c
    for i in range(nr):
        outc[i] = (<Tensor>rec[i]).c
    Py_INCREF(ctx)  # owned by the entry; _fn_ctx_free drops it
    cdef cg_status st = cg_record_custom(info.cname, <int>nt, ins, <int>nr, outc,
                                         <cg_custom_backward_fn>_fn_backward_tramp, <void *>ctx, _fn_ctx_free)
    if ins != ins_s: free(ins)
    if outc != outs_s: free(outc)
    _check(st)
    ctx._node = _grad_fn_ptr((<Tensor>rec[0]).c)
    if ctx._node == NULL:
        return out  # not recorded after all (grad mode or requires_grad changed in forward)

    # Saved outputs: keep a detached alias (relinked on unpack), not the
    # output itself (the entry owns the ctx: that would be a cycle).
    cdef tuple saved = ctx._saved
    cdef int k
    if saved:
        kinds = None
        new = None
        for i in range(len(saved)):
            s = saved[i]
            if s is None or _has_obj(args, s):
                continue
            k = -1
            for j in range(no):
                if outs[j] is s or (result is not None and result[j] is s):
                    e = j if omap is None else omap[j]
                    if e >= 0:
                        k = e
                    break
            if k < 0:
                continue
            if new is None:
                new = list(saved)
                kinds = bytearray(len(saved))
            new[i] = (<Tensor>rec[k]).detach()
            kinds[i] = k + 1
        if new is not None:
            ctx._saved = tuple(new)
            ctx._saved_kind = bytes(kinds)
    d = vars(ctx)
    if d:
        _warn_outputs_on_ctx(ctx, d, rec, outs)
        if _check_mode_on or getattr(ctx._info.cls, "check_mode", None):
            _warn_stashed_on_ctx(ctx, d, rec, outs)

    cdef _GotGradHook h
    cdef int64_t handle
    if not ctx._materialize:
        ctx._got = bytearray(nr)
        for i in range(nr):
            h = _GotGradHook.__new__(_GotGradHook)
            h.ctx = ctx
            h.idx = <int>i
            Py_INCREF(h)
            _check(cg_tensor_register_hook((<Tensor>rec[i]).c, _got_grad_hook, <void *>h,
                                           _release_pyobj, &handle))
    return out


cdef void _warn_outputs_on_ctx(FunctionCtx ctx, dict d, list rec, tuple outs) except *:
    for name, v in d.items():
        if isinstance(v, Tensor) and (_has_obj(outs, v) or _has_ptr(rec, (<Tensor>v).c)):
            _warnings.warn(
                f"{_fname(ctx)}.forward stored an output on ctx.{name}: that keeps the output's "
                f"graph alive forever (a reference cycle through the tape). Use "
                f"ctx.save_for_backward for outputs.", RuntimeWarning, stacklevel=3)


cdef void _warn_stashed_on_ctx(FunctionCtx ctx, dict d, list rec, tuple outs) except *:
    """Check mode: a tensor kept as a ctx attribute escapes the version check
    that save_for_backward gives (an in-place change before backward would
    silently give wrong gradients)."""
    for name, v in d.items():
        if isinstance(v, Tensor) and not (_has_obj(outs, v) or _has_ptr(rec, (<Tensor>v).c)):
            _warnings.warn(
                f"{_fname(ctx)}.forward stored a Tensor on ctx.{name} outside save_for_backward: "
                f"an in-place change to it before backward would go undetected. Use "
                f"ctx.save_for_backward({name}) and ctx.saved_tensors.", RuntimeWarning, stacklevel=1)


# Check mode (cgrad.autograd.set_check_mode): the first apply of each
# Function class is followed by a gradient check of its backward.
_check_mode_on = False
_checked_functions = _weakref.WeakSet()

def _set_check_mode_flag(bint enabled):
    global _check_mode_on
    prev = _check_mode_on
    _check_mode_on = enabled
    return prev

cdef object _checked_apply(object cls, tuple args, dict kwargs):
    mode = getattr(cls, "check_mode", None)
    if mode is False or cls in _checked_functions:
        return _function_apply(cls, args, kwargs)
    _checked_functions.add(cls)  # before the check: it applies cls again
    try:
        out = _function_apply(cls, args, kwargs)
        from cgrad._check_mode import check_function
        check_function(cls, args, kwargs)
    except BaseException:
        _checked_functions.discard(cls)  # check again next time
        raise
    return out


# ---------------------------------------------------------------- Function
class Function:
    """Base class for custom differentiable operations (PyTorch's
    torch.autograd.Function).

    Subclasses define static ``forward(ctx, *args, **kwargs)`` and
    ``backward(ctx, *grad_outputs)`` and are called through
    ``MyFn.apply(*args, **kwargs)``. forward runs under no-grad and returns a
    Tensor or a tuple (non-tensor items pass through). backward gets one
    gradient per output of forward and returns one gradient (or None) per
    argument of forward; a single value is enough when forward has one
    argument. Keyword arguments are bound to forward's parameters, so they
    get gradient slots too. A backward written with cgrad ops is itself
    differentiable (create_graph=True works through it); decorate it with
    @once_differentiable when it is not.

    The PyTorch 2 form is supported too: ``forward(*args)`` without ctx plus
    ``setup_context(ctx, inputs, output)``."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._cg_info = _make_info(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"Legacy autograd function with non-static forward method is not supported: call "
            f"{type(self).__name__}.apply(...) instead of {type(self).__name__}()(...)")

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError("You must implement the forward function for a custom Function")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError("You must implement the backward function for a custom Function "
                                  "to use it in backward")

    # None: follow cgrad.autograd.set_check_mode; True/False: always/never
    # check this Function the first time it is applied.
    check_mode = None

    @classmethod
    def apply(cls, *args, **kwargs):
        """Runs forward and records one tape entry for backward."""
        if _check_mode_on or cls.check_mode:
            return _checked_apply(cls, args, kwargs)
        return _function_apply(cls, args, kwargs)


# ---------------------------------------------------------------- once_differentiable
cdef cg_status _delayed_error_tramp(void *p, int n_out, cg_tensor **gout, int n_in,
                                    const int *needs, cg_tensor **gin) noexcept with gil:
    return cg_set_error(CG_ERR_AUTOGRAD, <bytes><object>p)

cdef object _delay_error(str where, list deps, object outputs):
    """Records an entry from deps to (fresh headers of) the tensor outputs
    whose backward fails: differentiating outputs again raises."""
    cdef bint is_tuple = type(outputs) is tuple
    cdef tuple outs = <tuple>outputs if is_tuple else (outputs,)
    rec = []
    result = list(outs)
    for i in range(len(outs)):
        o = outs[i]
        if isinstance(o, Tensor) and _float_tensor(<Tensor>o):
            t = (<Tensor>o).detach()
            result[i] = t
            rec.append(t)
    if not rec:
        return outputs
    cdef Py_ssize_t nd = len(deps), nr = len(rec), i2
    cdef cg_tensor **ins = <cg_tensor **>malloc(nd * sizeof(cg_tensor *))
    cdef cg_tensor **outc = <cg_tensor **>malloc(nr * sizeof(cg_tensor *))
    if ins == NULL or outc == NULL:
        free(ins); free(outc)
        raise MemoryError()
    for i2 in range(nd):
        ins[i2] = (<Tensor>deps[i2]).c
    for i2 in range(nr):
        outc[i2] = (<Tensor>rec[i2]).c
    msg = (f"trying to differentiate twice a function that was marked with "
           f"@once_differentiable ({where})").encode("utf-8", "replace")
    Py_INCREF(msg)
    cdef cg_status st = cg_record_custom(b"OnceDifferentiableBackward", <int>nd, ins, <int>nr,
                                         outc, <cg_custom_backward_fn>_delayed_error_tramp, <void *>msg,
                                         _release_pyobj)
    free(ins)
    free(outc)
    _check(st)
    return tuple(result) if is_tuple else result[0]


def once_differentiable(fn):
    """Decorator for a custom Function's backward that is not itself
    differentiable (e.g. it computes with NumPy): backward runs under
    no-grad, and a double backward through its results raises RuntimeError
    instead of silently returning wrong (zero) second derivatives."""
    @_functools.wraps(fn)
    def wrapper(ctx, *args):
        prev = cg_set_grad_enabled(0)
        try:
            outputs = fn(ctx, *args)
        finally:
            cg_set_grad_enabled(prev)
        if not prev:
            return outputs
        deps = [a for a in args if isinstance(a, Tensor) and cg_tensor_requires_grad((<Tensor>a).c)]
        if isinstance(ctx, FunctionCtx):
            try:
                saved = ctx.saved_tensors
            except RuntimeError:
                saved = ()
            for s in saved:
                if s is not None and cg_tensor_requires_grad((<Tensor>s).c):
                    deps.append(s)
        if not deps:
            return outputs
        where = f"{_fname(ctx)}.backward" if isinstance(ctx, FunctionCtx) else \
            getattr(fn, "__qualname__", "backward")
        return _delay_error(where, deps, outputs)
    wrapper._cg_once_differentiable = True  # check mode skips its double backward
    return wrapper
