# _anomaly.pxi -- included into _core.pyx: anomaly mode (NaN/Inf
# localisation). The C tape scans outputs and gradients; these hooks give it
# the user's file and line for each recorded op and turn the first forward
# anomaly into a RuntimeWarning (an error under warnings filters "error").
import os as _os
import warnings as _warnings
from libc.string cimport memcpy

_PKG_DIR = _os.path.dirname(_os.path.abspath(__file__)) + _os.sep

cdef extern from "Python.h":
    ctypedef struct _PyFrame "PyFrameObject":
        pass
    _PyFrame *_cg_get_frame "PyEval_GetFrame"()            # borrowed
    _PyFrame *_cg_frame_back "PyFrame_GetBack"(_PyFrame *f)  # new reference
    ctypedef struct _PyCode "PyCodeObject":
        pass
    _PyCode *_cg_frame_code "PyFrame_GetCode"(_PyFrame *f)  # new reference
    int _cg_frame_line "PyFrame_GetLineNumber"(_PyFrame *f)
    PyObject *_cg_dict_get "PyDict_GetItem"(object d, PyObject *key)  # borrowed

# code object -> True when it belongs to cgrad itself (skipped when naming
# the line that created an op).
cdef dict _internal_code = {}

ctypedef struct _cg_loc:
    PyObject *code  # owned
    int line

cdef bint _is_internal(PyObject *code) except -1:
    cdef PyObject *hit = _cg_dict_get(_internal_code, code)
    if hit != NULL:
        return <object>hit is True
    inside = _os.path.abspath((<object>code).co_filename).startswith(_PKG_DIR)
    _internal_code[<object>code] = inside
    return inside

cdef void *_location_tramp(void *ctx) noexcept with gil:
    """The innermost frame outside cgrad: its code object and line (kept, not
    formatted: formatting waits until a report needs it)."""
    cdef _PyFrame *f = _cg_get_frame()
    cdef _PyFrame *back
    cdef PyObject *code
    cdef bint owned = False
    cdef _cg_loc *loc
    try:
        while f != NULL:
            code = <PyObject *>_cg_frame_code(f)
            if not _is_internal(code):
                loc = <_cg_loc *>malloc(sizeof(_cg_loc))
                if loc != NULL:
                    loc.code = code
                    loc.line = _cg_frame_line(f)
                else:
                    Py_DECREF(<object>code)
                if owned:
                    Py_DECREF(<object>f)
                return loc
            Py_DECREF(<object>code)
            back = _cg_frame_back(f)
            if owned:
                Py_DECREF(<object>f)
            f = back
            owned = True
        return NULL
    except BaseException:
        if owned and f != NULL:
            Py_DECREF(<object>f)
        return NULL  # a location is a courtesy: never fail the op for it

cdef void _location_str(void *tag, char *buf, size_t size) noexcept with gil:
    cdef _cg_loc *loc = <_cg_loc *>tag
    cdef bytes b
    try:
        code = <object>loc.code
        b = f"{code.co_filename}:{loc.line} (in {code.co_name})".encode("utf-8", "replace")
        if <size_t>len(b) >= size:
            b = b[:size - 1]
        memcpy(buf, <char *>b, len(b))
        buf[len(b)] = 0
    except BaseException:
        buf[0] = 0

cdef void _location_free(void *tag) noexcept with gil:
    cdef _cg_loc *loc = <_cg_loc *>tag
    Py_DECREF(<object>loc.code)
    free(loc)

cdef cg_status _anomaly_tramp(void *ctx, const char *message) noexcept with gil:
    try:
        _warnings.warn("cgrad anomaly: " + message.decode("utf-8", "replace"), RuntimeWarning,
                       stacklevel=2)
        return CG_OK
    except BaseException as e:
        return _stash_callback_error(e, "anomaly detection")

cg_set_location_hook(_location_tramp, _location_str, _location_free, NULL)
cg_set_anomaly_hook(_anomaly_tramp, NULL)

def set_detect_anomaly(bint mode):
    """Turns anomaly mode on or off for this thread; returns the previous
    setting."""
    return bool(cg_set_anomaly_mode(mode))

def is_anomaly_enabled():
    return bool(cg_anomaly_mode())

def anomaly_report():
    """The first forward anomaly on this thread since anomaly mode was turned
    on (which op produced NaN/Inf and where it was created), or None."""
    cdef const char *r = cg_anomaly_report()
    return r.decode("utf-8", "replace") if r[0] != 0 else None
