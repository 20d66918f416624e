"""The model of 02_digits_mlp.c, trained from Python with the same seed.

    python examples/c/02_digits_mlp.py [path/to/digits.bin]

Same data file, same cgrad RNG calls in the same order (so the same initial
weights and the same shuffles), the same loss as a cgrad.autograd.Function
with the same hand-written gradient (softmax - onehot) / N, and
cgrad.optim.AdamW, WarmupCosineLR and clip_grad_norm_ over the same C
kernels the C program calls. It prints the same lines as the C program;
tests/python/test_c_python_parity.py runs both and compares every epoch.

Matmuls go through cgrad's built-in GEMM (use_blas(False)), the one the C
program links: a BLAS sums in another order and would only agree to
rounding.
"""
import math
import os
import struct
import sys

import numpy as np

import cgrad
from cgrad.nn.utils import clip_grad_norm_, last_clip_result
from cgrad.optim import AdamW
from cgrad.optim.lr_scheduler import WarmupCosineLR

SEED = 0
GRADCHECK_SEED = 1234
HIDDEN = 128
EPOCHS = 20
BATCH = 64
BASE_LR = 1e-2
WEIGHT_DECAY = 1e-2
WARMUP_EPOCHS = 1
MAX_NORM = 1.0
MIN_ACCURACY = 0.95

HERE = os.path.dirname(os.path.abspath(__file__))


def load_digits_bin(path):
    """(x_train, y_train, x_test, y_test): float32 pixels / 16 and int64
    labels, from the file layout in examples/c/README.md."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"CGDIGITS":
        raise ValueError(f"{path}: does not start with the magic 'CGDIGITS'")
    version, n_train, n_test, cols, n_classes = struct.unpack_from("<5I", raw, 8)
    if version != 1:
        raise ValueError(f"{path}: format version {version}, this loader reads 1")
    want = 28 + (n_train + n_test) * (cols + 1)
    if len(raw) != want:
        raise ValueError(f"{path}: {len(raw)} bytes, its header says {want}")
    data = np.frombuffer(raw, dtype=np.uint8, offset=28)
    out, at = [], 0
    for rows in (n_train, n_test):
        px = data[at:at + rows * cols].reshape(rows, cols)
        at += rows * cols
        lab = data[at:at + rows]
        at += rows
        out += [px.astype(np.float32) / np.float32(16), lab.astype(np.int64)]
    return out[0], out[1], out[2], out[3], int(n_classes)


class SoftmaxCrossEntropy(cgrad.autograd.Function):
    """-mean_i log_softmax(logits)[i, labels[i]] with the gradient
    (softmax - onehot) / N, op for op as sce_backward in 02_digits_mlp.c."""

    @staticmethod
    def forward(ctx, logits, labels):
        n, c = logits.shape
        ls = logits.log_softmax(1)
        loss = -(ls.gather(1, labels.unsqueeze(1)).mean())
        onehot = np.zeros((n, c), dtype=logits.detach().numpy().dtype)
        onehot[np.arange(n), labels.numpy()] = 1
        ctx.save_for_backward(ls.exp(), cgrad.from_numpy(onehot))
        ctx.n = n
        return loss

    @staticmethod
    def backward(ctx, g):
        probs, onehot = ctx.saved_tensors
        return (probs - onehot) * (1.0 / ctx.n) * g, None


def uniform_param(shape, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as rand * 2b - b (uniform_param in C)."""
    bound = 1.0 / math.sqrt(fan_in)
    return (cgrad.rand(*shape) * (2.0 * bound) - bound).requires_grad_()


def forward(params, x):
    w1, b1, w2, b2 = params
    return ((x @ w1 + b1).relu() @ w2) + b2


def accuracy(params, x, y):
    with cgrad.no_grad():
        pred = forward(params, x).argmax(dim=1).numpy()
    return float((pred == y.numpy()).mean())


def gradcheck_loss():
    cgrad.manual_seed(GRADCHECK_SEED)
    logits = cgrad.randn(6, 10, dtype=cgrad.float64, requires_grad=True)
    labels = cgrad.tensor([0, 3, 9, 3, 7, 1], dtype=cgrad.int64)
    return cgrad.autograd.gradcheck(lambda z: SoftmaxCrossEntropy.apply(z, labels), (logits,))


def main(argv):
    path = argv[1] if len(argv) > 1 else os.path.join(HERE, "data", "digits.bin")
    cgrad.use_blas(False)
    x_train, y_train, x_test, y_test, n_classes = load_digits_bin(path)
    xtr, ytr = cgrad.from_numpy(x_train), cgrad.from_numpy(y_train)
    xte, yte = cgrad.from_numpy(x_test), cgrad.from_numpy(y_test)
    n_train, cols = x_train.shape

    if not gradcheck_loss():
        print("gradcheck softmax_cross_entropy: FAILED", file=sys.stderr)
        return 1
    print("gradcheck softmax_cross_entropy: OK")

    cgrad.manual_seed(SEED)
    params = [uniform_param((cols, HIDDEN), cols), uniform_param((HIDDEN,), cols),
              uniform_param((HIDDEN, n_classes), HIDDEN), uniform_param((n_classes,), HIDDEN)]
    opt = AdamW(params, lr=BASE_LR, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = (n_train + BATCH - 1) // BATCH
    sched = WarmupCosineLR(opt, warmup_steps=WARMUP_EPOCHS * steps_per_epoch,
                           total_steps=EPOCHS * steps_per_epoch)

    for epoch in range(1, EPOCHS + 1):
        total, max_gn, lr = 0.0, 0.0, 0.0
        perm = cgrad.randperm(n_train)
        for first in range(0, n_train, BATCH):
            last = min(first + BATCH, n_train)
            opt.zero_grad()
            idx = perm[first:last]
            logits = forward(params, xtr.index_select(0, idx))
            loss = SoftmaxCrossEntropy.apply(logits, ytr.index_select(0, idx))
            loss_v = loss.item()
            loss.backward()
            clip_grad_norm_(params, MAX_NORM)
            gn = last_clip_result().total_norm  # in double, as C's total_norm
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            total += loss_v * (last - first)
            max_gn = max(max_gn, gn)
        print(f"epoch {epoch} loss {total / n_train:.8f} lr {lr:.8e} max_grad_norm {max_gn:.6f}")
    acc = accuracy(params, xte, yte)
    print(f"test accuracy {acc:.4f}")
    if acc < MIN_ACCURACY:
        print(f"digits_mlp: test accuracy {acc:.4f} below {MIN_ACCURACY:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
