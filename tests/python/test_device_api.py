"""cgrad.cuda (availability, device count, synchronize, memory statistics,
the reference device, the one message a missing CuPy or driver gives) and
checkpoints of "cuda" tensors (cgrad.save records the device, cgrad.load
restores it or follows map_location as torch.load does).

In CI "cuda" is the NumPy reference device (device_util.py); the tests that
run without CuPy and without the reference device do so in a child process."""
import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cgrad
import cgrad.nn as nn
from cgrad.serialization import load, save
from device_util import REAL_GPU, host

F64 = cgrad.float64


def run_python(code, reference=False, hide_cupy=True):
    """Runs code in a fresh interpreter with this checkout's cgrad: without
    CGRAD_CUDA_REFERENCE (unless reference) and with CuPy made unimportable
    (unless not hide_cupy). Returns (returncode, stdout + stderr)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("CGRAD_CUDA_REFERENCE", None)
    if reference:
        env["CGRAD_CUDA_REFERENCE"] = "1"
    prelude = "import sys\nsys.modules['cupy'] = None  # as if CuPy were not installed\n" if hide_cupy else ""
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


# Four ways onto "cuda" in a process where it is not available: each raises
# RuntimeError, all with one message, which is printed (a part of
# run_python's code, indented as the test bodies around it).
ONE_MESSAGE = textwrap.indent("""
msgs = []
for make in (lambda: cgrad.zeros(2, device="cuda"), lambda: cgrad.ones(2).cuda(),
             lambda: cgrad.nn.Linear(2, 2).to("cuda"), cgrad.cuda.synchronize):
    try:
        make()
    except RuntimeError as e:
        msgs.append(str(e))
assert len(msgs) == 4 and len(set(msgs)) == 1, msgs
print(msgs[0])
""", " " * 8)


# ----------------------------------------------------------------- cgrad.cuda
def test_availability_and_device_queries():
    assert cgrad.cuda.is_available()
    assert cgrad.cuda.device_count() == 1
    assert cgrad.cuda.current_device() == 0
    assert cgrad.cuda.is_reference() is (not REAL_GPU)
    name = cgrad.cuda.get_device_name()
    assert isinstance(name, str) and name
    if not REAL_GPU:
        assert "reference" in name
    cgrad.cuda.synchronize()
    cgrad.cuda.synchronize(0)


def test_memory_statistics_track_live_tensors_and_the_peak():
    base = cgrad.cuda.memory_allocated()
    cgrad.cuda.reset_peak_memory_stats()
    assert cgrad.cuda.max_memory_allocated() == base
    a = cgrad.zeros(250, dtype=F64, device="cuda")  # 2000 bytes
    b = cgrad.zeros(100, device="cuda")  # 400 bytes
    assert cgrad.cuda.memory_allocated() == base + 2400
    del a
    assert cgrad.cuda.memory_allocated() == base + 400
    assert cgrad.cuda.max_memory_allocated() == base + 2400
    stats = cgrad.cuda.memory_stats()
    assert stats["allocated_bytes.all.current"] == base + 400
    assert stats["allocated_bytes.all.peak"] == base + 2400
    assert stats["allocation.all.allocated"] >= 2
    cgrad.cuda.reset_peak_memory_stats()
    assert cgrad.cuda.max_memory_allocated() == base + 400
    assert cgrad.cuda.memory_reserved() >= cgrad.cuda.memory_allocated()
    cgrad.cuda.empty_cache()  # cached blocks only: live tensors keep their memory
    assert cgrad.cuda.memory_allocated() == base + 400 and b.sum().item() == 0
    view = b[10:20]  # a view holds the buffer, not new memory
    del b
    assert cgrad.cuda.memory_allocated() == base + 400
    del view
    assert cgrad.cuda.memory_allocated() == base


def test_use_reference_device_is_accepted_when_already_on_it():
    if REAL_GPU:
        with pytest.raises(RuntimeError, match="already runs on a GPU"):
            cgrad.cuda.use_reference_device()
    else:
        cgrad.cuda.use_reference_device()
        assert cgrad.cuda.is_reference()


def test_cgrad_imports_and_works_without_cupy_and_never_imports_it():
    rc, out = run_python("""
        import sys
        import cgrad
        assert 'cupy' not in sys.modules or sys.modules['cupy'] is None
        x = cgrad.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        print(x.grad.tolist())
    """, hide_cupy=False)
    assert rc == 0, out
    assert "[2.0, 4.0]" in out
    # importing cgrad alone loads no CuPy, even where CuPy is installed
    rc, out = run_python("import sys, cgrad, cgrad.nn, cgrad.optim, cgrad.cuda\n"
                         "print('cupy' in sys.modules)", hide_cupy=False)
    assert rc == 0 and out.strip() == "False", out


def test_a_missing_cupy_gives_one_clear_message():
    rc, out = run_python("""
        import cgrad
        assert not cgrad.cuda.is_available()
        assert cgrad.cuda.device_count() == 0
        assert cgrad.cuda.memory_allocated() == 0 and cgrad.cuda.max_memory_allocated() == 0
        assert cgrad.cuda.memory_stats() == {} and cgrad.cuda.memory_reserved() == 0
        cgrad.cuda.empty_cache()  # a no-op without CUDA, as in PyTorch
    """ + ONE_MESSAGE + """
        assert cgrad.ones(2).sum().item() == 2.0  # the cpu is untouched
    """)
    assert rc == 0, out
    assert ("CUDA is not available: CuPy is not installed (pip install cupy-cuda13x, or "
            "cupy-cuda12x for a CUDA 12 driver)") in out
    assert "CGRAD_CUDA_REFERENCE=1" in out


@pytest.mark.skipif(REAL_GPU or importlib.util.find_spec("cupy") is None,
                    reason="needs CuPy installed on a machine whose CUDA driver it cannot use")
def test_cupy_without_a_usable_driver_gives_one_clear_message():
    """The real CuPy, with no NVIDIA driver (CI): CuPy imports, its first
    CUDA call fails; cgrad says so once, and goes on working on the cpu."""
    rc, out = run_python("""
        import cgrad
        assert not cgrad.cuda.is_available() and cgrad.cuda.device_count() == 0
        assert cgrad.cuda.memory_stats() == {}
    """ + ONE_MESSAGE + """
        assert cgrad.ones(2).sum().item() == 2.0
    """, hide_cupy=False)
    assert rc == 0, out
    assert "CUDA is not available: the CUDA driver could not be used (" in out
    assert "Is an NVIDIA driver installed?" in out and "CGRAD_CUDA_REFERENCE=1" in out


def test_use_reference_device_switches_a_process_without_cupy_to_it():
    rc, out = run_python("""
        import cgrad
        assert not cgrad.cuda.is_available()
        cgrad.cuda.use_reference_device()
        assert cgrad.cuda.is_available() and cgrad.cuda.is_reference()
        x = cgrad.tensor([1.5, -2.0], device="cuda")
        print((x * 2).cpu().tolist(), cgrad.cuda.device_count())
    """)
    assert rc == 0, out
    assert "[3.0, -4.0] 1" in out


def test_the_environment_variable_selects_the_reference_device():
    rc, out = run_python("import cgrad\nprint(cgrad.cuda.is_reference(), cgrad.zeros(1, device='cuda').device)",
                         reference=True)
    assert rc == 0 and out.split() == ["True", "cuda:0"], out


# ----------------------------------------------------------------- checkpoints
def header_of(path):
    data = open(path, "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    return header, json.loads(header["__metadata__"]["cgrad.structure"])


def _checkpoint():
    w = cgrad.tensor(np.arange(6.0).reshape(2, 3), dtype=F64, device="cuda", requires_grad=True)
    return {"w": w, "w_again": w, "step": cgrad.tensor(7, device="cuda"),
            "host": cgrad.tensor([1.5, 2.5]), "lr": 0.1}


def test_save_records_the_device_and_load_restores_it(tmp_path):
    path = tmp_path / "ck.safetensors"
    obj = _checkpoint()
    save(obj, path)
    header, structure = header_of(path)
    nodes = dict(structure["dict"])
    assert nodes["w"] == {"tensor": "w", "requires_grad": True, "device": "cuda:0"}
    assert nodes["host"] == {"tensor": "host"}  # host tensors are written as before
    assert header["w"]["dtype"] == "F64" and header["w"]["shape"] == [2, 3]
    back = load(path)
    assert back["w"].device == "cuda" and back["w"].requires_grad and back["w"].is_leaf
    assert back["w_again"] is back["w"]  # one tensor saved twice loads as one object
    assert back["step"].device == "cuda" and back["step"].dtype == cgrad.int64 and back["step"].item() == 7
    assert back["host"].device == "cpu" and back["lr"] == 0.1
    np.testing.assert_array_equal(host(back["w"]), host(obj["w"]))


@pytest.mark.parametrize("where", ["cpu", cgrad.device("cpu")])
def test_map_location_cpu_puts_everything_on_the_host(tmp_path, where):
    path = tmp_path / "ck.safetensors"
    save(_checkpoint(), path)
    back = load(path, map_location=where)
    assert all(back[k].device == "cpu" for k in ("w", "step", "host"))
    assert back["w"].requires_grad and back["w_again"] is back["w"]
    np.testing.assert_array_equal(back["w"].detach().numpy(), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("where", ["cuda", "cuda:0", cgrad.device("cuda", 0)])
def test_map_location_cuda_puts_everything_on_the_device(tmp_path, where):
    path = tmp_path / "ck.safetensors"
    save(_checkpoint(), path)
    back = load(path, map_location=where)
    assert all(back[k].device == "cuda" for k in ("w", "step", "host"))
    assert back["w"].requires_grad and back["w"].is_leaf
    np.testing.assert_array_equal(host(back["host"]), [1.5, 2.5])


def test_map_location_dict_maps_saved_locations(tmp_path):
    path = tmp_path / "ck.safetensors"
    save(_checkpoint(), path)
    back = load(path, map_location={"cuda": "cpu"})  # 'cuda' means 'cuda:0', as a key too
    assert back["w"].device == "cpu" and back["host"].device == "cpu"
    back = load(path, map_location={"cpu": "cuda:0"})  # unmapped locations are restored
    assert back["w"].device == "cuda" and back["host"].device == "cuda"
    back = load(path, map_location={})
    assert back["w"].device == "cuda" and back["host"].device == "cpu"


def test_map_location_callable_sees_each_tensor_and_its_saved_location(tmp_path):
    path = tmp_path / "ck.safetensors"
    save(_checkpoint(), path)
    seen = []

    def place(t, location):
        seen.append((tuple(t.shape), str(t.device), location))
        return t.to("cuda") if location == "cpu" else None  # None: the default (restore)

    back = load(path, map_location=place)
    assert sorted(seen) == [((), "cpu", "cuda:0"), ((2,), "cpu", "cpu"), ((2, 3), "cpu", "cuda:0")]
    assert back["host"].device == "cuda" and back["w"].device == "cuda" and back["w"].requires_grad


def test_bad_map_locations_are_clear(tmp_path):
    path = tmp_path / "ck.safetensors"
    save(_checkpoint(), path)
    with pytest.raises(ValueError, match="map_location 'cuda:1': only index 0"):
        load(path, map_location="cuda:1")
    with pytest.raises(ValueError, match="map_location 'gpu'.*unknown device type"):
        load(path, map_location="gpu")
    with pytest.raises(TypeError, match="map_location must be None, a device.*got int"):
        load(path, map_location=3)
    with pytest.raises(TypeError, match="a map_location key must be a device"):
        load(path, map_location={0: "cpu"})
    with pytest.raises(TypeError, match="map_location returned a str for a tensor saved on"):
        load(path, map_location=lambda t, loc: "cpu")
    with pytest.raises(ValueError, match="map_location returned a tensor of shape \\(1,\\)") as info:
        load(path, map_location=lambda t, loc: cgrad.zeros(1))
    assert "not a valid" not in str(info.value)  # the placement failed, not the file

    def refuse(t, loc):
        raise KeyError(f"no room for {loc}")

    with pytest.raises(KeyError, match="no room for cuda:0"):  # the callable's own error, unchanged
        load(path, map_location=refuse)


def test_a_corrupt_device_entry_is_a_value_error(tmp_path):
    path = tmp_path / "ck.safetensors"
    save({"w": cgrad.ones(2, device="cuda")}, path)
    raw = open(path, "rb").read()
    bad = raw.replace(b'\\"device\\":\\"cuda:0\\"', b'\\"device\\":\\"tpu:00\\"')
    assert bad != raw and len(bad) == len(raw)
    open(path, "wb").write(bad)
    with pytest.raises(ValueError, match="tensor 'w' has an invalid device 'tpu:00'"):
        load(path)


def test_row_sparse_tensors_are_placed_as_dense_ones(tmp_path):
    path = tmp_path / "ck.safetensors"
    sp = cgrad.sparse_coo_tensor(np.array([[0, 2]]), np.arange(6.0).reshape(2, 3), (4, 3))
    save({"sp": sp, "spc": sp.cuda(), "dense": cgrad.ones(2)}, path)
    back = load(path, map_location="cuda")
    for k in ("sp", "spc"):  # the map_location device, parts and all
        t = back[k]
        assert t.is_sparse and t.device == "cuda" and t.shape == (4, 3), k
        assert t.indices().device == "cuda" and t.values().device == "cuda", k
        np.testing.assert_array_equal(host(t.to_dense()), host(sp.to_dense()))
    assert back["dense"].device == "cuda"
    saved = load(path)  # None: each back where it was saved from
    assert saved["sp"].device == "cpu" and saved["spc"].device == "cuda"
    assert load(path, map_location="cpu")["spc"].device == "cpu"


def test_a_cuda_checkpoint_on_a_machine_without_cuda(tmp_path):
    path = tmp_path / "ck.safetensors"
    save({"w": cgrad.tensor([1.0, 2.0], device="cuda"), "b": cgrad.tensor([3.0])}, path)
    rc, out = run_python(f"""
        import cgrad
        try:
            cgrad.load({str(path)!r})
        except RuntimeError as e:
            print("ERR", e)
        ck = cgrad.load({str(path)!r}, map_location="cpu")
        print(ck["w"].device, ck["w"].tolist(), ck["b"].device)
    """)
    assert rc == 0, out
    assert "ERR cgrad.load: attempting to deserialize a tensor on the CUDA device" in out
    assert "map_location='cpu'" in out and "CuPy is not installed" in out
    assert "cpu [1.0, 2.0] cpu" in out


def test_a_model_checkpoint_round_trips_through_the_device(tmp_path):
    cgrad.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).cuda()
    path = tmp_path / "model.safetensors"
    save({"model": model.state_dict()}, path)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    fresh.load_state_dict(load(path, map_location="cpu")["model"])
    for (k, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert b.device == "cpu", k
        np.testing.assert_array_equal(host(a), host(b))
    on_device = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).cuda()
    sd = load(path)["model"]
    assert all(v.device == "cuda" for v in sd.values())
    on_device.load_state_dict(sd)
    assert all(v.device == "cuda" for v in on_device.state_dict().values())
    np.testing.assert_array_equal(host(on_device[0].weight), host(model[0].weight))


def test_a_plain_safetensors_file_follows_map_location(tmp_path):
    path = tmp_path / "plain.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    header += b" " * (-(8 + len(header)) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + np.array([1.5, -2.0], "<f4").tobytes())
    back = load(path, map_location="cuda")
    assert back["a"].device == "cuda" and back["a"].tolist() == [1.5, -2.0]
    assert load(path)["a"].device == "cpu"


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(cgrad.tensor([0.5, -1.0, 2.0], dtype=F64))

    def forward(self, x):
        return (x * self.w).tanh()


def test_an_optimizer_checkpoint_saved_on_the_device_resumes_on_the_cpu(tmp_path):
    def train(model, opt, steps):
        x = cgrad.tensor([0.3, 0.1, -0.7], dtype=F64, device=model.w.device)
        for _ in range(steps):
            opt.zero_grad()
            model(x).backward(cgrad.ones(3, dtype=F64, device=model.w.device))
            opt.step()

    model = _Scale().cuda()
    opt = cgrad.optim.Adam(model.parameters(), lr=0.1)
    train(model, opt, 2)
    path = tmp_path / "train.safetensors"
    save({"model": model.state_dict(), "opt": opt.state_dict()}, path)
    ck = load(path, map_location="cpu")
    resumed = _Scale()
    resumed.load_state_dict(ck["model"])
    resumed_opt = cgrad.optim.Adam(resumed.parameters(), lr=0.1)
    resumed_opt.load_state_dict(ck["opt"])
    train(model, opt, 2)
    train(resumed, resumed_opt, 2)
    np.testing.assert_allclose(host(resumed.w), host(model.w), rtol=1e-12)
    again = load(path)  # and on the device it came from
    assert all(v.device == "cuda" for v in again["model"].values())
