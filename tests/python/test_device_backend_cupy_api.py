"""The "cuda" backend's calls into its array namespace fit CuPy's API.

CI runs the backend (cgrad/backends/, cgrad/cuda.py) with ``xp = numpy``:
a name NumPy has and CuPy lacks, or a keyword NumPy takes and CuPy does
not, would pass every reference-device test and fail on the first GPU. This
reads every ``xp.<name>(...)`` (and ``cupy.``, ``cp.``, ``self.xp.``,
``self.special.``, ...) of those files and checks it against the installed
CuPy: the name resolves, and the call's positional count and keywords bind
to the function's signature. Needs CuPy importable, not a GPU; skipped with
a reason without it."""
import ast
import functools
import importlib.util
import inspect
import pathlib
import re

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cupy") is None,
                                reason="CuPy is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[2] / "cgrad"
FILES = sorted((ROOT / "backends").glob("*.py")) + [ROOT / "cuda.py"]
# a chain's first names that stand for the cupy module, or for cupyx.scipy.special
CUPY_ROOTS = {("xp",), ("cp",), ("cupy",), ("self", "xp"), ("self", "_cp"), ("b", "xp"),
              ("_backend", "xp"), ("be", "xp")}
SPECIAL_ROOTS = {("self", "special"), ("special",)}


def _chain(node):
    """('self', 'xp', 'sum') for the expression self.xp.sum; None when the
    expression is not names joined by dots."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return tuple(reversed(parts))


def uses():
    """(file:line, namespace, dotted name, call or None) for every use:
    call = (positional count or None when starred, keyword names, has **)."""
    found = []
    for path in FILES:
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
                continue  # the outermost attribute of a chain only
            chain = _chain(node)
            if chain is None:
                continue
            for roots, space in ((CUPY_ROOTS, "cupy"), (SPECIAL_ROOTS, "special")):
                root = next((r for r in roots if chain[:len(r)] == r), None)
                if root is not None and len(chain) > len(root):
                    break
            else:
                continue
            parent = parents.get(node)
            call = None
            if isinstance(parent, ast.Call) and parent.func is node:
                starred = any(isinstance(a, ast.Starred) for a in parent.args)
                call = (None if starred else len(parent.args),
                        tuple(k.arg for k in parent.keywords if k.arg is not None),
                        any(k.arg is None for k in parent.keywords))
            where = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
            found.append((where, space, ".".join(chain[len(root):]), call))
    return found


def _resolve(space, dotted):
    import cupy
    import cupyx.scipy.special
    base = cupy if space == "cupy" else cupyx.scipy.special
    return functools.reduce(getattr, dotted.split("."), base)


def _signature(f):
    """f's signature: inspect's, else the one its docstring's first line
    gives (Cython builtins: 'from_dlpack(array, *, device=None, copy=None)')."""
    try:
        return inspect.signature(f)
    except (TypeError, ValueError):
        pass
    doc = (getattr(f, "__doc__", None) or "").strip().splitlines()
    m = re.match(r"[\w.]+\((.*)\)", doc[0]) if doc else None
    if m is None:
        return None
    params = [p.strip() for p in m.group(1).replace("\\*", "*").split(",") if p.strip()]
    # Cython's C-typed parameters: 'int device' -> 'device'; and no self
    params = ", ".join(re.sub(r"^(?:[A-Za-z_][\w.]*\s+)+(?=[A-Za-z_*])", "", p) for p in params
                       if p != "self")
    ns = {}
    exec(f"def f({params}): pass", {}, ns)  # the docstring's parameter list, as a def
    return inspect.signature(ns["f"])


def _check_call(f, call):
    import cupy
    npos, kws, _ = call
    if isinstance(f, cupy.ufunc):  # (x1, ..., /, out=None, *, casting, dtype)
        bad = set(kws) - {"out", "casting", "dtype"}
        assert not bad, f"CuPy ufunc {f.__name__} takes no keyword {sorted(bad)}"
        assert npos is None or npos <= f.nin + f.nout, f"{f.__name__} takes {f.nin} inputs, got {npos}"
        return
    if isinstance(f, type):  # a dtype's scalar type (cupy.float32 is numpy's): a constructor
        return
    sig = _signature(f)
    assert sig is not None, f"no signature to check {f!r} against"
    args = [object()] * (npos or 0)
    bind = sig.bind if npos is not None else sig.bind_partial
    try:
        bind(*args, **{k: object() for k in kws})
    except TypeError as e:
        raise AssertionError(f"CuPy's {getattr(f, '__name__', f)}{sig} does not take "
                             f"{npos} positional and keywords {list(kws)}: {e}") from None


def test_the_backend_uses_cupy():
    found = uses()
    names = {d for _, _, d, _ in found}
    # the scan sees the backend's calls (an empty scan would check nothing)
    assert {"sum", "matmul", "where", "add.at", "cuda.Device", "cuda.compiler.compile_using_nvrtc",
            "erf"} <= names, sorted(names)
    assert len(found) > 150


@pytest.mark.parametrize("where,space,dotted,call", uses(), ids=lambda v: v if isinstance(v, str) else "")
def test_call_fits_cupy(where, space, dotted, call):
    try:
        f = _resolve(space, dotted)
    except AttributeError as e:
        raise AssertionError(f"{where}: CuPy has no {dotted} ({e})") from None
    if call is not None:
        try:
            _check_call(f, call)
        except AssertionError as e:
            raise AssertionError(f"{where}: {dotted}: {e}") from None


def test_the_check_refuses_what_cupy_does_not_take():
    import cupy
    with pytest.raises(AssertionError, match="where"):  # NumPy's ufuncs take where=
        _check_call(cupy.add, (2, ("where",), False))
    with pytest.raises(AssertionError, match="initial"):  # NumPy's sum takes initial=
        _check_call(cupy.sum, (1, ("initial",), False))
    with pytest.raises(AssertionError, match="2 positional"):  # a Cython function's docstring
        _check_call(cupy.cuda.runtime.getDeviceProperties, (2, (), False))
    _check_call(cupy.cuda.runtime.getDeviceProperties, (1, (), False))
    with pytest.raises(AttributeError):
        _resolve("cupy", "lib.stride_tricks.no_such_function")
