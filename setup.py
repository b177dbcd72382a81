"""
Build pbext's optional C accelerator, C{pbext._speedups}.

Everything else is declared in C{setup.cfg}.  The extension is optional: a
machine without a C compiler or the Python headers still installs pbext,
which then runs its pure-Python codec (see C{pbext/_accelerator.py}).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """
    Compile with every warning of C{-Wall -Wextra} where the compiler is a
    Unix one (gcc, clang and compatibles take both flags): the accelerator
    is kept free of them (C{tox -e sanitize} builds it with C{-Werror}).
    Other compilers (MSVC) get their defaults.
    """

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for extension in self.extensions:
                extension.extra_compile_args = [
                    "-Wall",
                    "-Wextra",
                    *extension.extra_compile_args,
                ]
        super().build_extensions()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "pbext._speedups",
            sources=["pbext/_speedups.c"],
            optional=True,
        )
    ],
)
