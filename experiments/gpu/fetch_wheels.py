"""Fetch, on a machine with PyPI, the wheels the GPU machine lacks, into the ignored folder `.whl/`.

The GPU machine (Python 3.12, x86-64, no network) has torch, lightning, transformers, peft, ...
(`image_packages.txt`) but not all of prresq's dependencies. Which wheels to carry is decided, not
listed by hand:

1. the requirements are prresq's `dependencies` plus its `gpu` and `bench` extras from
   pyproject.toml (torch/torchvision pins and flash-attn left out: the image's torch is used, and
   flash-attn is a CUDA build; `attn_implementation=sdpa` needs none);
2. each requirement the image does not have is downloaded with `--no-deps` for CPython 3.12 /
   manylinux x86-64 (one version each), then the requirements in its METADATA (markers evaluated
   for that interpreter, extras left out), breadth first, stopping at packages the image has; a
   requirement on an image package is checked against the version read there (`name==version`
   lines of `image_packages.txt`), and a mismatch stops the script with the requirement that does
   not fit. This is the import check's static half: the whole import closure of prresq, trl and
   deepspeed is either on the image or carried;
3. deepspeed is built here as a pure-Python wheel with DS_BUILD_OPS=0
   (its ops compile just in time on the GPU machine, where nvcc and ninja are), and so is
   antlr4-python3-runtime 4.9.3 (hydra-core's parser runtime, published as source only);
4. the sizes are printed and the total is checked against the carry limit (64 MiB per call, minus
   the working tree that travels with it).

    python experiments/gpu/fetch_wheels.py            # writes .whl/*.whl and .whl/MANIFEST.txt

`experiments/gpu/run_kit.sh` installs the wheels there (`pip install --no-index --no-deps --target`)
and checks that prresq, trl and deepspeed import before any GPU check runs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
PLATFORMS += ["manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64"]
TARGET = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--only-binary=:all:"]
TARGET += [arg for p in PLATFORMS for arg in ("--platform", p)]
LIMIT_MIB = 64.0
# Left out of the requirements: pinned for this machine (the image's own torch is used) or a CUDA build.
NOT_CARRIED = {"torch", "torchvision", "flash-attn"}
# Published as source only (hydra-core 1.3 needs antlr4-python3-runtime 4.9.*): built here as wheels too.
BUILT_HERE = ["antlr4-python3-runtime==4.9.3"]


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "image_packages.txt") -> tuple[set[str], dict[str, str]]:
    """(names on the image, {name: version} where a version was read there)."""
    names, pins = set(), {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        names.add(normalize(name))
        if version:
            pins[normalize(name)] = version
    return names, pins


def requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """prresq's dependencies + `gpu` + `bench` extras, without the packages that are not carried."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    reqs += project["optional-dependencies"]["bench"]
    return [r for r in reqs if normalize(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) not in NOT_CARRIED]


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_wheels(out: Path, deepspeed: str | None) -> list[Path]:
    """Pure-Python wheels of the sdist-only requirements (deepspeed with no ops compiled here)."""
    env = dict(os.environ, DS_BUILD_OPS="0")
    specs = [f"deepspeed=={deepspeed}" if deepspeed else "deepspeed", *BUILT_HERE]
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), *specs]
    print("$ DS_BUILD_OPS=0", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env=env)
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != len(specs) or any(not w.name.endswith("-py3-none-any.whl") for w in wheels):
        raise SystemExit(f"expected {len(specs)} pure-Python wheels in {out}, got {[w.name for w in wheels]}")
    return wheels


MARKER_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux"}
MARKER_ENV |= {"platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "extra": ""}
MARKER_ENV |= {"implementation_name": "cpython", "platform_python_implementation": "CPython"}


def requires(wheel: Path) -> list[Requirement]:
    """The wheel's unconditional requirements on CPython 3.12 / Linux x86-64 (extras left out)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    reqs = [
        Requirement(line.split(":", 1)[1].strip()) for line in text.splitlines() if line.startswith("Requires-Dist:")
    ]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(MARKER_ENV)]


def wheel_name(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return normalize(name), version


def closure(reqs: list[str], on_image: set[str], pins: dict[str, str], built: list[Path], out: Path) -> list[Path]:
    """Download (no deps) every requirement missing on the image, then theirs, breadth first.

    Requirements on packages the image has are checked against the version read there where one was;
    a mismatch stops with the requirement that does not fit.
    """
    local = {wheel_name(w)[0]: w for w in built}
    wanted: dict[str, SpecifierSet] = {}
    queue = [Requirement(r) for r in reqs]
    fetched: dict[str, Path] = {}
    conflicts = []
    while queue:
        req = queue.pop(0)
        name = normalize(req.name)
        if name in on_image:
            if name in pins and not req.specifier.contains(pins[name], prereleases=True):
                conflicts.append(f"{req} (image has {name}=={pins[name]})")
            continue
        wanted[name] = wanted.get(name, SpecifierSet()) & req.specifier
        if name in fetched:
            continue
        if name in local:
            wheel = out / local[name].name
            wheel.write_bytes(local[name].read_bytes())
        else:
            before = set(out.glob("*.whl"))
            pip("download", "--no-deps", "-q", *TARGET, "-d", str(out), f"{name}{wanted[name]}")
            new = sorted(set(out.glob("*.whl")) - before)
            if len(new) != 1:
                raise SystemExit(f"{name}{wanted[name]}: expected one new wheel, got {[w.name for w in new]}")
            wheel = new[0]
        fetched[name] = wheel
        queue += requires(wheel)
    for name, wheel in fetched.items():  # a later requirement may narrow what an earlier download chose
        if not wanted[name].contains(wheel_name(wheel)[1], prereleases=True):
            conflicts.append(f"{name}{wanted[name]} (downloaded {wheel.name})")
    if conflicts:
        raise SystemExit("requirements that do not fit:\n  " + "\n  ".join(conflicts))
    return sorted(fetched.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--deepspeed", default=None, help="deepspeed version (default: the newest)")
    args = parser.parse_args()

    on_image, pins = image_packages()
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.whl"):  # one version of each: two would stop the install there
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        built = build_wheels(Path(tmp), args.deepspeed)
        wheels = closure(requirements(), on_image, pins, built, args.out)
    tree = sum((ROOT / f).stat().st_size for f in _tracked_files())
    total = sum(w.stat().st_size for w in wheels)
    lines = [f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}" for w in wheels]
    lines.append(f"{total / 2**20:8.2f} MiB  wheels, {len(wheels)} files")
    lines.append(f"{tree / 2**20:8.2f} MiB  tracked working tree")
    lines.append(f"{(total + tree) / 2**20:8.2f} MiB  carried per call (limit {LIMIT_MIB:.0f} MiB)")
    (args.out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    if total + tree > LIMIT_MIB * 2**20:
        raise SystemExit(f"over the {LIMIT_MIB:.0f} MiB carry limit")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


if __name__ == "__main__":
    main()
