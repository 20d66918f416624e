#!/bin/sh
# include/cgrad.h compiles warning-free as C99 and as C++11 (extern "C"),
# with -pedantic -Werror, and a program built each way runs correctly
# against the static library.
# usage: tests/c/test_header.sh [build/libcgrad.a]
set -eu
lib=${1:-build/libcgrad.a}
CC=${CC:-cc}
CXX=${CXX:-c++}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

$CC -std=c99 -Wall -Wextra -pedantic -Werror -Iinclude \
    tests/c/embed/header_use.c -o "$tmp/use_c" "$lib" -lm -pthread
"$tmp/use_c"
cp tests/c/embed/header_use.c "$tmp/header_use.cpp"
$CXX -std=c++11 -Wall -Wextra -pedantic -Werror -Iinclude \
    "$tmp/header_use.cpp" -o "$tmp/use_cxx" "$lib" -lm -pthread
"$tmp/use_cxx"
# The header alone, first include in the unit, both languages.
printf '#include "cgrad.h"\n' > "$tmp/only.c"
cp "$tmp/only.c" "$tmp/only.cpp"
$CC -std=c99 -Wall -Wextra -pedantic -Werror -Iinclude -c "$tmp/only.c" -o "$tmp/only_c.o"
$CXX -std=c++11 -Wall -Wextra -pedantic -Werror -Iinclude -c "$tmp/only.cpp" -o "$tmp/only_cxx.o"
echo "test_header: C99 and C++11 -pedantic -Werror OK"
