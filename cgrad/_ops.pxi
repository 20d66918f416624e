# _ops.pxi -- included into _core.pyx: Python access to the C op registry
# (cg_op_register / cg_op_call). cgrad/ops.py builds the public API.

def _op_call(str name, tuple tensors, tuple params):
    cdef Py_ssize_t n = len(tensors), k = len(params), i
    if n > 16 or k > 16:
        raise ValueError(f"op '{name}': at most 16 tensors and 16 params, got {n} and {k}")
    cdef cg_tensor *ins[16]
    cdef double prm[16]
    for i in range(n):
        if not isinstance(tensors[i], Tensor):
            raise TypeError(f"op '{name}': input {i} must be a Tensor, got {type(tensors[i]).__name__}")
        ins[i] = (<Tensor>tensors[i]).c
    for i in range(k):
        prm[i] = float(params[i])
    cdef bytes bname = name.encode()
    cdef const char *cname = bname
    cdef cg_tensor *r = NULL
    cdef cg_status st
    with nogil:
        st = cg_op_call(cname, <int>n, ins, <int>k, prm, &r)
    _check(st)
    return _wrap(r)

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
    cdef Py_ssize_t n = len(tensors), k = len(params), i
    if n > 16 or k > 16:
        raise ValueError(f"op '{name}': at most 16 tensors and 16 params, got {n} and {k}")
    cdef cg_tensor *ins[16]
    cdef double prm[16]
    for i in range(n):
        if not isinstance(tensors[i], Tensor):
            raise TypeError(f"op '{name}': input {i} must be a Tensor, got {type(tensors[i]).__name__}")
        ins[i] = (<Tensor>tensors[i]).c
    for i in range(k):
        prm[i] = float(params[i])
    cdef cg_status st = cg_op_gradcheck(name.encode(), <int>n, ins, <int>k, prm, eps, atol, rtol)
    if st == CG_ERR_VALUE and b"gradient mismatch" in cg_last_error():
        from cgrad._gradcheck import GradcheckError
        raise GradcheckError(cg_last_error().decode("utf-8", "replace"))
    _check(st)
    return True

def _last_error():
    return cg_last_error().decode("utf-8", "replace")
