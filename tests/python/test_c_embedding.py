"""The C header and libcgrad.so shipped inside the package: `python -m cgrad
--cflags --libs` gives flags with which a C program compiles, links and runs
against the package (built in place by setup.py build_ext)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cgrad
from cgrad import _embed
from cgrad.__main__ import main as cgrad_main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_PARENT = Path(cgrad.__file__).resolve().parents[1]
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

needs_lib = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not os.path.exists(
        os.path.join(_embed.get_lib_dir(), _embed.LIBRARY_NAME)),
    reason="libcgrad.so is built into the package on Linux only")
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler")


def python_m_cgrad(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PACKAGE_PARENT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-m", "cgrad", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def build_and_run(tmp_path, source, extra=()):
    flags = python_m_cgrad("--cflags", "--libs")
    assert flags.returncode == 0, flags.stderr
    exe = tmp_path / Path(source).stem
    cmd = [CC, str(source), "-o", str(exe), *flags.stdout.split(), *extra]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"{' '.join(cmd)}\n{built.stderr}"
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}  # rpath alone
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return exe, ran.stdout


@needs_lib
def test_flags_point_into_the_package():
    out = python_m_cgrad("--cflags", "--libs")
    assert out.returncode == 0, out.stderr
    flags = out.stdout.split()
    assert flags[0] == f"-I{_embed.get_include()}"
    assert f"-L{_embed.get_lib_dir()}" in flags and "-lcgrad" in flags
    assert f"-Wl,-rpath,{_embed.get_lib_dir()}" in flags
    assert (Path(_embed.get_include()) / "cgrad.h").read_bytes() == (ROOT / "include" / "cgrad.h").read_bytes()
    assert python_m_cgrad("--cflags").stdout.split() == flags[:1]
    assert python_m_cgrad("--libdir").stdout.strip() == _embed.get_lib_dir()
    assert python_m_cgrad("--includedir").stdout.strip() == _embed.get_include()


def test_modversion_matches_the_header():
    out = python_m_cgrad("--modversion")
    assert out.returncode == 0, out.stderr
    header = (ROOT / "include" / "cgrad.h").read_text()
    assert f'#define CG_VERSION_STRING "{out.stdout.strip()}"' in header
    assert out.stdout.strip() == cgrad.__version__


def test_no_option_is_a_usage_error():
    out = python_m_cgrad()
    assert out.returncode == 2
    assert "--cflags" in out.stderr
    bad = python_m_cgrad("--cflagz")
    assert bad.returncode == 2 and "--cflagz" in bad.stderr


def test_missing_library_is_reported(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(_embed, "get_lib_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="libcgrad.so"):
        _embed.libs()
    assert cgrad_main(["--libs"]) == 1
    assert str(tmp_path) in capsys.readouterr().err


@needs_lib
@needs_cc
def test_c_program_builds_and_runs_against_the_package(tmp_path):
    exe, out = build_and_run(tmp_path, ROOT / "tests" / "c" / "embed" / "header_use.c")
    assert out.startswith(f"header_use: cgrad {cgrad.__version__}")
    if shutil.which("ldd"):
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=env).stdout
        assert os.path.join(_embed.get_lib_dir(), "libcgrad.so") in ldd


@needs_lib
@needs_cc
def test_fit_line_example_trains_against_the_package(tmp_path):
    _, out = build_and_run(tmp_path, ROOT / "examples" / "c" / "01_fit_line.c", extra=["-lm"])
    losses = [float(line.split()[3]) for line in out.splitlines() if line.startswith("epoch ")]
    assert len(losses) == 60
    assert losses[-1] < 0.02 < losses[0]


@needs_lib
@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm")
def test_package_library_exports_only_the_public_api():
    lib = os.path.join(_embed.get_lib_dir(), _embed.LIBRARY_NAME)
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True, check=True)
    names = [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert names and all(n.startswith("cg_") and not n.startswith("cg__") for n in names), \
        [n for n in names if not n.startswith("cg_") or n.startswith("cg__")]
    assert "cg_backward" in names and "cg_record_custom" in names
