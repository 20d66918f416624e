"""Where the C header and library shipped inside the package live.

setup.py's build_ext puts include/cgrad.h in cgrad/include/ and a
libcgrad.so built from src_c/ in cgrad/lib/; `python -m cgrad --cflags
--libs` prints the flags a C compiler needs to use them. The library is a
separate copy of the core: tensors made by a C program that links it are not
shared with the Python module's tensors.
"""
import os
import sys

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY_NAME = "libcgrad.so"


def get_include():
    """Directory holding cgrad.h."""
    return os.path.join(_PACKAGE_DIR, "include")


def get_lib_dir():
    """Directory holding libcgrad.so."""
    return os.path.join(_PACKAGE_DIR, "lib")


def _require(path, what):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"cgrad's {what} is not in this installation ({path} is missing); it is built by "
            f"`python setup.py build_ext` on Linux/ELF platforms (sys.platform here is "
            f"{sys.platform!r})")
    return path


def cflags():
    """Compiler flags: the include directory."""
    _require(os.path.join(get_include(), "cgrad.h"), "C header")
    return [f"-I{get_include()}"]


def libs():
    """Linker flags: the library directory, an rpath to it (the package
    directory is not on the loader's search path) and -lcgrad."""
    lib_dir = get_lib_dir()
    _require(os.path.join(lib_dir, LIBRARY_NAME), "C library")
    return [f"-L{lib_dir}", f"-Wl,-rpath,{lib_dir}", "-lcgrad"]
