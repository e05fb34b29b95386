"""Build the wheels a lent GPU machine lacks, for ``benchmarks/gpu_check.sh`` there.

The lent machines (see the device tool's KINDS.md) have Python 3.12, torch, pyarrow,
pandas, numpy, scipy, safetensors and pytest, but not Ray, and nothing there reaches a
package index. What travels with the working tree is capped at 64 MiB, and Ray's wheel is
79 MB, 32 MB of it the Java jars a Python job never loads. This script downloads, for the
machine's Python, the installed Ray version's wheel and the pure dependencies Ray's core
needs that the machine lacks, drops the jars and the dashboard's source maps from Ray's
wheel, and checks the total against the cap. On the machine:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .devkit/*.whl
    PYTHONPATH=/tmp/site:platform PYTHON=python3 bash benchmarks/gpu_check.sh

(``benchmarks/README.md``, "GPU", has the one command for the device tool.) W&B is not in
the kit: the GPU check's runs set ``tracking.wandb=disabled``.

    .venv/bin/python benchmarks/device_kit.py [--python-version 3.12] [--out .devkit]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

# Ray's own requirements that the lent machines' image does not hold (KINDS.md's list,
# 2026-11-17): jsonschema and what it pulls in, and pydantic (Ray Train V2 refuses to import
# without it). The rest of ray[train,tune,data] there is
# either on the image (pyarrow, pandas, fsspec, requests, aiohttp, grpcio, protobuf, ...)
# or optional at run time (the dashboard's and W&B's packages).
MISSING = ["jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "pydantic", "pydantic-core",
           "annotated-types", "typing-inspection"]
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]
DROP = ("ray/jars/", ".js.map")  # Java jars; the dashboard's source maps
CAP = 64 * 2 ** 20  # what travels with the working tree, the repo's own files included


def download(names: list[str], python: str, out: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS),
           "-d", str(out), *names]
    subprocess.run(cmd, check=True)


def trim(wheel: Path) -> tuple[int, int]:
    """Rewrite ``wheel`` without the members ``DROP`` names; (bytes before, after)."""
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if not any(d in item.filename if d.startswith(".") else item.filename.startswith(d) for d in DROP):
                dst.writestr(item, src.read(item.filename))
    tmp.replace(wheel)
    return before, wheel.stat().st_size


def repo_bytes(root: Path) -> int:
    files = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True).stdout
    return sum((root / f).stat().st_size for f in files.decode().split("\0") if f and (root / f).is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-version", default="3.12", help="the GPU machine's Python (default 3.12)")
    p.add_argument("--out", default=".devkit", help="folder for the wheels (git-ignored; default .devkit)")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parents[1]
    out = (root / args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    # the versions this environment runs together (pydantic pins its pydantic-core exactly)
    pins = [f"{n}=={metadata.version(n)}" for n in ("ray", *MISSING)]
    print(f"[device_kit] {', '.join(pins)} for Python {args.python_version} → {out}", flush=True)
    download(pins, args.python_version, out)
    (ray_wheel,) = out.glob("ray-*.whl")
    before, after = trim(ray_wheel)
    print(f"[device_kit] {ray_wheel.name}: {before / 2 ** 20:.1f} → {after / 2 ** 20:.1f} MiB without {DROP}")
    kit = sum(w.stat().st_size for w in out.glob("*.whl"))
    tree = repo_bytes(root)
    print(f"[device_kit] kit {kit / 2 ** 20:.1f} MiB + the repo's files {tree / 2 ** 20:.1f} MiB = "
          f"{(kit + tree) / 2 ** 20:.1f} MiB of the {CAP / 2 ** 20:.0f} MiB that travel")
    if kit + tree > CAP:
        print("[device_kit] over the cap: the device tool would refuse the call", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
