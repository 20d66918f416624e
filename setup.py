"""Builds cgrad._core from cgrad/_core.pyx and the C core in src_c/."""
import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
c_sources = sorted(glob.glob(os.path.join("src_c", "*.c")))

ext = Extension(
    "cgrad._core",
    sources=[os.path.join("cgrad", "_core.pyx")] + c_sources,
    include_dirs=["include", "src_c"],
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wno-unused-function", "-pthread"],
    extra_link_args=["-pthread"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    ext_modules=cythonize([ext], language_level=3, compiler_directives={"embedsignature": True}),
)
