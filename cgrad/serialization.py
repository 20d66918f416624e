"""cgrad.save / cgrad.load: checkpoints of nested state dicts in the
safetensors file layout (docs/checkpoint_format.md has the specification).

    8 bytes   N, little-endian unsigned header length
    N bytes   UTF-8 JSON header: {"__metadata__": {str: str},
                                  name: {"dtype", "shape", "data_offsets"}, ...}
              padded with spaces so that the data starts 8-byte aligned
    rest      raw little-endian row-major tensor bytes, no holes

The non-tensor structure (dicts with any primitive keys, lists, tuples,
numbers, strings, bools, None) is a JSON string in
__metadata__["cgrad.structure"] whose leaves name the tensors, so any
safetensors reader sees the tensors (named by their path, "model.fc.weight")
and cgrad.load rebuilds the whole object. Nothing is unpickled, so loading
runs no code from the file. A tensor on "cuda" is written from a host copy
and its structure node records "device": "cuda:0"; load puts it back there
or where map_location says (as torch.load).

Writes are atomic: a temporary file in the target's directory, fsync,
os.replace, fsync of the directory. A process killed at any point leaves
`path` either as it was or complete (a stale hidden .tmp file may remain)."""
import json
import math
from collections.abc import Mapping
import numbers
import os
import tempfile

import numpy as np

from cgrad import _core
from cgrad._core import Tensor
from cgrad._devices import device as _device

__all__ = ["save", "load"]

FORMAT_VERSION = "1"
_MAX_HEADER = 100_000_000  # the limit safetensors' own reader enforces
_STRUCTURE_KEY = "cgrad.structure"

# cgrad dtype name -> (safetensors dtype, little-endian numpy dtype)
_SAVE_DTYPES = {
    "float32": ("F32", "<f4"), "float64": ("F64", "<f8"),
    "int64": ("I64", "<i8"), "bool": ("BOOL", "|b1"), "float16": ("F16", "<f2"),
}
# safetensors dtype -> (stored numpy dtype, numpy dtype of the loaded tensor).
# Types cgrad has no tensor for are widened (documented in the format doc).
_LOAD_DTYPES = {
    "F64": ("<f8", np.float64), "F32": ("<f4", np.float32), "I64": ("<i8", np.int64),
    "BOOL": ("|u1", np.bool_), "F16": ("<f2", np.float16), "BF16": ("<u2", np.float32),
    "I32": ("<i4", np.int64), "I16": ("<i2", np.int64), "I8": ("|i1", np.int64),
    "U32": ("<u4", np.int64), "U16": ("<u2", np.int64), "U8": ("|u1", np.int64),
}


# ------------------------------------------------------------------ encode
class _Tensors:
    """The tensors met while encoding, each once (by identity), with
    unique safetensors names derived from their path."""

    def __init__(self):
        self.by_id = {}
        self.items = []  # (name, tensor)
        self.names = {"__metadata__"}

    def add(self, t, path):
        key = id(t)
        if key in self.by_id:
            return self.by_id[key][0]
        base = ".".join(path) if path else "tensor"
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}#{k}"
        self.names.add(name)
        self.by_id[key] = (name, t)  # keeps t alive, so ids stay unique
        self.items.append((name, t))
        return name


def _where(path):
    return "obj" + "".join(f"[{p}]" for p in path) if path else "obj"


def _encode_key(k, path):
    if k is None or isinstance(k, (bool, str)):
        return k
    if isinstance(k, (numbers.Integral, np.bool_, numbers.Real)):
        return _encode_number(k)
    if isinstance(k, tuple):
        return {"tuple": [_encode_key(e, path) for e in k]}
    raise TypeError(f"cgrad.save: dict keys must be None, bool, int, float, str or tuples of "
                    f"them; got a {type(k).__name__} key at {_where(path)}")


def _encode_number(x):
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    f = float(x)
    if math.isfinite(f):
        return f
    return {"float": "nan" if math.isnan(f) else ("inf" if f > 0 else "-inf")}


def _encode(obj, path, tensors, active):
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, (bool, np.bool_, numbers.Number)):
        if isinstance(obj, numbers.Complex) and not isinstance(obj, numbers.Real):
            raise TypeError(f"cgrad.save: cannot save a complex number at {_where(path)}")
        return _encode_number(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise TypeError(f"cgrad.save: cannot save a NumPy array of dtype {obj.dtype} at {_where(path)}")
        obj = _core.tensor(obj)
    if isinstance(obj, Tensor) and obj.is_sparse:  # e.g. SGD's sparse momentum buffer
        return {"sparse_coo": [_encode(obj.indices(), path + ["indices"], tensors, active),
                               _encode(obj.values(), path + ["values"], tensors, active),
                               [int(s) for s in obj.shape]]}
    if isinstance(obj, Tensor):
        node = {"tensor": tensors.add(obj, path)}
        if obj.requires_grad:
            node["requires_grad"] = True
        if obj.device != "cpu":  # written from host memory; load puts it back there
            node["device"] = str(obj.device)
        return node
    if isinstance(obj, (Mapping, list, tuple)):
        if id(obj) in active:
            raise ValueError(f"cgrad.save: {_where(path)} contains itself; cyclic structures cannot be saved")
        active.add(id(obj))
        try:
            if isinstance(obj, Mapping):
                pairs = []
                for k, v in obj.items():
                    pairs.append([_encode_key(k, path), _encode(v, path + [str(k)], tensors, active)])
                return {"dict": pairs}
            items = [_encode(v, path + [str(i)], tensors, active) for i, v in enumerate(obj)]
            return {"tuple" if isinstance(obj, tuple) else "list": items}
        finally:
            active.discard(id(obj))
    raise TypeError(f"cgrad.save: cannot save an object of type {type(obj).__name__} at "
                    f"{_where(path)}; supported: tensors, dicts, lists, tuples, numbers, "
                    f"strings, bools and None")


def _header_bytes(structure, entries):
    meta = {"format": "cgrad", "cgrad.format_version": FORMAT_VERSION,
            _STRUCTURE_KEY: json.dumps(structure, allow_nan=False, separators=(",", ":"))}
    header = {"__metadata__": meta}
    header.update(entries)
    raw = json.dumps(header, allow_nan=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # data section starts 8-byte aligned
    if len(raw) > _MAX_HEADER:
        raise ValueError(f"cgrad.save: the header would be {len(raw)} bytes, over the "
                         f"{_MAX_HEADER}-byte limit of safetensors readers")
    return raw


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode(path):
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save(obj, f):
    """Writes obj (tensors, nested dicts/lists/tuples of them, numbers,
    strings, bools, None) to the path f, atomically (see the module doc).
    Tensors are saved detached and contiguous; the same tensor object
    appearing twice is stored once and loads as one object."""
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"cgrad.save: f must be a path (str or os.PathLike), got {type(f).__name__}")
    path = os.fspath(f)
    tensors = _Tensors()
    structure = _encode(obj, [], tensors, set())

    # widest items first: every tensor's data stays aligned to its item size
    order = sorted(tensors.items, key=lambda it: -it[1].dtype.itemsize)
    arrays, entries, offset = [], {}, 0
    for name, t in order:
        st_dtype, np_dtype = _SAVE_DTYPES[t.dtype.name]
        t = t.detach()
        arr = np.asarray(t.cpu().numpy(), order="C").astype(np_dtype, copy=False)
        entries[name] = {"dtype": st_dtype, "shape": list(t.shape),
                         "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    header = _header_bytes(structure, entries)

    directory = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(len(header).to_bytes(8, "little"))
            out.write(header)
            for arr in arrays:
                if arr.nbytes:
                    out.write(memoryview(arr.reshape(-1)).cast("B"))
            out.flush()
            if hasattr(os, "fchmod"):  # mkstemp creates 0600; give it a normal file's mode
                os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ------------------------------------------------------------------ decode
class _Corrupt(Exception):
    pass


class _PlaceFailed(Exception):
    """Carries an error raised while placing a tensor (map_location's own,
    or a move to an unavailable device) past the handlers that turn errors
    in the file's structure into 'not a valid checkpoint'."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _placed(place, t, location):
    try:
        return place(t, location)
    except Exception as e:  # noqa: BLE001 - re-raised unchanged by load()
        raise _PlaceFailed(e) from e


def _nonneg_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _parse_entry(name, info):
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _Corrupt(f"tensor {name!r} must have exactly dtype, shape and data_offsets, got {info!r}")
    dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
    if dt not in _LOAD_DTYPES:
        raise _Corrupt(f"tensor {name!r} has dtype {dt!r}, which cgrad cannot load "
                       f"(supported: {', '.join(_LOAD_DTYPES)})")
    if not (isinstance(shape, list) and len(shape) <= 8 and all(_nonneg_int(s) for s in shape)):
        raise _Corrupt(f"tensor {name!r} has an invalid shape {shape!r} (at most 8 sizes >= 0)")
    if not (isinstance(offs, list) and len(offs) == 2 and all(_nonneg_int(o) for o in offs)
            and offs[0] <= offs[1]):
        raise _Corrupt(f"tensor {name!r} has invalid data_offsets {offs!r}")
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(_LOAD_DTYPES[dt][0]).itemsize
    if offs[1] - offs[0] != nbytes:
        raise _Corrupt(f"tensor {name!r}: data_offsets {offs} hold {offs[1] - offs[0]} bytes but "
                       f"a {dt} tensor of shape {shape} needs {nbytes}")
    return name, dt, tuple(shape), offs[0], offs[1]


def _read_tensor(f, data_start, entry):
    name, dt, shape, begin, end = entry
    stored, target = _LOAD_DTYPES[dt]
    raw = np.empty(shape, dtype=np.dtype(stored).newbyteorder("="))
    if end > begin:
        f.seek(data_start + begin)
        got = f.readinto(memoryview(raw.reshape(-1)).cast("B"))
        if got != end - begin:
            raise _Corrupt(f"tensor {name!r}: file ends after {got} of its {end - begin} bytes")
    if not np.little_endian and raw.dtype.itemsize > 1:  # pragma: no cover - big-endian hosts
        raw = raw.byteswap()
    if dt == "BOOL":
        if raw.size and raw.max() > 1:
            raise _Corrupt(f"tensor {name!r}: a BOOL byte is {int(raw.max())}, not 0 or 1")
        arr = raw.view(np.bool_)
    elif dt == "BF16":  # the high half of a float32
        arr = (raw.astype(np.uint32) << 16).view(np.float32)
    else:
        arr = raw.astype(target, copy=False)
    return _core.from_numpy(np.asarray(arr, order="C"))


def _decode(node, tensors, used, place):
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) >= 1:
        if "tensor" in node and set(node) <= {"tensor", "requires_grad", "device"}:
            name = node["tensor"]
            if not isinstance(name, str) or name not in tensors:
                raise _Corrupt(f"the structure names a tensor {name!r} that the file does not hold")
            if name not in used:  # placed once: a tensor saved twice loads as one object
                t = _placed(place, tensors[name], _saved_location(name, node.get("device", "cpu")))
                if node.get("requires_grad") is True:
                    if not t.is_floating_point():
                        raise _Corrupt(f"tensor {name!r} of dtype {t.dtype!r} is marked requires_grad")
                    t.requires_grad_(True)
                tensors[name] = t
                used.add(name)
            return tensors[name]
        if len(node) == 1:
            (tag, value), = node.items()
            if tag == "float" and value in ("nan", "inf", "-inf"):
                return float(value)
            if tag == "sparse_coo" and isinstance(value, list) and len(value) == 3:
                # its parts are placed as dense tensors are (they record its device)
                ind = _decode(value[0], tensors, used, place)
                val = _decode(value[1], tensors, used, place)
                if not (isinstance(ind, Tensor) and isinstance(val, Tensor)
                        and isinstance(value[2], list)):
                    raise _Corrupt(f"a sparse_coo entry needs [indices, values, size], got {value!r}")
                if ind.device != val.device:
                    raise _PlaceFailed(RuntimeError(
                        f"cgrad.load: map_location put the indices of a row-sparse tensor on "
                        f"'{ind.device}' and its values on '{val.device}'; both parts must be on "
                        f"one device"))
                try:
                    return _core.sparse_coo_tensor(ind, val, tuple(value[2]))
                except (ValueError, IndexError, TypeError) as e:
                    raise _Corrupt(f"a sparse_coo entry is inconsistent: {e}") from None
            if tag in ("list", "tuple") and isinstance(value, list):
                items = [_decode(v, tensors, used, place) for v in value]
                return tuple(items) if tag == "tuple" else items
            if tag == "dict" and isinstance(value, list):
                out = {}
                for pair in value:
                    if not (isinstance(pair, list) and len(pair) == 2):
                        raise _Corrupt(f"a dict entry must be a [key, value] pair, got {pair!r}")
                    key = _decode(pair[0], {}, set(), _keep)
                    try:
                        hash(key)
                    except TypeError:
                        raise _Corrupt(f"a dict key decodes to an unhashable {type(key).__name__}") from None
                    out[key] = _decode(pair[1], tensors, used, place)
                return out
    raise _Corrupt(f"unknown structure node {str(node)[:80]!r}")


def _load(f, path, size, place):
    if size < 8:
        raise _Corrupt(f"the file is {size} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > size - 8:
        raise _Corrupt(f"the header length is {n} bytes but only {size - 8} bytes follow "
                       f"(truncated, or not a safetensors file)")
    if n > _MAX_HEADER or n < 2:
        raise _Corrupt(f"the header length {n} is outside 2..{_MAX_HEADER} bytes")
    raw = f.read(n)
    if raw[:1] != b"{":
        raise _Corrupt("the header does not start with '{' (not a safetensors file)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Corrupt(f"the header is not valid UTF-8 JSON ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise _Corrupt("the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise _Corrupt("__metadata__ must map strings to strings")
    entries = [_parse_entry(name, info) for name, info in header.items()]
    data_start, data_size = 8 + n, size - 8 - n
    pos = 0
    for e in sorted(entries, key=lambda e: (e[3], e[4])):
        if e[3] != pos:
            raise _Corrupt(f"tensor {e[0]!r} starts at data byte {e[3]}, expected {pos} "
                           f"(tensor data overlaps or leaves a hole)")
        pos = e[4]
    if pos != data_size:
        what = "truncated" if pos > data_size else "trailing bytes after the tensor data"
        raise _Corrupt(f"the tensors need {pos} data bytes, the file holds {data_size} ({what})")
    tensors = {e[0]: _read_tensor(f, data_start, e) for e in entries}

    if meta is None or _STRUCTURE_KEY not in meta:
        return {name: _placed(place, t, "cpu") for name, t in tensors.items()}  # a plain safetensors file
    version = meta.get("cgrad.format_version")
    if version != FORMAT_VERSION:
        raise _Corrupt(f"cgrad format version {version!r} is not supported (this cgrad reads {FORMAT_VERSION!r})")
    try:
        structure = json.loads(meta[_STRUCTURE_KEY])
        return _decode(structure, tensors, set(), place)
    except (ValueError, RecursionError) as e:
        raise _Corrupt(f"the saved structure is not valid ({type(e).__name__}: {e})") from None


def _saved_location(name, loc):
    """The normalised device string a structure node records ('cpu', 'cuda:0')."""
    try:
        if not isinstance(loc, str):
            raise ValueError(f"{loc!r} is not a string")
        return str(_device(loc))
    except ValueError as e:
        raise _Corrupt(f"tensor {name!r} has an invalid device {loc!r} ({e})") from None


def _keep(t, location):
    return t


def _device_spec(spec, what):
    """A map_location target as a normalised device string."""
    if isinstance(spec, bool) or not isinstance(spec, (str, _device)):
        raise TypeError(f"cgrad.load: {what} must be a device (str or cgrad.device), got "
                        f"{type(spec).__name__} ({spec!r})")
    try:
        d = _device(spec)
    except ValueError as e:
        raise ValueError(f"cgrad.load: {what} {str(spec)!r}: {e}") from None
    if d.type == "cuda" and d.index != 0:
        raise ValueError(f"cgrad.load: {what} {str(d)!r}: only index 0 is supported")
    return str(d)


def _move(t, target):
    if t.device == target:
        return t
    if target != "cpu":
        from cgrad import cuda
        if not cuda.is_available():
            raise RuntimeError(f"cgrad.load: attempting to deserialize a tensor on the CUDA device "
                               f"but cgrad.cuda.is_available() is False ({cuda._error}). If you are "
                               f"running on a CPU-only machine, use cgrad.load(..., map_location='cpu') "
                               f"to map the tensors to the CPU.")
    return t.to(target)


def _placement(map_location):
    """place(cpu_tensor, saved_location) -> tensor, PyTorch's map_location
    semantics: None restores each tensor to the device it was saved from; a
    device (str or cgrad.device) puts every tensor there; a dict maps saved
    locations to targets (others are restored); a callable fn(tensor,
    location) returns the placed tensor, or None for the default."""
    if map_location is None:
        return _move
    if isinstance(map_location, (str, _device)):
        target = _device_spec(map_location, "map_location")
        return lambda t, loc: _move(t, target)
    if isinstance(map_location, Mapping):
        table = {_device_spec(k, "a map_location key"): _device_spec(v, f"map_location[{k!r}]")
                 for k, v in map_location.items()}
        return lambda t, loc: _move(t, table.get(loc, loc))
    if callable(map_location):
        def place(t, loc):
            out = map_location(t, loc)
            if out is None:
                return _move(t, loc)
            if not isinstance(out, Tensor):
                raise TypeError(f"cgrad.load: map_location returned a {type(out).__name__} for a "
                                f"tensor saved on {loc!r}; it must return a cgrad.Tensor or None")
            if tuple(out.shape) != tuple(t.shape):
                raise ValueError(f"cgrad.load: map_location returned a tensor of shape "
                                 f"{tuple(out.shape)} for one of shape {tuple(t.shape)}")
            return out
        return place
    raise TypeError(f"cgrad.load: map_location must be None, a device (str or cgrad.device), a dict "
                    f"or a callable, got {type(map_location).__name__} ({map_location!r})")


def load(f, map_location=None, weights_only=True):
    """Reads a file written by save (or any safetensors file, returned as a
    {name: tensor} dict) and returns the saved object with cgrad tensors.

    map_location (as torch.load): None puts every tensor back on the device
    it was saved from ('cuda' needs cgrad.cuda.is_available()); a device
    ('cpu', 'cuda', cgrad.device) puts them all there; a dict such as
    {'cuda:0': 'cpu'} maps saved locations to devices; a callable
    fn(tensor, location) gets each tensor (on the cpu) with its saved
    location ('cpu', 'cuda:0') and returns the tensor to use, or None for
    the default. A row-sparse tensor is placed as a dense one (its indices
    and values go where its saved device maps). weights_only is
    accepted for torch compatibility (nothing is ever unpickled). A
    truncated, corrupt or foreign file raises ValueError naming the path and
    what is wrong."""
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"cgrad.load: f must be a path (str or os.PathLike), got {type(f).__name__}")
    place = _placement(map_location)
    path = os.fspath(f)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            return _load(fh, path, size, place)
        except _PlaceFailed as e:
            raise e.error
        except _Corrupt as e:
            raise ValueError(f"cgrad.load: {path!r} is not a valid cgrad checkpoint or safetensors "
                             f"file: {e}") from None
