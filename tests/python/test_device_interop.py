"""Zero-copy interop of "cuda" tensors: DLPack both ways (NumPy, PyTorch,
cgrad.from_dlpack), as_tensor wrapping a device array, the CUDA Array
Interface, and the refusal to convert device memory to NumPy silently.

On the reference device (CI) a "cuda" tensor's memory is host memory: its
DLPack device is kDLCPU, so NumPy and CPU PyTorch read it in place, which is
what these tests check (a write through one side is seen by the other). On a
real GPU the same calls hand CuPy and torch.cuda the device pointer
(requires_gpu tests)."""
import gc

import numpy as np
import pytest

import cgrad
from device_util import REAL_GPU, host, requires_gpu

reference_only = pytest.mark.skipif(REAL_GPU, reason="'cuda' memory is host memory only on the "
                                                     "reference device")


def _dev(shape=(2, 3), dtype=cgrad.float32):
    return cgrad.arange(int(np.prod(shape)), dtype=dtype).reshape(*shape).cuda()


# ----------------------------------------------------------------- CUDA Array Interface
@pytest.mark.parametrize("dtype,typestr", [(cgrad.float32, "<f4"), (cgrad.float64, "<f8"),
                                           (cgrad.int64, "<i8"), (cgrad.bool_, "|b1")])
def test_cuda_array_interface_describes_the_memory(dtype, typestr):
    t = _dev((2, 3), cgrad.float64).to(dtype)
    cai = t.__cuda_array_interface__
    assert cai["version"] == 3
    assert cai["shape"] == (2, 3) and cai["typestr"] == typestr
    assert cai["strides"] is None  # C-contiguous, as the interface allows
    assert cai["data"] == (t.data_ptr(), False)


def test_cuda_array_interface_of_views_has_their_strides_and_offset():
    t = _dev((3, 4), cgrad.float64)
    tt = t.t()
    cai = tt.__cuda_array_interface__
    assert cai["shape"] == (4, 3) and cai["strides"] == (8, 32)
    assert cai["data"][0] == tt.data_ptr() == t.data_ptr()
    col = t[:, 2]
    cai = col.__cuda_array_interface__
    assert cai["shape"] == (3,) and cai["strides"] == (32,)
    assert cai["data"][0] == col.data_ptr() == t.data_ptr() + 2 * 8


def test_cuda_array_interface_is_only_for_detached_device_tensors():
    assert not hasattr(cgrad.ones(2), "__cuda_array_interface__")  # libraries probe with hasattr
    with pytest.raises(AttributeError, match="only defined for tensors on 'cuda'"):
        cgrad.ones(2).__cuda_array_interface__
    w = cgrad.ones(2, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad.*detach"):
        w.__cuda_array_interface__
    assert w.detach().__cuda_array_interface__["shape"] == (2,)


# ----------------------------------------------------------------- no silent copies
def test_numpy_and_array_refuse_with_the_cpu_hint():
    t = _dev()
    for convert in (lambda: t.numpy(), lambda: np.asarray(t), lambda: np.array(t), lambda: t.__array__()):
        with pytest.raises(TypeError, match=r"tensor on 'cuda:0'.*tensor\.cpu\(\)"):
            convert()
    with pytest.raises(TypeError):
        np.add(t, 1)  # tensors opt out of ufuncs: no silent conversion either
    np.testing.assert_array_equal(t.cpu().numpy(), np.arange(6).reshape(2, 3))  # the explicit copy


# ----------------------------------------------------------------- DLPack
@reference_only
def test_dlpack_device_of_the_reference_is_host_memory():
    assert _dev().__dlpack_device__() == (1, 0)  # kDLCPU
    assert cgrad.ones(2).__dlpack_device__() == (1, 0)


@reference_only
def test_numpy_from_dlpack_shares_the_device_tensor_memory():
    t = _dev((2, 3), cgrad.float64)
    a = np.from_dlpack(t)
    assert a.shape == (2, 3) and a.dtype == np.float64
    assert a.ctypes.data == t.data_ptr()
    a[1, 2] = 42.0  # written through NumPy ...
    assert t[1, 2].item() == 42.0  # ... read through cgrad
    with cgrad.no_grad():
        t[0].fill_(-1.0)  # written through cgrad ...
    np.testing.assert_array_equal(a[0], [-1.0, -1.0, -1.0])  # ... read through NumPy
    tt = t.t()
    b = np.from_dlpack(tt)  # a strided view keeps its strides
    assert b.strides == (8, 24) and b[2, 1] == 42.0


@reference_only
def test_an_exported_array_keeps_the_memory_alive():
    t = _dev((1000,), cgrad.float64)
    a = np.from_dlpack(t)
    del t
    gc.collect()
    junk = [cgrad.full((1000,), 7.0, dtype=cgrad.float64, device="cuda") for _ in range(4)]
    np.testing.assert_array_equal(a[:3], [0, 1, 2])  # not reused by the new tensors
    np.testing.assert_array_equal(a[-2:], [998, 999])
    assert all(j[0].item() == 7.0 for j in junk)


@reference_only
def test_cgrad_from_dlpack_of_a_device_tensor_is_the_tensor():
    t = _dev()
    assert cgrad.from_dlpack(t) is t


def test_dlpack_refuses_tensors_that_require_grad():
    w = cgrad.ones(3, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad.*detach"):
        w.__dlpack__()
    assert w.detach().__dlpack__() is not None


@reference_only
def test_torch_from_dlpack_shares_the_device_tensor_memory():
    torch = pytest.importorskip("torch")
    t = _dev((2, 3), cgrad.float32)
    x = torch.from_dlpack(t)
    assert x.device.type == "cpu" and tuple(x.shape) == (2, 3) and x.dtype == torch.float32
    assert x.data_ptr() == t.data_ptr()
    x[0, 1] = 9.5  # written through torch ...
    assert t[0, 1].item() == 9.5  # ... read through cgrad
    with cgrad.no_grad():
        t.mul_(2.0)
    assert x[0, 1].item() == 19.0
    y = torch.from_dlpack(t.t())
    assert y.stride() == (1, 3) and y[1, 0].item() == 19.0


@reference_only
def test_cgrad_from_dlpack_of_torch_and_numpy_arrays_shares_memory():
    torch = pytest.importorskip("torch")
    x = torch.arange(4, dtype=torch.float64)
    t = cgrad.from_dlpack(x)
    assert t.device == "cpu" and t.dtype == cgrad.float64 and t.data_ptr() == x.data_ptr()
    x[2] = -7.0
    assert t[2].item() == -7.0
    a = np.ones(3, dtype=np.int64)
    u = cgrad.from_dlpack(a)
    a[0] = 5
    assert u.tolist() == [5, 1, 1]
    with pytest.raises(TypeError, match="from_dlpack expects an object with __dlpack__"):
        cgrad.from_dlpack([1, 2])


# ----------------------------------------------------------------- as_tensor / tensor
@reference_only
def test_as_tensor_on_cuda_wraps_a_reference_array_without_a_copy():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    before = cgrad.cuda.memory_allocated()
    t = cgrad.as_tensor(arr, device="cuda")
    assert t.device == "cuda" and t.dtype == cgrad.float32 and t.shape == (2, 3)
    assert t.data_ptr() == arr.ctypes.data
    assert cgrad.cuda.memory_allocated() == before + arr.nbytes  # counted while the tensor lives
    arr[1, 1] = 100.0
    assert t[1, 1].item() == 100.0
    with cgrad.no_grad():
        t[0, 0].fill_(-3.0)
    assert arr[0, 0] == -3.0
    del arr
    gc.collect()
    np.testing.assert_array_equal(host(t)[1], [3.0, 100.0, 5.0])  # the tensor keeps the array alive
    del t
    gc.collect()
    assert cgrad.cuda.memory_allocated() == before


@reference_only
def test_as_tensor_of_a_fortran_array_keeps_its_layout_and_memory():
    arr = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    t = cgrad.as_tensor(arr, device="cuda")
    assert t.data_ptr() == arr.ctypes.data and not t.is_contiguous()
    arr[1, 0] = 8.0
    assert t[1, 0].item() == 8.0


@reference_only
def test_as_tensor_copies_what_it_cannot_wrap():
    arr = np.arange(12.0).reshape(3, 4)[:, ::2]  # neither C- nor F-contiguous
    t = cgrad.as_tensor(arr, device="cuda")
    np.testing.assert_array_equal(host(t), arr)
    arr[0, 0] = 99.0
    assert t[0, 0].item() == 0.0
    c = cgrad.as_tensor(np.ones(2, dtype=np.float64), dtype=cgrad.float32, device="cuda")
    assert c.dtype == cgrad.float32 and c.device == "cuda"
    with pytest.raises(TypeError, match="unsupported dtype complex128"):
        cgrad.as_tensor(np.ones(2, dtype=np.complex128), device="cuda")


def test_as_tensor_of_a_device_tensor_is_the_tensor_and_tensor_copies():
    t = _dev()
    assert cgrad.as_tensor(t) is t and cgrad.as_tensor(t, device="cuda") is t
    c = cgrad.tensor(t)
    assert c.device == "cuda" and c.data_ptr() != t.data_ptr()
    np.testing.assert_array_equal(host(c), host(t))
    h = cgrad.as_tensor(t, device="cpu")
    assert h.device == "cpu" and h.tolist() == t.tolist()


# ----------------------------------------------------------------- a real GPU
@requires_gpu
def test_cupy_reads_and_writes_device_tensors_in_place():
    import cupy
    t = _dev((2, 3), cgrad.float32)
    a = cupy.asarray(t)  # through __cuda_array_interface__
    assert a.data.ptr == t.data_ptr()
    a[0, 0] = 5.0
    assert t[0, 0].item() == 5.0
    b = cupy.from_dlpack(t)
    assert b.data.ptr == t.data_ptr()
    c = cupy.arange(4, dtype=cupy.float64)
    u = cgrad.from_dlpack(c)
    assert u.device == "cuda" and u.data_ptr() == c.data.ptr
    c[1] = -2.0
    assert u[1].item() == -2.0
    v = cgrad.as_tensor(c, device="cuda")
    assert v.data_ptr() == c.data.ptr


@requires_gpu
def test_torch_cuda_shares_device_tensors():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    t = _dev((2, 3), cgrad.float32)
    x = torch.from_dlpack(t)
    assert x.is_cuda and x.data_ptr() == t.data_ptr()
    x[1, 1] = 3.5
    assert t[1, 1].item() == 3.5
    y = torch.ones(3, device="cuda")
    u = cgrad.from_dlpack(y)
    assert u.device == "cuda" and u.data_ptr() == y.data_ptr()
