"""Pack a libFuzzer corpus into at most N regression inputs.

    python tests/fuzz/bundle_corpus.py MERGED_DIR OUT_DIR [--max-files 50]

fuzz_ops.c runs an input that starts with b"CGFB" as a bundle: a sequence
of programs, each framed by a 2-byte little-endian length, each run exactly
as if it were an input of its own. A merged corpus of a thousand tiny
inputs becomes N bundles (round-robin, so they are about the same size);
`fuzz_ops -merge=1` over the bundles then drops any that add no coverage.
Deterministic: files are taken in name order. An input that is itself a
bundle (the merge keeps old corpus bundles that still add coverage) is
unpacked into its programs first: framed again whole, it would run as ONE
program and its coverage would be lost. Inputs of 64 KiB or more do not fit
a frame and are refused.
"""
import argparse
import os
import struct
import sys

MAGIC = b"CGFB"


def programs(blob):
    """The programs of an input: its frames if it is a bundle (read as
    fuzz_ops.c reads them), else the input itself."""
    if not blob.startswith(MAGIC):
        return [blob]
    out, at = [], len(MAGIC)
    while at + 2 <= len(blob):
        (n,) = struct.unpack_from("<H", blob, at)
        at += 2
        out.append(blob[at:at + n])
        at += n
    return out


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
    progs = []
    for name in names:
        with open(os.path.join(args.merged_dir, name), "rb") as f:
            blob = f.read()
        if len(blob) > 0xFFFF and not blob.startswith(MAGIC):
            parser.error(f"{name} has {len(blob)} bytes; a frame holds at most 65535")
        progs += programs(blob)
    bundles = [bytearray(MAGIC) for _ in range(min(args.max_files, len(progs)))]
    for i, blob in enumerate(progs):
        bundles[i % len(bundles)] += struct.pack("<H", len(blob)) + blob
    os.makedirs(args.out_dir, exist_ok=True)
    for i, blob in enumerate(bundles):
        with open(os.path.join(args.out_dir, f"bundle-{i:02d}"), "wb") as f:
            f.write(blob)
    print(f"{len(names)} inputs ({len(progs)} programs) -> {len(bundles)} bundles in "
          f"{args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
