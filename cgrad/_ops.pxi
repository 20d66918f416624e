# _ops.pxi -- included into _core.pyx: Python access to the C op registry
# (cg_op_register / cg_op_call / cg_op_call_handle). cgrad/ops.py builds the
# public API.

cdef int _op_args(str name, tuple tensors, tuple params, cg_tensor **ins, double *prm) except -1:
    """Fills ins (borrowed) and prm from the call's arguments."""
    cdef Py_ssize_t n = len(tensors), k = len(params), i
    if n > 16 or k > 16:
        raise ValueError(f"op '{name}': at most 16 tensors and 16 params, got {n} and {k}")
    for i in range(n):
        if not isinstance(tensors[i], Tensor):
            raise TypeError(f"op '{name}': input {i} must be a Tensor, got {type(tensors[i]).__name__}")
        ins[i] = (<Tensor>tensors[i]).c
    for i in range(k):
        prm[i] = _op_param(name, <int>i, params[i])
    return 0

def _op_call(str name, tuple tensors, tuple params):
    cdef cg_tensor *ins[16]
    cdef double prm[16]
    _op_args(name, tensors, params, ins, prm)
    cdef int n = <int>len(tensors), k = <int>len(params)
    cdef bytes bname = name.encode()
    cdef const char *cname = bname
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_op_call(cname, n, ins, k, prm, &r)
    _check(st)
    return _wrap(r)


cdef class OpHandle:
    """A registered op resolved once (cg_op_find): calls go through the
    handle (cg_op_call_handle), with no name lookup and no registry lock.
    op(*tensors_and_numbers) takes the tensors as the op's inputs and the
    numbers as its params, in order; op(*tensors, params=(...)) gives the
    params explicitly. The handle keeps the op alive: it still runs after
    cgrad.ops.unregister (registered then reads False)."""
    cdef cg_op_handle *h
    cdef readonly str name

    def __cinit__(self):
        self.h = NULL

    def __dealloc__(self):
        cg_op_handle_free(self.h)

    def __init__(self):
        raise TypeError("OpHandle cannot be created directly; use cgrad.ops.<name>")

    @property
    def __name__(self):
        return self.name

    @property
    def registered(self):
        """True while the op this handle refers to is registered."""
        return cg_op_handle_is_registered(self.h) != 0

    def __repr__(self):
        state = "" if self.registered else ", unregistered"
        return f"<cgrad.ops.{self.name} (registered C op{state})>"

    def __call__(self, *args, params=None, **kwargs):
        if kwargs:
            raise TypeError(f"cgrad.ops.{self.name}: unexpected keyword arguments {sorted(kwargs)}")
        # One pass straight into the C arrays: this is the per-call path.
        cdef cg_tensor *ins[16]
        cdef double prm[16]
        cdef int n = 0, k = 0
        for a in args:
            if isinstance(a, Tensor):
                if n == 16:
                    _too_many(self.name, args, params)
                ins[n] = (<Tensor>a).c
                n += 1
            elif params is not None:
                raise TypeError(f"cgrad.ops.{self.name}: params given both positionally ({a!r}) and as "
                                f"params={params!r}")
            else:
                if k == 16:
                    _too_many(self.name, args, params)
                prm[k] = _op_param(self.name, k, a)
                k += 1
        if params is not None:
            for a in params:
                if k == 16:
                    _too_many(self.name, args, params)
                prm[k] = _op_param(self.name, k, a)
                k += 1
        cdef cg_tensor *r = NULL
        cdef cg_status st
        with nogil:
            st = cg_op_call_handle(self.h, n, ins, k, prm, &r)
        _check(st)
        return _wrap(r)


cdef double _op_param(str name, int i, object v) except? -1.0:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TypeError(f"op '{name}': param {i} must be a number, got {v!r}") from None


cdef int _too_many(str name, tuple args, object params) except -1:
    n = sum(isinstance(a, Tensor) for a in args)
    k = len(args) - n + (len(params) if params is not None else 0)
    raise ValueError(f"op '{name}': at most 16 tensors and 16 params, got {n} and {k}")


def _op_find(str name):
    """OpHandle of op name; ValueError naming it when none is registered."""
    cdef OpHandle op = OpHandle.__new__(OpHandle)
    _check(cg_op_find(name.encode(), &op.h))
    op.name = name
    return op

def _op_names():
    cdef int i, n = cg_op_count()
    out = []
    for i in range(n):
        name = cg_op_name(i)
        if name != NULL:
            out.append(name.decode())
    return out

def _op_info(str name):
    cdef int n_in = 0, n_par = 0
    _check(cg_op_info(name.encode(), &n_in, &n_par))
    return n_in, n_par

def _op_unregister(str name):
    _check(cg_op_unregister(name.encode()))

def _op_gradcheck(str name, tuple tensors, tuple params, double eps, double atol, double rtol):
    cdef cg_tensor *ins[16]
    cdef double prm[16]
    _op_args(name, tensors, params, ins, prm)
    cdef int n = <int>len(tensors), k = <int>len(params)
    cdef cg_status st = cg_op_gradcheck(name.encode(), n, ins, k, prm, eps, atol, rtol)
    if st == CG_ERR_VALUE and b"gradient mismatch" in cg_last_error():
        from cgrad._gradcheck import GradcheckError
        raise GradcheckError(cg_last_error().decode("utf-8", "replace"))
    _check(st)
    return True

def _last_error():
    return cg_last_error().decode("utf-8", "replace")
