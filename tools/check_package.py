"""
Check the built distribution the way a user would meet it.

Run by C{tox -e packaging}: build the wheel, check that it ships the twistd
dropin and never a C{twisted/__init__.py} or C{twisted/plugins/__init__.py}
(pip would overwrite Twisted's own and break every twistd plugin), install
it into a fresh virtualenv, check that C{twistd --help} lists C{pbserver}
and that the C accelerator was compiled and is used,
then uninstall it and check that twistd still works.

Usage: python tools/check_package.py WORKDIR
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REQUIRED = {
    "pbext/__init__.py",
    "pbext/_version.py",
    "pbext/py.typed",
    "pbext/tap.py",
    "twisted/plugins/pbext_plugin.py",
}
FORBIDDEN = {"twisted/__init__.py", "twisted/plugins/__init__.py"}


def run(*argv: str, **kwargs: object) -> str:
    print("$", " ".join(argv), flush=True)
    result = subprocess.run(
        argv,
        check=True,
        capture_output=True,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )
    return result.stdout + result.stderr


def fail(message: str) -> None:
    print("FAILED:", message, file=sys.stderr)
    raise SystemExit(1)


def main(workdir: str) -> None:
    dist = os.path.join(workdir, "dist")
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    (wheel,) = [os.path.join(dist, n) for n in os.listdir(dist) if n.endswith(".whl")]
    if "pbext-0.0.0" in wheel:
        fail(f"{wheel}: version 0.0.0, incremental did not read pbext/_version.py")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = REQUIRED - names
    if missing:
        fail(f"{wheel} lacks {sorted(missing)}")
    if not any(
        n.startswith("pbext/_speedups") and n.endswith((".so", ".pyd")) for n in names
    ):
        fail(f"{wheel} lacks the C accelerator pbext/_speedups (was it compiled?)")
    shipped = FORBIDDEN & names
    if shipped:
        fail(f"{wheel} ships {sorted(shipped)}")
    print("wheel contents ok:", os.path.basename(wheel))

    venv = os.path.join(workdir, "venv")
    run(sys.executable, "-m", "virtualenv", "--quiet", venv)
    bindir = os.path.join(venv, "Scripts" if os.name == "nt" else "bin")
    python = os.path.join(bindir, "python")
    run(python, "-m", "pip", "install", "--quiet", wheel)
    twistd = [python, "-c", "from twisted.scripts.twistd import run; run()"]
    # Run from the work dir so the source tree's twisted/plugins is not seen.
    helpText = run(*twistd, "--help", cwd=workdir)
    if "pbserver" not in helpText:
        fail("twistd --help does not list pbserver after installing the wheel")
    pbHelp = run(*twistd, "pbserver", "--help", cwd=workdir)
    if "--listen" not in pbHelp:
        fail("twistd pbserver --help does not document --listen")
    print("installed: twistd lists pbserver")
    accelerated = run(
        python,
        "-c",
        "from pbext import codec; print(codec.makeDecoder().accelerated)",
        cwd=workdir,
    )
    if accelerated.strip() != "True":
        fail(f"the installed pbext does not use its C accelerator: {accelerated}")
    print("installed: the C accelerator is used")

    run(python, "-m", "pip", "uninstall", "--yes", "--quiet", "pbext")
    helpText = run(*twistd, "--help", cwd=workdir)
    if "pbserver" in helpText:
        fail("twistd still lists pbserver after uninstalling")
    if "web" not in helpText:
        fail("twistd lost its own plugins after uninstalling pbext")
    print("uninstalled: twistd works without pbserver")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
