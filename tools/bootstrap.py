#!/usr/bin/env python3
"""Create or refresh the project's virtual environment (used by `make test` / `make demo`).

Standard library only, so it runs on a bare machine with nothing but Python 3.10+.

Steps, each skipped when already satisfied:
1. create ``.venv`` (with ``--system-site-packages`` when the base interpreter already has
   torch, so a user's CUDA torch is kept instead of being replaced);
2. install torch when the venv has none: on a machine with an NVIDIA driver, the default
   (CUDA) build; otherwise the CPU build ``torch==$FASTSAE_TORCH_VERSION`` (2.13.0). Before
   installing on a CPU machine, ``pip install --dry-run --report`` checks which wheel pip
   would take and refuses a CUDA build (multi-GB) -- set ``FASTSAE_TORCH_INDEX`` (e.g.
   https://download.pytorch.org/whl/cpu) where the CPU wheel is not on a local find-links;
3. install triton when torch did not bring it (CPU builds): ``triton==3.7.1``;
4. install the build backend and the package with its test extras (non-editable: the tests
   exercise exactly what a user's ``pip install`` gets; the CMake build folder under
   ``build/`` is reused, so a refresh recompiles only what changed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_VERSION = os.environ.get("FASTSAE_TORCH_VERSION", "2.13.0")


def log(msg: str) -> None:
    print(f"[bootstrap] {msg}", flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    log(" ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def python_has(python: str, module: str) -> bool:
    code = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def venv_python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def pip(venv: Path, *args: str) -> None:
    run([venv_python(venv), "-m", "pip", *args])


def torch_wheel_pip_would_take(venv: Path, extra: list[str]) -> str:
    """The file name of the torch wheel pip would install (dry run, nothing downloaded but metadata)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run([venv_python(venv), "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps",
             "--report", str(report), f"torch=={TORCH_VERSION}", *extra])
        data = json.loads(report.read_text())
    for item in data.get("install", []):
        if item.get("metadata", {}).get("name", "").lower() == "torch":
            return item.get("download_info", {}).get("url", "")
    return ""


def install_torch(venv: Path) -> None:
    if has_nvidia_gpu():
        log("NVIDIA GPU found: installing the default (CUDA) torch build")
        pip(venv, "install", "torch")
        return
    extra: list[str] = []
    if os.environ.get("FASTSAE_TORCH_INDEX"):
        extra = ["--extra-index-url", os.environ["FASTSAE_TORCH_INDEX"]]
    url = torch_wheel_pip_would_take(venv, extra)
    name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
    log(f"torch wheel pip would take: {name or url or '?'}")
    cpu_ok = "+cpu" in name or sys.platform == "darwin" or "macosx" in name
    if not cpu_ok:
        sys.exit(
            "[bootstrap] refusing to install a CUDA build of torch on a machine without a GPU "
            f"(pip would take {name or url!r}). Set FASTSAE_TORCH_INDEX="
            "https://download.pytorch.org/whl/cpu or pre-install a CPU torch into .venv."
        )
    pip(venv, "install", f"torch=={TORCH_VERSION}", *extra)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", default=str(ROOT / ".venv"))
    ap.add_argument("--stamp", default=None, help="file touched on success")
    args = ap.parse_args()
    venv = Path(args.venv)

    if not Path(venv_python(venv)).exists():
        cmd = [sys.executable, "-m", "venv", str(venv)]
        if python_has(sys.executable, "torch"):
            log("base interpreter has torch: keeping it (venv sees system site-packages)")
            cmd.append("--system-site-packages")
        run(cmd)
    py = venv_python(venv)
    if not python_has(py, "torch"):
        install_torch(venv)
    else:
        log("torch already present: kept")
    if sys.platform.startswith("linux") and not python_has(py, "triton"):
        # CUDA builds of torch bring their own triton; the CPU build does not. 3.7.1 is the
        # release torch 2.13's CUDA build pairs with (the kernels run under its interpreter
        # in the tests and compile ahead of time for sm_80/sm_90).
        pip(venv, "install", "--quiet", os.environ.get("FASTSAE_TRITON_SPEC", "triton==3.7.1"))
    pip(venv, "install", "--quiet", "scikit-build-core>=0.10", "nanobind>=2.2")
    pip(venv, "install", "--quiet", "--no-build-isolation", f"{ROOT}[test]")
    if args.stamp:
        Path(args.stamp).touch()
    log("environment ready: " + py)


if __name__ == "__main__":
    main()
