# _observe.pxi -- included into _core.pyx: Python side of the tape-entry
# observers (cg_entry_hook_push). cgrad/_observe.py builds the public API.

EntryGradient = collections.namedtuple("EntryGradient", ["op", "seq", "location", "grad_outputs"])
EntryGradient.__doc__ = """One tape entry as a backward reaches it: the op's name, its sequence
number (creation order), where it was created (a string when recorded in
anomaly mode, else None) and the gradients flowing into its outputs."""

cdef cg_status _entry_hook_tramp(void *ctx, const char *op_name, uint64_t seq, const char *location,
                                 int n_outputs, cg_tensor **grad_outputs) noexcept with gil:
    cdef int i
    try:
        grads = []
        for i in range(n_outputs):
            cg_tensor_retain(grad_outputs[i])
            grads.append(_wrap(grad_outputs[i]))
        loc = location.decode("utf-8", "replace") if location != NULL else None
        (<object>ctx)(EntryGradient(op_name.decode("utf-8", "replace"), seq, loc, tuple(grads)))
        return CG_OK
    except BaseException as e:
        return _stash_callback_error(e, "backward observer")

def _entry_hook_push(fn):
    cdef int64_t handle = 0
    Py_INCREF(fn)
    _check(cg_entry_hook_push(<cg_entry_hook_fn>_entry_hook_tramp, <void *>fn, _release_pyobj, &handle))
    return handle

def _entry_hook_pop(int64_t handle):
    _check(cg_entry_hook_pop(handle))
