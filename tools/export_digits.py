"""Export scikit-learn's bundled 8x8 digits to examples/c/data/digits.bin.

    python tools/export_digits.py [--out examples/c/data/digits.bin]

The split is the one examples/train_digits.py uses (train_test_split with
test_size=0.25, random_state=0, stratified), so a C program and the Python
side train on the same rows in the same order. The byte layout (all
integers little-endian) is documented in examples/c/README.md and read by
examples/c/digits.h:

    offset  size  field
    0       8     magic  b"CGDIGITS"
    8       4     uint32 format version (1)
    12      4     uint32 n_train
    16      4     uint32 n_test
    20      4     uint32 cols (64 pixels, row-major 8x8)
    24      4     uint32 n_classes (10)
    28      ...   uint8 train pixels (n_train * cols, values 0..16)
                  uint8 train labels (n_train, 0..9)
                  uint8 test pixels (n_test * cols)
                  uint8 test labels (n_test)

The output is deterministic: running the script again writes the same bytes.
"""
import argparse
import os
import struct
import sys

import numpy as np

MAGIC = b"CGDIGITS"
VERSION = 1
SEED = 0
TEST_SIZE = 0.25
HEADER = struct.Struct("<8sIIIII")


def split_digits():
    """(x_train, x_test, y_train, y_test) as uint8 arrays, the fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = digits.data
    if pixels.min() < 0 or pixels.max() > 16 or not np.all(pixels == np.round(pixels)):
        raise ValueError("digits pixels are expected to be integers in 0..16")
    return train_test_split(pixels.astype(np.uint8), digits.target.astype(np.uint8),
                            test_size=TEST_SIZE, random_state=SEED, stratify=digits.target)


def encode(x_train, x_test, y_train, y_test, n_classes=10):
    """The file's bytes for one split."""
    cols = x_train.shape[1]
    parts = [HEADER.pack(MAGIC, VERSION, len(x_train), len(x_test), cols, n_classes)]
    for x, y in ((x_train, y_train), (x_test, y_test)):
        parts += [np.ascontiguousarray(x, dtype=np.uint8).tobytes(),
                  np.ascontiguousarray(y, dtype=np.uint8).tobytes()]
    return b"".join(parts)


def decode(blob):
    """Inverse of encode: (x_train, x_test, y_train, y_test, n_classes)."""
    magic, version, n_train, n_test, cols, n_classes = HEADER.unpack_from(blob, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"not a digits v{VERSION} file (magic {magic!r}, version {version})")
    expected = HEADER.size + (n_train + n_test) * (cols + 1)
    if len(blob) != expected:
        raise ValueError(f"digits file has {len(blob)} bytes, header says {expected}")
    buf = np.frombuffer(blob, dtype=np.uint8, offset=HEADER.size)
    at = 0
    out = []
    for n in (n_train, n_test):
        x = buf[at:at + n * cols].reshape(n, cols)
        at += n * cols
        y = buf[at:at + n]
        at += n
        out.append((x, y))
    return out[0][0], out[1][0], out[0][1], out[1][1], n_classes


def main(argv=None):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(here, "examples", "c", "data", "digits.bin"))
    args = parser.parse_args(argv)
    blob = encode(*split_digits())
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(blob)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
