"""python -m cgrad --cflags --libs: flags to build a C program against the
header and libcgrad.so shipped in this package, pkg-config style:

    cc prog.c $(python -m cgrad --cflags --libs)

Options may be combined; the output is one line, cflags before libs (as
pkg-config prints them). --includedir / --libdir print the directories.
"""
import argparse
import shlex
import sys

from cgrad import _embed, __version__


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cgrad", description=__doc__.splitlines()[0])
    parser.add_argument("--cflags", action="store_true", help="print the compiler flags")
    parser.add_argument("--libs", action="store_true", help="print the linker flags")
    parser.add_argument("--includedir", action="store_true", help="print the header's directory")
    parser.add_argument("--libdir", action="store_true", help="print the library's directory")
    parser.add_argument("--modversion", "--version", action="store_true", dest="version",
                        help="print cgrad's version")
    args = parser.parse_args(argv)
    if not (args.cflags or args.libs or args.includedir or args.libdir or args.version):
        parser.print_usage(sys.stderr)
        print("python -m cgrad: error: give at least one of --cflags, --libs, --includedir, "
              "--libdir, --modversion", file=sys.stderr)
        return 2
    if args.version:
        print(__version__)
    if args.includedir:
        print(_embed.get_include())
    if args.libdir:
        print(_embed.get_lib_dir())
    flags = []
    try:
        if args.cflags:
            flags += _embed.cflags()
        if args.libs:
            flags += _embed.libs()
    except FileNotFoundError as e:
        print(f"python -m cgrad: {e}", file=sys.stderr)
        return 1
    if flags:
        print(" ".join(shlex.quote(f) for f in flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
