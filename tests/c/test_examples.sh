#!/bin/sh
# Runs the C/C++ examples built in DIR and checks what they print: the line
# fit prints one loss per epoch, decreasing overall to below the noise
# floor; the C++ program's gradcheck and its other checks pass.
# usage: tests/c/test_examples.sh build/examples   (or build/examples-san)
set -eu
dir=${1:-build/examples}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test_examples: FAIL: $*"; exit 1; }

"$dir/01_fit_line" > "$tmp/fit.out" || { cat "$tmp/fit.out"; fail "01_fit_line exited non-zero"; }
epochs=$(grep -c '^epoch ' "$tmp/fit.out")
[ "$epochs" -eq 60 ] || fail "01_fit_line printed $epochs epoch lines, want 60"
awk '/^epoch / { loss[n++] = $4 }
     END {
         if (loss[0] <= loss[n - 1]) { print "loss did not decrease"; exit 1 }
         if (loss[n - 1] >= 0.02) { print "final loss " loss[n - 1] " >= 0.02"; exit 1 }
         for (i = 1; i < n; ++i) if (loss[i] > loss[i - 1] * 1.0001) { print "loss rose at epoch " i; exit 1 }
     }' "$tmp/fit.out" || fail "01_fit_line loss curve"

"$dir/03_cpp_usage" > "$tmp/cpp.out" || { cat "$tmp/cpp.out"; fail "03_cpp_usage exited non-zero"; }
grep -q '^gradcheck softsign: OK$' "$tmp/cpp.out" || fail "03_cpp_usage gradcheck"
grep -q '^throwing backward: CG_ERR_CALLBACK' "$tmp/cpp.out" || fail "03_cpp_usage error path"
grep -q '^all checks passed$' "$tmp/cpp.out" || fail "03_cpp_usage checks"

echo "test_examples ($dir): 01_fit_line loss $(awk '/^epoch /{l=$4} END{print l}' "$tmp/fit.out"), 03_cpp_usage OK"
