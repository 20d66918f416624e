# cgrad -- build, test, demo and benchmark entry points.
#   make demo    create .venv, install cgrad, train on the digits with a custom loss,
#                AdamW, warmup+cosine and clipping, recorded to runs/ and shown by
#                cgrad-monitor (runs/demo.png when there is no display)
#   make test    create .venv, install with test extras, run C tests and pytest
#   make lib     build libcgrad.a and libcgrad.so from src_c/ alone (no Python)
#   make install PREFIX=/usr/local [DESTDIR=]  header, both libraries, cgrad.pc
#   make test-c  C tests, embedding checks, examples and the fuzz corpus replay,
#                plain and under AddressSanitizer + UBSan
#   make fuzz    libFuzzer harness (needs clang; not part of CI)
#   make valgrind  C tests and examples under valgrind (slow; not part of CI)
#   make bench   cgrad vs PyTorch vs NumPy in one process run (not part of CI)

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
CC     ?= cc
CFLAGS_BASE := -std=c99 -pthread -fno-math-errno -Wall -Wextra -Wno-unused-parameter -Iinclude -fPIC -fvisibility=hidden
CFLAGS ?= -O2 -g
LDLIBS := -lm -pthread

# The library version comes from the header, the one place it is written.
VERSION := $(shell sed -n 's/^\#define CG_VERSION_STRING "\(.*\)"/\1/p' include/cgrad.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SONAME  := libcgrad.so.$(SOMAJOR)
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

SRC  := $(wildcard src_c/*.c)
HDR  := $(wildcard src_c/*.h) include/cgrad.h
OBJ  := $(patsubst src_c/%.c,build/obj/%.o,$(SRC))
SAN_OBJ := $(patsubst src_c/%.c,build/san/%.o,$(SRC))
CTESTS := $(wildcard tests/c/test_*.c)
CTEST_BINS := $(patsubst tests/c/%.c,build/ctest/%,$(CTESTS))
CTEST_SAN_BINS := $(patsubst tests/c/%.c,build/ctest-san/%,$(CTESTS))
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all lib install test test-c test-c-plain test-c-san test-embed test-examples \
	test-examples-san test-fuzz-replay test-fuzz-replay-san fuzz valgrind test-py demo bench \
	bench-c bench-gpu venv clean

all: lib

lib: build/libcgrad.a build/libcgrad.so

build/obj/%.o: src_c/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -c $< -o $@

build/san/%.o: src_c/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -c $< -o $@

build/libcgrad.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $(OBJ)

# Real file libcgrad.so.X.Y.Z with soname libcgrad.so.X; the two links
# are what the loader (soname) and the linker (-lcgrad) look for.
build/libcgrad.so.$(VERSION): $(OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) -o $@ $(OBJ) $(LDLIBS)

build/libcgrad.so: build/libcgrad.so.$(VERSION)
	ln -sf libcgrad.so.$(VERSION) build/$(SONAME)
	ln -sf $(SONAME) $@

# cgrad.pc names the final PREFIX (never DESTDIR, which only stages).
install: build/libcgrad.a build/libcgrad.so
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/cgrad.h $(DESTDIR)$(INCLUDEDIR)/cgrad.h
	install -m 644 build/libcgrad.a $(DESTDIR)$(LIBDIR)/libcgrad.a
	install -m 755 build/libcgrad.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libcgrad.so.$(VERSION)
	ln -sf libcgrad.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libcgrad.so
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	    tools/cgrad.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/cgrad.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/cgrad.pc

build/libcgrad-san.a: $(SAN_OBJ)
	@rm -f $@
	ar rcs $@ $(SAN_OBJ)

# Tests may include the examples' headers (examples/c/digits.h).
CTEST_INC := -Iexamples/c
SAN_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1

build/ctest/%: tests/c/%.c tests/c/cgtest.h examples/c/digits.h build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CTEST_INC) $(CFLAGS) $< -o $@ build/libcgrad.a $(LDLIBS)

build/ctest-san/%: tests/c/%.c tests/c/cgtest.h examples/c/digits.h build/libcgrad-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CTEST_INC) $(SANFLAGS) $< -o $@ build/libcgrad-san.a $(LDLIBS)

# ------------------------------------------------------------ examples
# Each example checks its own result (exit status); the scripts check the
# printed output as well.
CXX ?= c++
EXAMPLE_BINS := build/examples/01_fit_line build/examples/02_digits_mlp build/examples/03_cpp_usage
EXAMPLE_SAN_BINS := $(patsubst build/examples/%,build/examples-san/%,$(EXAMPLE_BINS))

build/examples/%: examples/c/%.c build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) -pedantic $< -o $@ build/libcgrad.a $(LDLIBS)
build/examples/%: examples/c/%.cpp include/cgrad.h build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CXX) -std=c++11 -Wall -Wextra -pedantic -Iinclude $(CFLAGS) $< -o $@ build/libcgrad.a $(LDLIBS)
build/examples-san/%: examples/c/%.c build/libcgrad-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) -pedantic $< -o $@ build/libcgrad-san.a $(LDLIBS)
build/examples-san/%: examples/c/%.cpp include/cgrad.h build/libcgrad-san.a
	@mkdir -p $(dir $@)
	$(CXX) -std=c++11 -Wall -Wextra -pedantic -Iinclude $(SANFLAGS) $< -o $@ build/libcgrad-san.a $(LDLIBS)

test-examples: $(EXAMPLE_BINS)
	@tests/c/test_examples.sh build/examples

test-examples-san: $(EXAMPLE_SAN_BINS)
	@$(SAN_ENV) tests/c/test_examples.sh build/examples-san

# ------------------------------------------------------------ fuzzing
# The harness is plain C: gcc + replay.c runs the corpus in CI; clang +
# libFuzzer (make fuzz) searches for new inputs.
FUZZ_CORPUS := tests/fuzz/corpus
CLANG ?= clang
FUZZ_SRC := tests/fuzz/fuzz_ops.c

build/fuzz/replay: $(FUZZ_SRC) tests/fuzz/replay.c build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $(FUZZ_SRC) tests/fuzz/replay.c -o $@ build/libcgrad.a $(LDLIBS)
build/fuzz/replay-san: $(FUZZ_SRC) tests/fuzz/replay.c build/libcgrad-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) $(FUZZ_SRC) tests/fuzz/replay.c -o $@ build/libcgrad-san.a $(LDLIBS)

test-fuzz-replay: build/fuzz/replay
	@./build/fuzz/replay $(FUZZ_CORPUS)

test-fuzz-replay-san: build/fuzz/replay-san
	@$(SAN_ENV) ./build/fuzz/replay-san $(FUZZ_CORPUS)

# libFuzzer build, sources compiled into the one binary so the library is
# instrumented for coverage too.
build/fuzz/fuzz_ops: $(FUZZ_SRC) $(SRC) $(HDR)
	@mkdir -p $(dir $@)
	$(CLANG) $(filter-out -fvisibility=hidden,$(CFLAGS_BASE)) -g -O1 \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    $(FUZZ_SRC) $(SRC) -o $@ $(LDLIBS)

fuzz: build/fuzz/fuzz_ops
	@echo "run: ./build/fuzz/fuzz_ops -max_total_time=600 -max_len=512 build/fuzz/work $(FUZZ_CORPUS)"

# ------------------------------------------------------------ embedding
test-embed: build/libcgrad.a build/libcgrad.so
	@tests/c/test_symbols.sh build/libcgrad.so include/cgrad.h
	@tests/c/test_header.sh build/libcgrad.a
	@MAKE="$(MAKE)" tests/c/test_embed.sh

# test_optim once more with the measuring kernels' AVX2 clone (no FMA), the
# path of a CPU without FMA (optim.c, cpu_fma).
test-c-plain: $(CTEST_BINS) test-examples test-fuzz-replay
	@set -e; for t in $(CTEST_BINS); do ./$$t; done
	@echo "test_optim with CGRAD_NO_FMA=1:"; CGRAD_NO_FMA=1 ./build/ctest/test_optim

test-c-san: $(CTEST_SAN_BINS) test-examples-san test-fuzz-replay-san
	@set -e; for t in $(CTEST_SAN_BINS); do $(SAN_ENV) ./$$t; done

test-c: test-c-plain test-c-san test-embed

# Slow (minutes); not part of CI. Plain -O2 -g builds under memcheck.
VALGRIND := valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
	--suppressions=tests/c/valgrind.supp --error-exitcode=1 -q
valgrind: $(CTEST_BINS) $(EXAMPLE_BINS) build/fuzz/replay
	@set -e; for t in $(CTEST_BINS); do echo "== valgrind $$t"; $(VALGRIND) ./$$t; done
	@set -e; for t in $(EXAMPLE_BINS); do echo "== valgrind $$t"; $(VALGRIND) ./$$t > /dev/null; done
	@echo "== valgrind build/fuzz/replay"; $(VALGRIND) ./build/fuzz/replay $(FUZZ_CORPUS)

clean:
	rm -rf build cgrad/*.so cgrad/_core.c cgrad/.built cgrad/lib cgrad/include *.egg-info

# ------------------------------------------------------------------ Python
# .venv holds everything: build tools, runtime deps, test extras.
$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "setuptools>=77" "Cython>=3.0" wheel numpy scipy
	touch $@

# The extension, rebuilt when a C or Cython source changes.
cgrad/.built: $(VENV)/.base setup.py $(SRC) $(HDR) cgrad/_core.pyx cgrad/*.pxi cgrad/_cgrad.pxd
	$(VPY) setup.py -q build_ext --inplace
	touch $@

# pyproject.toml too: a new extra, package or console script needs a reinstall.
# viz = PyQt6 + pyqtgraph for the monitor app (cgrad.viz); its tests run offscreen.
$(VENV)/.installed: cgrad/.built pyproject.toml
	$(VPY) -m pip install -q --no-build-isolation -e ".[test,viz]"
	@# PyTorch is an optional oracle for tests and benchmarks: install it when
	@# the registry/disk has it, carry on without it otherwise.
	-$(VPY) -m pip install -q "torch==2.13.0"
	@# CuPy and its NVRTC compile the GPU kernels in tests (no GPU needed:
	@# tests/python/test_cuda_kernels_nvrtc.py); optional as torch is.
	-$(VPY) -m pip install -q "cupy-cuda13x==14.2.0" "nvidia-cuda-nvrtc==13.5.37"
	touch $@

venv: $(VENV)/.installed

test-py: $(VENV)/.installed cgrad/.built
	$(VPY) -m pytest tests/python -q -p no:cacheprovider

test: test-c test-py

demo: $(VENV)/.installed cgrad/.built
	$(VPY) examples/demo.py

build/bench/bench_c_custom: bench/bench_c_custom.c build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O2 $< -o $@ build/libcgrad.a $(LDLIBS)

bench-c: build/bench/bench_c_custom
	./build/bench/bench_c_custom

bench: $(VENV)/.installed cgrad/.built build/bench/bench_c_custom
	$(VPY) bench/bench_core.py
	$(VPY) bench/bench_custom.py
	$(VPY) bench/bench_train.py

# Training and the fused Adam step on "cuda" against PyTorch on the same GPU
# and the bandwidth bound, then the host overhead per device op. Without a
# GPU: make bench-gpu CGRAD_CUDA_REFERENCE=1 BENCH_GPU_ARGS=--quick runs both
# on the NumPy reference device.
bench-gpu: $(VENV)/.installed cgrad/.built
	$(VPY) bench/bench_gpu.py $(BENCH_GPU_ARGS)
	CGRAD_CUDA_REFERENCE=$${CGRAD_CUDA_REFERENCE:-0} $(VPY) bench/bench_device_overhead.py $(BENCH_GPU_ARGS)
