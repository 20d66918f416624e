"""Pack a libFuzzer corpus into at most N regression inputs.

    python tests/fuzz/bundle_corpus.py MERGED_DIR OUT_DIR [--max-files 50]

fuzz_ops.c runs an input that starts with b"CGFB" as a bundle: a sequence
of programs, each framed by a 2-byte little-endian length, each run exactly
as if it were an input of its own. A merged corpus of a thousand tiny
inputs becomes N bundles (round-robin, so they are about the same size);
`fuzz_ops -merge=1` over the bundles then drops any that add no coverage.
Deterministic: files are taken in name order. Inputs of 64 KiB or more do
not fit a frame and are refused.
"""
import argparse
import os
import struct
import sys

MAGIC = b"CGFB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("merged_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--max-files", type=int, default=50)
    args = parser.parse_args(argv)
    if args.max_files < 1:
        parser.error(f"--max-files must be >= 1, got {args.max_files}")
    names = sorted(n for n in os.listdir(args.merged_dir)
                   if os.path.isfile(os.path.join(args.merged_dir, n)))
    if not names:
        parser.error(f"no inputs in {args.merged_dir}")
    bundles = [bytearray(MAGIC) for _ in range(min(args.max_files, len(names)))]
    for i, name in enumerate(names):
        with open(os.path.join(args.merged_dir, name), "rb") as f:
            blob = f.read()
        if len(blob) > 0xFFFF:
            parser.error(f"{name} has {len(blob)} bytes; a frame holds at most 65535")
        bundles[i % len(bundles)] += struct.pack("<H", len(blob)) + blob
    os.makedirs(args.out_dir, exist_ok=True)
    for i, blob in enumerate(bundles):
        with open(os.path.join(args.out_dir, f"bundle-{i:02d}"), "wb") as f:
            f.write(blob)
    print(f"{len(names)} inputs -> {len(bundles)} bundles in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
