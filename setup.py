"""Builds cgrad._core from cgrad/_core.pyx and the C core in src_c/.

build_ext also builds the C library for embedding: libcgrad.so from the
same src_c/ sources (public cg_ API exported, internals hidden) into
cgrad/lib/, and copies include/cgrad.h into cgrad/include/, so a wheel
carries both and `python -m cgrad --cflags --libs` can point a C compiler
at them (ARCHITECTURE.md, "Embedding from C"). The extension module keeps
its own statically compiled copy of the core.
"""
import glob
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

here = os.path.dirname(os.path.abspath(__file__))
c_sources = sorted(glob.glob(os.path.join("src_c", "*.c")))
c_headers = sorted(glob.glob(os.path.join("src_c", "*.h"))) + [os.path.join("include", "cgrad.h")]

# ELF platforms: a shared object with a soname; others get no embedding
# library (the Python package works the same without it).
EMBED_LIB = "libcgrad.so" if sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")) else None

ext = Extension(
    "cgrad._core",
    sources=[os.path.join("cgrad", "_core.pyx")] + c_sources,
    include_dirs=["include", "src_c"],
    extra_compile_args=["-O3", "-fno-math-errno", "-fno-strict-aliasing", "-Wno-unused-function", "-pthread"],
    extra_link_args=["-pthread"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)


def _build_jobs():
    """Compiler processes at once: CGRAD_BUILD_JOBS, else one per CPU."""
    v = os.environ.get("CGRAD_BUILD_JOBS", "")
    try:
        return max(1, int(v)) if v else (os.cpu_count() or 1)
    except ValueError:
        raise SystemExit(f"CGRAD_BUILD_JOBS must be a whole number, got {v!r}") from None


def _compile_in_parallel(compiler, jobs):
    """Makes compiler.compile run its sources `jobs` at a time (distutils
    compiles an extension's sources one after another; the extension and
    libcgrad.so are ~20 C files and the large generated _core.c)."""
    if jobs < 2:
        return

    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        # the largest first (the generated _core.c), so it is not the last one left
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, sorted(build, key=lambda o: -os.path.getsize(build[o][0]))))
        return objects

    compiler.compile = compile


class build_ext_with_libcgrad(build_ext):
    """build_ext plus cgrad/lib/libcgrad.so and cgrad/include/cgrad.h,
    compiling sources in parallel (CGRAD_BUILD_JOBS)."""

    def _embed_files(self, package_dir):
        files = [os.path.join(package_dir, "include", "cgrad.h")]
        if EMBED_LIB:
            files.append(os.path.join(package_dir, "lib", EMBED_LIB))
        return files

    def build_extensions(self):
        _compile_in_parallel(self.compiler, _build_jobs())
        # setuptools builds into build_lib even for --inplace and copies the
        # outputs back afterwards (copy_extensions_to_source, below). The
        # embedding library compiles at the same time as the extension:
        # each has its own copy of optim.c, the slowest file (~70 s at -O3).
        with ThreadPoolExecutor(1) as pool:
            embed = pool.submit(self._build_embed, os.path.join(self.build_lib, "cgrad"))
            super().build_extensions()
            embed.result()

    def _build_embed(self, package_dir):
        header, *lib = self._embed_files(package_dir)
        os.makedirs(os.path.dirname(header), exist_ok=True)
        shutil.copyfile(os.path.join(here, "include", "cgrad.h"), header)
        if not lib:
            return
        target = lib[0]
        deps = [os.path.join(here, p) for p in c_sources + c_headers]
        if os.path.exists(target) and not self.force and all(
                os.path.getmtime(d) <= os.path.getmtime(target) for d in deps):
            return
        objects = self.compiler.compile(
            c_sources, output_dir=os.path.join(self.build_temp, "libcgrad"),
            include_dirs=["include", "src_c"],
            extra_postargs=["-std=c99", "-O3", "-fno-math-errno", "-fvisibility=hidden", "-pthread"])
        self.compiler.link_shared_object(
            objects, os.path.basename(target), output_dir=os.path.dirname(target),
            libraries=["m"], extra_postargs=["-pthread", "-Wl,-soname," + EMBED_LIB])

    def _copy_embed(self, src_pkg, dst_pkg):
        for src, dst in zip(self._embed_files(src_pkg), self._embed_files(dst_pkg)):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            self.copy_file(src, dst, level=self.verbose)

    def copy_extensions_to_source(self):
        super().copy_extensions_to_source()
        self._copy_embed(os.path.join(self.build_lib, "cgrad"), os.path.join(here, "cgrad"))

    def get_outputs(self):
        return super().get_outputs() + self._embed_files(os.path.join(self.build_lib, "cgrad"))

    def _get_output_mapping(self):
        yield from super()._get_output_mapping()
        if self.inplace:
            yield from zip(self._embed_files(os.path.join(self.build_lib, "cgrad")),
                           self._embed_files(os.path.join(here, "cgrad")))


setup(
    ext_modules=cythonize([ext], language_level=3, compiler_directives={"embedsignature": True}),
    cmdclass={"build_ext": build_ext_with_libcgrad},
)
