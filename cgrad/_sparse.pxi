# Row-sparse tensors (include/cgrad.h, "row-sparse tensors"), the sparse
# embedding, the CSR linear op and the sparse optimizer updates. Included
# into _core.pyx; the Tensor methods (is_sparse, indices, values, coalesce,
# to_dense) are in the class body there.

def _refuse_sparse_numpy(Tensor t):
    if cg_tensor_is_sparse(t.c):
        raise TypeError("can't convert a row-sparse tensor to a NumPy array; call to_dense() "
                        "first (or use indices() / values())")


def _refuse_device_numpy(Tensor t):
    if cg_tensor_device(t.c) != CG_DEVICE_CPU:
        raise TypeError(f"can't convert a tensor on '{t.device}' to a NumPy array without a copy; "
                        "use tensor.cpu() to copy it to host memory first")


def _sparse_repr(Tensor t):
    pad = " " * 7
    ind = repr(t.indices()).replace("\n", "\n" + pad)
    val = repr(t.values()).replace("\n", "\n" + pad)
    return (f"tensor(indices={ind},\n{pad}values={val},\n{pad}size={t.shape}, "
            f"nnz={cg_sparse_nnz(t.c)}, layout=sparse_coo)")


def _sparse_add(Tensor a, Tensor b):
    cdef cg_tensor *r = NULL
    _check(cg_sparse_add(a.c, b.c, &r))
    return _wrap(r)


def sparse_coo_tensor(indices, values, size=None, dtype=None, requires_grad=False):
    """A row-sparse tensor (PyTorch's sparse_coo_tensor with one sparse dim):
    indices of shape (1, nnz) or (nnz,), values (nnz, *row_shape), size
    (num_rows, *row_shape) (default: max index + 1 rows). Shares the parts'
    memory when they are contiguous tensors already."""
    if requires_grad:
        raise NotImplementedError("sparse_coo_tensor: row-sparse tensors carry no autograd history "
                                  "(requires_grad=True is not supported)")
    cdef Tensor it = indices if isinstance(indices, Tensor) else tensor(np.asarray(indices), dtype=int64)
    cdef Tensor vt = values if isinstance(values, Tensor) else tensor(values, dtype=dtype)
    if dtype is not None and vt.dtype is not dtype:
        vt = vt.to(dtype)
    if it.ndim == 2:
        if it.shape[0] != 1:
            raise ValueError(f"sparse_coo_tensor: indices of shape {it.shape}: only one sparse dim "
                             "(row-sparse, shape (1, nnz)) is supported")
        it = it.reshape(-1)
    if it.ndim != 1:
        raise ValueError(f"sparse_coo_tensor: indices must have shape (1, nnz) or (nnz,), got {it.shape}")
    if vt.ndim < 1:
        raise ValueError(f"sparse_coo_tensor: values must have shape (nnz, ...), got {vt.shape}")
    if size is None:  # one scalar from the device, not a host copy of the indices
        rows = max(int(it.max().item()) + 1, 0) if it.numel() else 0  # < 0: the check names it
        size = (rows,) + tuple(vt.shape[1:])
    size = tuple(int(s) for s in size)
    if len(size) != vt.ndim or size[1:] != tuple(vt.shape[1:]):
        raise ValueError(f"sparse_coo_tensor: size {size} does not match values of shape {vt.shape} "
                         "(size must be (num_rows, *values.shape[1:]))")
    cdef cg_tensor *r = NULL
    _check(cg_sparse_rows(it.c, vt.c, size[0], &r))
    return _wrap(r)


def _rebuild_sparse(indices, values, size, device="cpu"):
    """Unpickles a row-sparse tensor: host parts put on the device it was saved from."""
    cdef Tensor t = sparse_coo_tensor(indices, values, size)
    return t if device == "cpu" else t.to(device)


def embedding_sparse(input, Tensor weight not None, padding_idx=None):
    """embedding whose backward gives weight a row-sparse gradient (one row per
    looked-up index, padding_idx's rows left out)."""
    cdef Tensor idx = _index_tensor(input)
    cdef cg_tensor *r = NULL
    cdef int64_t pad = -1 if padding_idx is None else int(padding_idx)
    _check(cg_embedding_sparse(weight.c, idx.c, pad, &r))
    return _wrap(r)


def sparse_linear(Tensor x not None, Tensor indptr not None, Tensor indices not None,
                  Tensor values not None, Tensor bias, int64_t out_features):
    """x @ W^T + bias with W (out_features, in) in CSR (indptr, indices, values)."""
    cdef cg_tensor *r = NULL
    cdef cg_tensor *b = NULL if bias is None else bias.c
    cdef cg_status st
    with nogil:
        st = cg_sparse_linear(x.c, indptr.c, indices.c, values.c, b, out_features, &r)
    _check(st)
    return _wrap(r)


def _sgd_sparse_update(Tensor param not None, Tensor grad not None, Tensor momentum_buffer,
                       double lr, double momentum, double dampening, double weight_decay,
                       bint nesterov, bint maximize):
    """SGD on a row-sparse grad; returns the new (row-sparse) momentum buffer
    or None without momentum."""
    cdef cg_sgd_options o
    o.lr = lr
    o.momentum = momentum
    o.dampening = dampening
    o.weight_decay = weight_decay
    o.nesterov = nesterov
    o.maximize = maximize
    cdef cg_tensor *buf = _opt_c(momentum_buffer)
    cdef cg_tensor *out = NULL
    cdef cg_status st
    with nogil:
        st = cg_sgd_sparse_update(param.c, grad.c, buf, &o, &out)
    _check(st)
    return None if out == NULL else _wrap(out)


def _adagrad_sparse_update(Tensor param not None, Tensor grad not None,
                           Tensor state_sum not None, int64_t step, double lr, double lr_decay,
                           double weight_decay, double eps, double initial_accumulator_value,
                           bint maximize):
    cdef cg_adagrad_options o
    o.lr = lr
    o.lr_decay = lr_decay
    o.weight_decay = weight_decay
    o.eps = eps
    o.initial_accumulator_value = initial_accumulator_value
    o.maximize = maximize
    cdef cg_status st
    with nogil:
        st = cg_adagrad_sparse_update(param.c, grad.c, state_sum.c, step, &o)
    _check(st)


def _sparse_adam_update(Tensor param not None, Tensor grad not None, Tensor exp_avg not None,
                        Tensor exp_avg_sq not None, int64_t step, double lr, double beta1,
                        double beta2, double eps, bint maximize):
    cdef cg_adam_options o
    o.lr = lr
    o.beta1 = beta1
    o.beta2 = beta2
    o.eps = eps
    o.weight_decay = 0.0
    o.decoupled_weight_decay = 0
    o.amsgrad = 0
    o.maximize = maximize
    cdef cg_status st
    with nogil:
        st = cg_sparse_adam_update(param.c, grad.c, exp_avg.c, exp_avg_sq.c, step, &o)
    _check(st)
