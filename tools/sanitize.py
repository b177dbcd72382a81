"""
Run pbext's codec, jelly, accelerator and hostile-input tests against a
build of the C accelerator instrumented with AddressSanitizer and
UndefinedBehaviorSanitizer (C{tox -e sanitize}).

The checkout is copied to a scratch directory and the accelerator built
there in place, so the checkout's own build is left alone.  The tests run
with the sanitizer runtime preloaded (the interpreter itself is not
instrumented), with Python's small-object allocator off
(C{PYTHONMALLOC=malloc}) so that every object lives in memory the
sanitizer watches, and with leak detection off (the interpreter does not
free everything at exit).  Any sanitizer report fails the run.

Where the compiler cannot build or run sanitized code, this says so and
exits with status 0, so the environment is skipped rather than failed.

Usage: C{python tools/sanitize.py SCRATCH [TEST ...]}
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

#: The test modules run by default.
TESTS = [
    "tests.test_codec",
    "tests.test_jelly",
    "tests.test_accelerator",
    "tests.test_plaintypes",
    "tests.test_classiccopies",
    "tests.test_peerdecoding",
    "tests.test_mutatedsend",
    "tests.test_fuzzcorpus",
    "tests.test_hostile",
    "tests.test_hostile_inmemory",
]

#: What is copied from the checkout.
COPIED = [
    "pbext",
    "tests",
    "twisted",
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "README.rst",
]

SANITIZE = "-fsanitize=address,undefined"
CFLAGS = f"{SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g -O1"
WARNINGS = "-Wall -Wextra -Werror"


def compiler() -> str:
    """
    The C compiler Python's extensions are built with.
    """
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]


def runtime(cc: str) -> str | None:
    """
    The path of the AddressSanitizer runtime library of C{cc}, to preload,
    or L{None} if it cannot be found.
    """
    for name in ("libasan.so", f"libclang_rt.asan-{os.uname().machine}.so"):
        try:
            out = subprocess.run(
                [cc, f"-print-file-name={name}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            continue
        if os.path.isabs(out) and os.path.exists(out):
            return os.path.realpath(out)
    return None


def supported(cc: str) -> str | None:
    """
    Why C{cc} cannot build and run sanitized code, or L{None} if it can.
    """
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "probe.c")
        with open(source, "w") as f:
            f.write("int main(void) { return 0; }\n")
        binary = os.path.join(scratch, "probe")
        try:
            done = subprocess.run(
                [cc, *SANITIZE.split(), source, "-o", binary],
                capture_output=True,
                text=True,
            )
        except OSError as e:
            return f"no C compiler ({cc}: {e})"
        if done.returncode != 0:
            return f"{cc} does not support {SANITIZE}: {done.stderr.strip()[:300]}"
        if subprocess.run([binary]).returncode != 0:
            return f"sanitized programs built by {cc} do not run here"
    return None


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    scratch = os.path.abspath(argv[1])
    tests = argv[2:] or TESTS
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cc = compiler()
    reason = supported(cc)
    library = runtime(cc) if reason is None else None
    if reason is None and library is None:
        reason = f"{cc} has no AddressSanitizer runtime library to preload"
    if reason is not None:
        print(f"SKIPPED: the sanitizer build is not possible here: {reason}")
        return 0
    tree = os.path.join(scratch, "tree")
    shutil.rmtree(tree, ignore_errors=True)
    os.makedirs(tree)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "_trial_temp*", "*.pyc")
    for name in COPIED:
        source = os.path.join(here, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(tree, name), ignore=ignore)
        elif os.path.exists(source):
            shutil.copy2(source, tree)
    env = dict(os.environ)
    env["CFLAGS"] = f"{CFLAGS} {WARNINGS}"
    env["LDFLAGS"] = SANITIZE
    build = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=tree,
        env=env,
    )
    if build.returncode != 0:
        print("FAILED: the sanitized build of pbext/_speedups.c failed")
        return 1
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=library,
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:print_summary=1",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        PYTHONMALLOC="malloc",
        PBEXT_REQUIRE_SPEEDUPS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PBEXT_PURE_PYTHON", None)
    check = (
        "import pbext._speedups as s, sys; "
        f"sys.exit(0 if s.__file__.startswith({tree!r}) else 1)"
    )
    if subprocess.run([sys.executable, "-c", check], cwd=tree, env=env).returncode:
        print("FAILED: the sanitized build is not the one imported")
        return 1
    trial = subprocess.Popen(
        [sys.executable, "-m", "twisted.trial", "--reporter=text", *tests],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert trial.stdout is not None
    for line in trial.stdout:
        # Named, so that CI's summary of the whole suite's trial run
        # (the last line starting "PASSED (" or "FAILED (") is not this.
        if line.startswith(("PASSED (", "FAILED (")):
            line = f"sanitized build: {line}"
        print(line, end="", flush=True)
    return trial.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
