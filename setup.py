"""
Build pbext's optional C accelerator, C{pbext._speedups}.

Everything else is declared in C{setup.cfg}.  The extension is optional: a
machine without a C compiler or the Python headers still installs pbext,
which then runs its pure-Python codec (see C{pbext/_accelerator.py}).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pbext._speedups",
            sources=["pbext/_speedups.c"],
            optional=True,
        )
    ]
)
