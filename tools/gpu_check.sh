#!/usr/bin/env bash
# The GPU checks of the "cuda" device in one run, for a machine with an
# NVIDIA GPU, CuPy and a C compiler (the device tool's nvidia-h200 image
# has python3 with CuPy, Cython, NumPy, SciPy, pytest, pytest-xdist,
# hypothesis and PyTorch). From the repository root:
#
#     tools/gpu_check.sh            # logs into $OUT if set, else build/gpu_check/
#     GPU_CHECK_STEPS="info build tests" tools/gpu_check.sh   # some steps only
#
# Steps, each time-boxed so that the whole run fits one 10-minute call:
#   info   what the machine has: nvidia-smi, python, CuPy, torch, nvcc;
#   build  the extension in place with that python (parallel compile);
#   tests  the device tests on the GPU: "cuda" is CuPy there, the
#          requires_gpu tests run and the fused kernels are RawKernels;
#   bench  bench/bench_gpu.py: steps/s against PyTorch on the same GPU and
#          the fused Adam step against the memory bandwidth.
# Each step writes <step>.txt; the exit status is the first failed step's.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-build/gpu_check}"
mkdir -p "$out"
py="${PYTHON:-python3}"
steps="${GPU_CHECK_STEPS:-info build tests bench}"
export PYTHONUNBUFFERED=1 CGRAD_CUDA_REFERENCE=0
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
  local par=()
  if "$py" -c "import xdist" 2>/dev/null; then par=(-n 8); fi
  "$py" -m pytest -q -p no:cacheprovider "${par[@]}" --durations=15 -rs \
    tests/python/test_device_*.py tests/python/test_cuda_*.py tests/python/test_amp_unscale.py \
    tests/python/test_float16.py tests/python/test_grad_scaler.py
}

export py
export -f info tests
run_step info 60 info
run_step build 240 "$py" setup.py -q build_ext --inplace || { echo "build failed"; exit "$status"; }
run_step tests 300 tests
run_step bench 240 "$py" bench/bench_gpu.py
exit "$status"
