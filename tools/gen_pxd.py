"""Regenerates the function block of cgrad/_cgrad.pxd from include/cgrad.h.

    python tools/gen_pxd.py

The hand-written head of the .pxd (enums, opaque struct, function-pointer
typedefs) is kept; every `CG_API` prototype below it is rewritten in Cython
syntax. tests/python/test_pxd_sync.py fails when the two drift apart."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = "noexcept\n\n"  # the last typedef line of the head, then a blank line


def prototypes(header_text):
    text = re.sub(r"/\*.*?\*/", "", header_text, flags=re.S)
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    out = []
    for proto in re.findall(r"CG_API\s+([^;]*?)\s*;", text, flags=re.S):
        proto = " ".join(proto.split())
        proto = re.sub(r"(\w+)\[\d+\]", r"*\1", proto)  # int64_t s[2] -> int64_t *s
        proto = proto.replace("(void)", "()").replace("cg_tensor *const *", "cg_tensor **")
        out.append("    " + proto)
    return out


def main():
    pxd_path = ROOT / "cgrad" / "_cgrad.pxd"
    pxd = pxd_path.read_text()
    head = pxd[: pxd.rindex(MARK) + len(MARK)]
    body = prototypes((ROOT / "include" / "cgrad.h").read_text())
    pxd_path.write_text(head + "\n".join(body) + "\n")


if __name__ == "__main__":
    main()
