#!/bin/sh
# The shared library exports the public API and nothing else: every dynamic
# symbol it defines is a cg_ name, none is a cg__ internal, and every CG_API
# function declared in the header is there.
# usage: tests/c/test_symbols.sh build/libcgrad.so include/cgrad.h
set -eu
lib=${1:-build/libcgrad.so}
hdr=${2:-include/cgrad.h}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Defined dynamic symbols, without the version-script/linker bookkeeping ones.
nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u > "$tmp/exported"
fail=0
if grep -v '^cg_' "$tmp/exported" > "$tmp/foreign"; then
    echo "FAIL: $lib exports non-cg_ symbols:"; cat "$tmp/foreign"; fail=1
fi
if grep '^cg__' "$tmp/exported" > "$tmp/internal"; then
    echo "FAIL: $lib exports cg__ internals:"; cat "$tmp/internal"; fail=1
fi
# Functions declared CG_API in the header: the name before the first '('.
tr '\n' ' ' < "$hdr" | tr ';' '\n' | grep 'CG_API' | grep -v '#define' \
    | sed -n 's/.*[ *]\(cg_[a-z0-9_]*\) *(.*/\1/p' | sort -u > "$tmp/declared"
if ! [ -s "$tmp/declared" ]; then
    echo "FAIL: found no CG_API declarations in $hdr"; fail=1
fi
if comm -23 "$tmp/declared" "$tmp/exported" > "$tmp/missing" && [ -s "$tmp/missing" ]; then
    echo "FAIL: declared in $hdr but not exported by $lib:"; cat "$tmp/missing"; fail=1
fi
if comm -13 "$tmp/declared" "$tmp/exported" > "$tmp/extra" && [ -s "$tmp/extra" ]; then
    echo "FAIL: exported by $lib but not declared CG_API in $hdr:"; cat "$tmp/extra"; fail=1
fi
n=$(wc -l < "$tmp/exported")
if [ "$fail" -ne 0 ]; then exit 1; fi
echo "test_symbols: $n exported symbols, all public cg_ API"
