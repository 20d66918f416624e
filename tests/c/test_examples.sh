#!/bin/sh
# Runs the C/C++ examples built in DIR and checks what they print: the line
# fit prints one loss per epoch, decreasing overall to below the noise
# floor; the digits MLP gradchecks its custom loss, prints 20 epochs with
# a finite loss that ends far below its start and reaches >= 95% test
# accuracy; the C++ program's gradcheck and its other checks pass.
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

"$dir/02_digits_mlp" examples/c/data/digits.bin > "$tmp/digits.out" \
    || { cat "$tmp/digits.out"; fail "02_digits_mlp exited non-zero"; }
grep -q '^gradcheck softmax_cross_entropy: OK$' "$tmp/digits.out" || fail "02_digits_mlp gradcheck"
epochs=$(grep -c '^epoch ' "$tmp/digits.out")
[ "$epochs" -eq 20 ] || fail "02_digits_mlp printed $epochs epoch lines, want 20"
awk '/^epoch / { if ($4 != $4 + 0) { print "loss " $4 " is not a number"; exit 1 } loss[n++] = $4 }
     /^test accuracy / { acc = $3 }
     END {
         if (!(loss[n - 1] < loss[0] / 10)) { print "loss " loss[0] " -> " loss[n - 1]; exit 1 }
         if (!(acc >= 0.95)) { print "test accuracy " acc " < 0.95"; exit 1 }
     }' "$tmp/digits.out" || fail "02_digits_mlp loss / accuracy"

"$dir/03_cpp_usage" > "$tmp/cpp.out" || { cat "$tmp/cpp.out"; fail "03_cpp_usage exited non-zero"; }
grep -q '^gradcheck softsign: OK$' "$tmp/cpp.out" || fail "03_cpp_usage gradcheck"
grep -q '^throwing backward: CG_ERR_CALLBACK' "$tmp/cpp.out" || fail "03_cpp_usage error path"
grep -q '^all checks passed$' "$tmp/cpp.out" || fail "03_cpp_usage checks"

echo "test_examples ($dir): 01_fit_line loss $(awk '/^epoch /{l=$4} END{print l}' "$tmp/fit.out"), \
02_digits_mlp $(grep '^test accuracy' "$tmp/digits.out"), 03_cpp_usage OK"
