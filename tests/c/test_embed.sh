#!/bin/sh
# `make install` into a temporary prefix, then build programs the way a user
# of the installed library would: only `cc prog.c $(pkg-config --cflags
# --libs cgrad)` with PKG_CONFIG_PATH pointing at the prefix, and run them.
# Also checks the installed layout, the soname links, the pkg-config
# version against the header, DESTDIR staging, and a static link.
# usage: tests/c/test_embed.sh   (from the repository root; MAKE, CC, CXX optional)
set -eu
MAKE=${MAKE:-make}
CC=${CC:-cc}
CXX=${CXX:-c++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_embed: FAIL: $*"; exit 1; }
for tool in pkg-config readelf ldd; do
    command -v "$tool" > /dev/null || fail "$tool is needed for this test and was not found"
done

prefix="$tmp/prefix"
$MAKE --no-print-directory -s install PREFIX="$prefix" >/dev/null
version=$(sed -n 's/^#define CG_VERSION_STRING "\(.*\)"/\1/p' include/cgrad.h)
major=${version%%.*}
for f in include/cgrad.h lib/libcgrad.a "lib/libcgrad.so.$version" lib/pkgconfig/cgrad.pc; do
    [ -f "$prefix/$f" ] || fail "make install did not install $f"
done
[ "$(readlink "$prefix/lib/libcgrad.so")" = "libcgrad.so.$major" ] || fail "libcgrad.so link"
[ "$(readlink "$prefix/lib/libcgrad.so.$major")" = "libcgrad.so.$version" ] || fail "soname link"
readelf -d "$prefix/lib/libcgrad.so.$version" | grep -q "SONAME.*\[libcgrad.so.$major\]" \
    || fail "soname is not libcgrad.so.$major"
# The installed header and library are the ones in the tree.
cmp -s include/cgrad.h "$prefix/include/cgrad.h" || fail "installed header differs"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion cgrad)" = "$version" ] || fail "pkg-config version != $version"
[ "$(pkg-config --variable=prefix cgrad)" = "$prefix" ] || fail "pkg-config prefix"

# Shared: the README's one-line commands, run with the installed library.
$CC tests/c/embed/header_use.c -o "$tmp/header_use" $(pkg-config --cflags --libs cgrad)
$CC examples/c/01_fit_line.c -o "$tmp/fit_line" $(pkg-config --cflags --libs cgrad) -lm
# 02 includes digits.h from its own directory, as in its README.
(cd examples/c && $CC 02_digits_mlp.c -o "$tmp/digits_mlp" $(pkg-config --cflags --libs cgrad) -lm)
$CXX examples/c/03_cpp_usage.cpp -o "$tmp/cpp_usage" $(pkg-config --cflags --libs cgrad)
for p in header_use fit_line digits_mlp cpp_usage; do
    LD_LIBRARY_PATH="$prefix/lib" ldd "$tmp/$p" | grep -q "libcgrad.so.$major => $prefix/lib/" \
        || fail "$p does not load libcgrad.so.$major from the prefix"
    LD_LIBRARY_PATH="$prefix/lib" "$tmp/$p" > "$tmp/$p.out" || fail "$p failed: $(cat "$tmp/$p.out")"
done
# rpath instead of LD_LIBRARY_PATH.
$CC tests/c/embed/header_use.c -o "$tmp/header_use_rpath" $(pkg-config --cflags --libs cgrad) \
    -Wl,-rpath,"$(pkg-config --variable=libdir cgrad)"
"$tmp/header_use_rpath" > /dev/null || fail "rpath build failed"

# Static: the archive plus pkg-config's private libraries, no libcgrad.so needed.
$CC tests/c/embed/header_use.c -o "$tmp/header_use_static" $(pkg-config --cflags cgrad) \
    "$prefix/lib/libcgrad.a" $(pkg-config --static --libs-only-l cgrad | sed 's/-lcgrad//')
if ldd "$tmp/header_use_static" | grep -q libcgrad; then fail "static build links libcgrad.so"; fi
"$tmp/header_use_static" > /dev/null || fail "static build failed"

# DESTDIR stages the files, cgrad.pc keeps the final PREFIX.
$MAKE --no-print-directory -s install PREFIX=/opt/cgrad DESTDIR="$tmp/stage" >/dev/null
[ -f "$tmp/stage/opt/cgrad/lib/libcgrad.so.$version" ] || fail "DESTDIR install"
grep -q '^prefix=/opt/cgrad$' "$tmp/stage/opt/cgrad/lib/pkgconfig/cgrad.pc" \
    || fail "DESTDIR leaked into cgrad.pc"

echo "test_embed: make install + pkg-config builds (shared, rpath, static, C++) OK"
