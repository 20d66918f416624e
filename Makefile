# cgrad -- build, test, demo and benchmark entry points.
#   make demo    create .venv, install cgrad, train a model on real data
#   make test    create .venv, install with test extras, run C tests and pytest
#   make lib     build libcgrad.a and libcgrad.so from src_c/ alone (no Python)
#   make test-c  C tests, plain and under AddressSanitizer + UBSan
#   make bench   cgrad vs PyTorch vs NumPy in one process run (not part of CI)

PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
CC     ?= cc
CFLAGS_BASE := -std=c99 -pthread -fno-math-errno -Wall -Wextra -Wno-unused-parameter -Iinclude -fPIC -fvisibility=hidden
CFLAGS ?= -O2 -g
LDLIBS := -lm -pthread

SRC  := $(wildcard src_c/*.c)
HDR  := $(wildcard src_c/*.h) include/cgrad.h
OBJ  := $(patsubst src_c/%.c,build/obj/%.o,$(SRC))
SAN_OBJ := $(patsubst src_c/%.c,build/san/%.o,$(SRC))
CTESTS := $(wildcard tests/c/test_*.c)
CTEST_BINS := $(patsubst tests/c/%.c,build/ctest/%,$(CTESTS))
CTEST_SAN_BINS := $(patsubst tests/c/%.c,build/ctest-san/%,$(CTESTS))
SANFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

.PHONY: all lib test test-c test-c-plain test-c-san test-py demo bench venv clean

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

build/libcgrad.so: $(OBJ)
	$(CC) -shared -o $@ $(OBJ) $(LDLIBS)

build/libcgrad-san.a: $(SAN_OBJ)
	@rm -f $@
	ar rcs $@ $(SAN_OBJ)

build/ctest/%: tests/c/%.c tests/c/cgtest.h build/libcgrad.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(CFLAGS) $< -o $@ build/libcgrad.a $(LDLIBS)

build/ctest-san/%: tests/c/%.c tests/c/cgtest.h build/libcgrad-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(SANFLAGS) $< -o $@ build/libcgrad-san.a $(LDLIBS)

test-c-plain: $(CTEST_BINS)
	@set -e; for t in $(CTEST_BINS); do ./$$t; done

test-c-san: $(CTEST_SAN_BINS)
	@set -e; for t in $(CTEST_SAN_BINS); do ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ./$$t; done

test-c: test-c-plain test-c-san

clean:
	rm -rf build cgrad/*.so cgrad/_core.c cgrad/.built *.egg-info

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

$(VENV)/.installed: cgrad/.built
	$(VPY) -m pip install -q --no-build-isolation -e ".[test]"
	@# PyTorch is an optional oracle for tests and benchmarks: install it when
	@# the registry/disk has it, carry on without it otherwise.
	-$(VPY) -m pip install -q "torch==2.13.0"
	touch $@

venv: $(VENV)/.installed

test-py: $(VENV)/.installed cgrad/.built
	$(VPY) -m pytest tests/python -q -p no:cacheprovider

test: test-c test-py

demo: $(VENV)/.installed cgrad/.built
	$(VPY) examples/train_digits.py

bench: $(VENV)/.installed cgrad/.built
	$(VPY) bench/bench_core.py
	$(VPY) bench/bench_custom.py
	$(VPY) bench/bench_train.py
