"""
Run pbext's fuzz targets (C{tox -e fuzz}): each for a fixed time, one
after the other, under atheris (libFuzzer for Python).

Each target starts from the inputs kept in C{fuzz/corpus/TARGET/} (seeds,
and every input that once found something: the test suite replays them,
see L{tests.test_fuzzcorpus}) and writes what it finds to the scratch
directory.  An input that finds something is printed, with the command
that replays it; copy it into C{fuzz/corpus/TARGET/} once fixed.

Usage::

    python fuzz/run.py [--seconds N | --ci] [--scratch DIR] [TARGET ...]

C{--seconds} defaults to the environment's C{PBEXT_FUZZ_SECONDS}, else 60:
each target explores from a new random seed for that long.  C{--ci} is
what C{tox -e fuzz} runs by default: each target makes a fixed number of
runs (L{CI_RUNS}, about a minute each here) from a fixed seed, so that a
CI run fails only because the code changed, never by the luck of the
draw; exploring further is what C{--seconds} is for.
Targets: C{decoder}, C{unjelly}, C{encoder} (all by default).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = ["decoder", "unjelly", "encoder"]

#: With C{--ci}: the runs each target makes, from seed L{CI_SEED}.
CI_RUNS = {"decoder": 200_000, "unjelly": 80_000, "encoder": 30_000}
CI_SEED = 1
#: With C{--ci}: the most seconds a target may take all the same.
CI_SECONDS = 300


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("PBEXT_FUZZ_SECONDS") or 60),
        help="how long each target runs",
    )
    parser.add_argument(
        "--ci",
        action="store_true",
        help="a fixed number of runs from a fixed seed (what CI runs)",
    )
    parser.add_argument("--scratch", default=None, help="where findings go")
    parser.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)}")
    options = parser.parse_args(argv)
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error(f"no such target: {', '.join(sorted(unknown))}")
    options.targets = options.targets or TARGETS
    try:
        import atheris  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: atheris is not installed here ({e})")
        return 0
    scratch = options.scratch or tempfile.mkdtemp(prefix="pbext-fuzz-")
    env = dict(os.environ, PBEXT_FUZZING="1", PBEXT_REQUIRE_SPEEDUPS="1")
    env.pop("PBEXT_PURE_PYTHON", None)
    found = []
    for target in options.targets:
        corpus = os.path.join(scratch, target)
        os.makedirs(corpus, exist_ok=True)
        seeds = os.path.join(HERE, "corpus", target)
        prefix = os.path.join(scratch, f"{target}-")
        if options.ci:
            budget = [
                f"-runs={CI_RUNS[target]}",
                f"-seed={CI_SEED}",
                f"-max_total_time={CI_SECONDS}",
            ]
            about = f"{CI_RUNS[target]} runs from seed {CI_SEED}"
        else:
            budget = [f"-max_total_time={options.seconds}"]
            about = f"{options.seconds} s"
        command = [
            sys.executable,
            os.path.join(HERE, f"{target}.py"),
            *budget,
            "-timeout=20",
            "-rss_limit_mb=4096",
            "-print_final_stats=1",
            f"-artifact_prefix={prefix}",
            corpus,
            seeds,
        ]
        print(f"== fuzzing {target} ({about})", flush=True)
        done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
        findings = sorted(glob.glob(prefix + "*"))
        if done.returncode != 0 or findings:
            found.append(target)
            print(f"!! {target}: exit status {done.returncode}")
            for path in findings:
                print(f"   finding: {path}")
                print(
                    f'   replay:  python -X faulthandler -c "import sys; '
                    f"sys.path.insert(0, 'fuzz'); import {target}; "
                    f"{target}.check(open({path!r}, 'rb').read())\""
                )
        else:
            print(f"== {target}: nothing found")
    if found:
        print(f"FAILED: {', '.join(found)} found something (see above)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
