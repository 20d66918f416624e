"""cgrad/_cgrad.pxd must declare every function of include/cgrad.h."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _names(text, pattern):
    return set(re.findall(pattern, text))


def test_pxd_declares_every_public_function():
    header = (ROOT / "include" / "cgrad.h").read_text()
    header = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    pxd = (ROOT / "cgrad" / "_cgrad.pxd").read_text()
    pxd = "\n".join(l for l in pxd.splitlines() if "ctypedef" not in l and "(*" not in l)
    in_header = _names(header, r"CG_API\s+[^;(]*?\b(cg_\w+)\s*\(")
    in_pxd = _names(pxd, r"\b(cg_\w+)\s*\(")
    assert len(in_header) > 100
    assert in_header - in_pxd == set()
    assert in_pxd - in_header == set()
