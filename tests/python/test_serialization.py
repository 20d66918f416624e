"""cgrad.save / cgrad.load: round trips (nested structures, every dtype,
0-d, empty and non-contiguous tensors), the safetensors layout read by an
independent reader written from the spec, the RNG in a checkpoint, atomic
writes (a SIGKILLed writer), and clear errors for corrupt or foreign files."""
import json
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import cgrad
from cgrad.serialization import load, save

ROOT = Path(__file__).resolve().parents[2]


def same(a, b):
    """Deep equality of loaded objects (tensors by dtype, shape and values)."""
    if isinstance(a, cgrad.Tensor) or isinstance(b, cgrad.Tensor):
        assert isinstance(a, cgrad.Tensor) and isinstance(b, cgrad.Tensor), (a, b)
        assert a.dtype is b.dtype and a.shape == b.shape, (a, b)
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
        return
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def roundtrip(obj, tmp_path, name="ckpt.safetensors"):
    path = tmp_path / name
    save(obj, path)
    return load(path)


def read_safetensors(path):
    """A minimal safetensors reader from the format's specification."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dtypes = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "BOOL": "?"}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(body[b:e], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return n, header, out


# ------------------------------------------------------------------ round trips
def test_nested_structure_round_trip(tmp_path, rng):
    w = cgrad.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    obj = {
        "model": OrderedDict([("fc.weight", w), ("fc.bias", cgrad.zeros(3))]),
        "optimizer": {"state": {0: {"step": 10, "exp_avg": cgrad.ones(3, 4)}, 1: {}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1],
                                        "amsgrad": False, "foreach": None, "name": "déjà"}]},
        "epoch": 3, "best": float("inf"), "worst": float("-inf"), "nan": float("nan"),
        "tags": ["a", ("b", 2)], "tuple_keys": {(1, "x"): 1, None: 2, True: 3, 2.5: 4},
        "big": 2 ** 70, "np": np.float64(0.25), "npi": np.int64(7),
    }
    back = roundtrip(obj, tmp_path)
    assert back["model"]["fc.weight"].dtype is cgrad.float32
    expected = dict(obj)
    expected["model"] = dict(obj["model"])
    expected["np"], expected["npi"] = 0.25, 7
    same(back, expected)
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_every_dtype_0d_empty_and_non_contiguous(tmp_path, rng):
    base = cgrad.tensor(rng.standard_normal((4, 6)))
    obj = {
        "f32": cgrad.tensor(rng.standard_normal((2, 3)).astype(np.float32)),
        "f64": cgrad.tensor(rng.standard_normal(5), dtype=cgrad.float64),
        "i64": cgrad.tensor(rng.integers(-2 ** 62, 2 ** 62, (3, 2))),
        "bool": cgrad.tensor(rng.uniform(size=(2, 2, 2)) > 0.5),
        "scalar": cgrad.tensor(3.5, dtype=cgrad.float64),
        "scalar_i": cgrad.tensor(-4),
        "empty": cgrad.zeros(0, 3),
        "empty_b": cgrad.tensor(np.zeros((2, 0), dtype=bool)),
        "transposed": base.t(),
        "strided": base[::2, 1::3],
        "array": rng.standard_normal(3),
    }
    assert not obj["transposed"].is_contiguous() and not obj["strided"].is_contiguous()
    back = roundtrip(obj, tmp_path)
    expected = dict(obj, array=cgrad.tensor(obj["array"]))
    same(back, expected)
    assert back["scalar"].shape == () and back["empty"].shape == (0, 3)
    assert back["transposed"].is_contiguous()
    # loaded tensors are ordinary, writeable cgrad tensors
    back["f32"].add_(1.0)


def test_top_level_values(tmp_path):
    same(roundtrip(cgrad.arange(5), tmp_path), cgrad.arange(5))
    same(roundtrip([1, 2.0, "x", None], tmp_path), [1, 2.0, "x", None])
    assert roundtrip({}, tmp_path) == {}


def test_shared_tensor_saved_once_and_requires_grad_kept(tmp_path):
    w = cgrad.randn(3, requires_grad=True)
    back = roundtrip({"a": w, "b": [w], "c": w.detach()}, tmp_path)
    assert back["a"] is back["b"][0]
    assert back["a"].requires_grad and not back["c"].requires_grad
    _, header, tensors = read_safetensors(tmp_path / "ckpt.safetensors")
    assert set(tensors) == {"a", "c"}


def test_file_is_standard_safetensors(tmp_path, rng):
    state = {"layer.weight": cgrad.tensor(rng.standard_normal((2, 3)).astype(np.float32)),
             "layer.bias": cgrad.tensor(rng.standard_normal(2), dtype=cgrad.float64),
             "steps": cgrad.tensor([1, 2, 3]), "mask": cgrad.tensor([True, False])}
    save(state, tmp_path / "m.safetensors")
    n, header, tensors = read_safetensors(tmp_path / "m.safetensors")
    assert (8 + n) % 8 == 0  # data section 8-byte aligned
    assert header["layer.weight"]["dtype"] == "F32" and header["layer.bias"]["dtype"] == "F64"
    assert header["steps"]["dtype"] == "I64" and header["mask"]["dtype"] == "BOOL"
    meta = header["__metadata__"]
    assert all(isinstance(v, str) for v in meta.values())
    assert json.loads(meta["cgrad.structure"])["dict"][0][0] == "layer.weight"
    for k, t in state.items():
        np.testing.assert_array_equal(tensors[k], t.numpy())
    # tensors cover the data with no hole, widest dtypes first (aligned)
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for k, v in header.items():
        if k != "__metadata__":
            assert v["data_offsets"][0] % np.dtype(tensors[k].dtype).itemsize == 0


def test_plain_safetensors_file_loads_as_dict(tmp_path):
    """A file written by another safetensors writer (no cgrad metadata),
    including dtypes cgrad widens."""
    arrays = {"w": np.arange(6, dtype="<f4").reshape(2, 3), "h": np.array([1.5, -2.0], dtype="<f2"),
              "i": np.array([1, -7], dtype="<i4"), "u": np.array([255], dtype="u1")}
    names = {"w": "F32", "h": "F16", "i": "I32", "u": "U8"}
    header, off, body = {}, 0, b""
    for k, a in arrays.items():
        header[k] = {"dtype": names[k], "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        body += a.tobytes()
    raw = json.dumps(header).encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    back = load(tmp_path / "x.safetensors")
    assert list(back) == ["w", "h", "i", "u"]
    assert back["h"].dtype is cgrad.float16 and back["i"].dtype is cgrad.int64
    for k, a in arrays.items():
        np.testing.assert_array_equal(back[k].numpy(), a.astype(back[k].numpy().dtype))


def test_safetensors_package_interop(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    w = rng.standard_normal((3, 2)).astype(np.float32)
    save({"w": cgrad.tensor(w), "n": 5}, tmp_path / "a.safetensors")
    np.testing.assert_array_equal(st.load_file(str(tmp_path / "a.safetensors"))["w"], w)
    st.save_file({"v": w}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(load(tmp_path / "b.safetensors")["v"].numpy(), w)


# ------------------------------------------------------------------ RNG
def test_checkpoint_restores_the_random_stream(tmp_path):
    cgrad.manual_seed(123)
    cgrad.randn(10)  # advance somewhere
    save({"rng": cgrad.get_rng_state(), "step": 1}, tmp_path / "r.ckpt")
    expected = [cgrad.randn(4, 3).numpy().copy(), cgrad.rand(5).numpy().copy(),
                cgrad.randperm(7).numpy().copy()]
    cgrad.manual_seed(999)
    ckpt = load(tmp_path / "r.ckpt")
    assert ckpt["rng"].dtype is cgrad.int64 and ckpt["rng"].shape == (4,)
    cgrad.set_rng_state(ckpt["rng"])
    got = [cgrad.randn(4, 3).numpy(), cgrad.rand(5).numpy(), cgrad.randperm(7).numpy()]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_resumed_training_continues_the_loss_trajectory(tmp_path, rng):
    """SGD with dropout noise: 6 steps straight equal 3 steps, checkpoint,
    restore (weights + RNG) in a fresh state, 3 more steps."""
    X = cgrad.tensor(rng.standard_normal((16, 4)), dtype=cgrad.float64)
    y = cgrad.tensor(rng.standard_normal(16), dtype=cgrad.float64)

    def step(w):
        loss = ((cgrad.nn.functional.dropout(X, 0.3) @ w - y) ** 2).mean()
        (g,) = cgrad.autograd.grad(loss, [w])
        return (w - 0.1 * g).detach().requires_grad_(), loss.item()

    cgrad.manual_seed(5)
    w = cgrad.zeros(4, dtype=cgrad.float64, requires_grad=True)
    straight = []
    for _ in range(6):
        w, l = step(w)
        straight.append(l)

    cgrad.manual_seed(5)
    w = cgrad.zeros(4, dtype=cgrad.float64, requires_grad=True)
    resumed = []
    for _ in range(3):
        w, l = step(w)
        resumed.append(l)
    save({"w": w, "rng": cgrad.get_rng_state()}, tmp_path / "c.ckpt")
    cgrad.manual_seed(77)
    ck = load(tmp_path / "c.ckpt")
    cgrad.set_rng_state(ck["rng"])
    w = ck["w"]
    assert w.requires_grad
    for _ in range(3):
        w, l = step(w)
        resumed.append(l)
    assert resumed == straight


# ------------------------------------------------------------------ atomicity
WRITER = textwrap.dedent("""
    import sys
    import cgrad
    path = sys.argv[1]
    big = cgrad.ones(int(sys.argv[2]))
    print("ready", flush=True)
    i = 0
    while True:  # saves until killed
        i += 1
        cgrad.save({"gen": i, "big": big, "tail": cgrad.full((3,), float(i))}, path)
""")


def _partial_tmp(directory):
    for p in directory.iterdir():
        try:
            if p.name.endswith(".tmp") and 0 < p.stat().st_size < 32_000_000:
                return True
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return False


def test_killed_writer_never_leaves_a_corrupt_file(tmp_path):
    """SIGKILL a process in the middle of saving a 32 MB checkpoint: `path`
    holds the previous complete checkpoint (the first one, or one the killed
    process finished earlier), never a partial one."""
    path = tmp_path / "ckpt.safetensors"
    save({"gen": 0, "tail": cgrad.zeros(3)}, path)
    first_size = path.stat().st_size
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outcomes = []
    for trial in range(4):
        after_a_complete_save = trial >= 2
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(8_000_000)],
                                stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = path.stat().st_size != first_size
                if (done or not after_a_complete_save) and _partial_tmp(tmp_path):
                    break
                time.sleep(0.0005)
            else:
                pytest.fail("the writer never started a save")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert _partial_tmp(tmp_path) or after_a_complete_save  # it died mid-write
        ck = load(path)  # never corrupt: the old file or a complete new one
        if ck["gen"] == 0:
            assert "big" not in ck and not after_a_complete_save
            assert ck["tail"].numpy().tolist() == [0.0] * 3
        else:
            assert ck["big"].shape == (8_000_000,) and ck["big"].numpy().min() == 1.0
            assert ck["tail"].numpy().tolist() == [ck["gen"]] * 3
        outcomes.append(ck["gen"])
        # stale temporaries stay hidden beside the checkpoint; clear them
        for p in tmp_path.iterdir():
            if p.name.endswith(".tmp"):
                p.unlink()
        if not after_a_complete_save:
            save({"gen": 0, "tail": cgrad.zeros(3)}, path)
    assert outcomes[-1] >= 1


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save({"v": 1}, path)
    mode = path.stat().st_mode & 0o777

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        save({"v": 2, "t": cgrad.ones(10)}, path)
    monkeypatch.undo()
    assert load(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    save({"v": 3}, path)
    assert path.stat().st_mode & 0o777 == mode


def test_unsaveable_objects_write_nothing(tmp_path):
    path = tmp_path / "ckpt"
    for bad, what in [({"a": {1, 2}}, r"type set at obj\[a\]"), ({"f": print}, "builtin_function"),
                      ({"k": {cgrad.ones(1): 1}}, "dict keys"), ([1j], "complex"),
                      ({"s": np.array(["x"])}, "dtype <U1")]:
        with pytest.raises(TypeError, match=what):
            save(bad, path)
    cyc = []
    cyc.append(cyc)
    with pytest.raises(ValueError, match="contains itself"):
        save(cyc, path)
    with pytest.raises(TypeError, match="must be a path"):
        save({}, 3)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ corrupt files
def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save({"w": cgrad.arange(6, dtype=cgrad.float64).reshape(2, 3), "b": cgrad.tensor([True, False]),
          "meta": {"epoch": 2}}, path)
    return path, path.read_bytes()


def expect_corrupt(path, match):
    with pytest.raises(ValueError, match=match) as info:
        load(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_truncated_files(tmp_path):
    path, data = good_file(tmp_path)
    bad = tmp_path / "bad"
    for cut in [0, 3, 8, 20, len(data) - 1, len(data) - 10]:
        bad.write_bytes(data[:cut])
        expect_corrupt(bad, "shorter than the 8-byte|truncated|not valid UTF-8 JSON|header")
    bad.write_bytes(data + b"\0")
    expect_corrupt(bad, "trailing bytes")


def test_foreign_and_corrupt_headers(tmp_path):
    path, data = good_file(tmp_path)
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    bad = tmp_path / "bad"

    def write(h, body=body):
        raw = json.dumps(h).encode() if not isinstance(h, bytes) else h
        bad.write_bytes(struct.pack("<Q", len(raw)) + raw + body)

    bad.write_text("just some text that is long enough\n")
    expect_corrupt(bad, "header length")
    bad.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip (torch.save) file
    expect_corrupt(bad, "header length")
    write(b"[1, 2, 3]")
    expect_corrupt(bad, "does not start with")
    write(b"{not json}")
    expect_corrupt(bad, "not valid UTF-8 JSON")
    write(b"{\xff\xfe}")
    expect_corrupt(bad, "not valid UTF-8 JSON")
    write(b"{" + b"[" * 100000 + b"]" * 100000 + b"}")
    expect_corrupt(bad, "JSON")
    write(dict(header, w=dict(header["w"], dtype="C64")))
    expect_corrupt(bad, "dtype 'C64'")
    write(dict(header, w=dict(header["w"], shape=[2, 4])))
    expect_corrupt(bad, "needs")
    write(dict(header, w=dict(header["w"], shape=[-2, -3])))
    expect_corrupt(bad, "invalid shape")
    write(dict(header, w=dict(header["w"], data_offsets=[8, 56])))
    expect_corrupt(bad, "overlaps or leaves a hole|truncated")
    write(dict(header, w="nope"))
    expect_corrupt(bad, "must have exactly dtype")
    write(dict(header, __metadata__={"cgrad.structure": 5}))
    expect_corrupt(bad, "__metadata__ must map strings")
    meta = dict(header["__metadata__"], **{"cgrad.structure": '{"tensor": "missing"}'})
    write(dict(header, __metadata__=meta))
    expect_corrupt(bad, "'missing'")
    meta = dict(header["__metadata__"], **{"cgrad.structure": '{"set": [1]}'})
    write(dict(header, __metadata__=meta))
    expect_corrupt(bad, "unknown structure node")
    meta = dict(header["__metadata__"], **{"cgrad.structure": '{"dict": [[{"list": []}, 1]]}'})
    write(dict(header, __metadata__=meta))
    expect_corrupt(bad, "unhashable")
    meta = dict(header["__metadata__"], **{"cgrad.format_version": "99"})
    write(dict(header, __metadata__=meta))
    expect_corrupt(bad, "version '99'")
    body_bad = bytearray(body)
    b0 = header["b"]["data_offsets"][0]
    body_bad[b0] = 7
    write(header, bytes(body_bad))
    expect_corrupt(bad, "BOOL byte is 7")
    bad.write_bytes(struct.pack("<Q", 2 ** 63) + b"{}")
    expect_corrupt(bad, "header length")


def test_random_corruption_gives_value_error_or_a_valid_load(tmp_path):
    path, data = good_file(tmp_path)
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad"
    errors = 0
    for _ in range(300):
        b = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
        bad.write_bytes(bytes(b))
        try:
            load(bad)
        except ValueError as e:
            assert str(bad) in str(e)
            errors += 1
    assert errors > 0


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")
    with pytest.raises(TypeError, match="must be a path"):
        load(None)
    path, _ = good_file(tmp_path)
    assert load(path, map_location="cpu")["meta"] == {"epoch": 2}
    with pytest.raises(ValueError, match="map_location 'tpu'.*unknown device type"):
        load(path, map_location="tpu")  # map_location='cuda' and the others: test_device_api.py


def test_exported_from_cgrad(tmp_path):
    cgrad.save({"x": cgrad.ones(2)}, str(tmp_path / "p"))
    same(cgrad.load(str(tmp_path / "p")), {"x": cgrad.ones(2)})
