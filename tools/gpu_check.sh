#!/usr/bin/env bash
# The GPU checks of the "cuda" device in one run, for a machine with an
# NVIDIA GPU, CuPy and a C compiler (the device tool's nvidia-h200 image
# has python3 with CuPy, Cython, NumPy, SciPy, pytest, pytest-xdist,
# pytest-timeout, hypothesis and PyTorch). From the repository root:
#
#     tools/gpu_check.sh            # logs into $OUT if set, else build/gpu_check/
#     GPU_CHECK_STEPS="bench overhead" tools/gpu_check.sh   # some steps only
#     GPU_CHECK_REFERENCE=1 tools/gpu_check.sh                # dry run, no GPU
#
# Steps, in this order, each time-boxed so that the default ones fit one
# 10-minute call (30 + 200 + 150 + 200 s):
#   info      what the machine has: nvidia-smi, python, CuPy, torch, nvcc;
#   build     the extension in place with that python (parallel compile);
#   bench     bench/bench_gpu.py: steps/s against PyTorch on the same GPU
#             and the fused Adam step against the memory bandwidth;
#   tests     the device tests on the GPU: "cuda" is CuPy there, the
#             requires_gpu tests run and the fused kernels are NVRTC-built;
#   overhead  (not by default) bench/bench_device_overhead.py: cgrad's host
#             time per kernel call against the kernel calls replayed.
# Each step writes <step>.txt; the exit status is the first failed step's.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
steps="${GPU_CHECK_STEPS:-info build bench tests}"
# GPU_CHECK_REFERENCE=1 runs the steps on the NumPy reference device (a
# dry run of this script on a machine without a GPU).
export PYTHONUNBUFFERED=1 CGRAD_CUDA_REFERENCE="${GPU_CHECK_REFERENCE:-0}"
status=0

run_step() {  # run_step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  case " $steps " in *" $name "*) ;; *) return 0 ;; esac
  local t0=$SECONDS rc
  echo "== $name (at most ${limit}s): $*"
  timeout "$limit" bash -c '"$@"' "$name" "$@" >"$out/$name.txt" 2>&1
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  tail -n 25 "$out/$name.txt"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
  return "$rc"
}

info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv || true
  command -v nvcc && nvcc --version | tail -n 2
  "$py" - <<'EOF'
import platform, sys
print("python", sys.version.split()[0], platform.machine())
for name in ("numpy", "scipy", "Cython", "cupy", "torch", "pytest", "xdist", "hypothesis"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:
        print(name, "MISSING:", e)
import cupy
print("CUDA devices:", cupy.cuda.runtime.getDeviceCount(),
      cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
EOF
}

tests() {
  local opts=()
  if "$py" -c "import xdist" 2>/dev/null; then opts+=(-n 8); fi
  if "$py" -c "import pytest_timeout" 2>/dev/null; then opts+=(--timeout 60); fi
  "$py" -m pytest -q -p no:cacheprovider "${opts[@]}" --durations=15 -rs \
    tests/python/test_device_*.py tests/python/test_cuda_*.py tests/python/test_amp_unscale.py \
    tests/python/test_float16.py tests/python/test_grad_scaler.py tests/python/test_nll_loss.py \
    tests/python/test_linear_op.py tests/python/test_optim_foreach.py
}

export py
export -f info tests
run_step info 30 info
run_step build 200 "$py" setup.py -q build_ext --inplace || { echo "build failed"; exit "$status"; }
run_step bench 150 "$py" bench/bench_gpu.py
run_step tests 200 tests
run_step overhead 120 "$py" bench/bench_device_overhead.py
exit "$status"
