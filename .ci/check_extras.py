"""CI: installing any extra of partgm keeps the environment's torch (issue 24).

For every extra in pyproject.toml, ``pip install --dry-run --report -`` resolves ``-e .[extra]`` against the
current environment without installing anything; the check fails when the resolution would install a torch
other than the one installed. ``fid`` is resolved the way docs/install.md says to install it (with the
installed torch pinned), since torch-fidelity's torchvision otherwise pins the newest torch. Registry access
is needed; offline (no index reachable) it says so and exits 0.

    python .ci/check_extras.py [EXTRA ...]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINNED = {"fid"}  # installed with the user's torch pinned (docs/install.md)
_OFFLINE = ("NewConnectionError", "Name or service not known", "Network is unreachable", "Temporary failure")


def extras(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The names of ``[project.optional-dependencies]``."""
    text = pyproject.read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, flags=re.MULTILINE)


def torch_change(report: dict, installed: str) -> str | None:
    """The torch version a pip ``--report`` would install instead of ``installed`` (local tags such as +cpu
    ignored), or None when torch is kept."""
    base = installed.split("+")[0]
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        if meta.get("name", "").lower() == "torch" and meta.get("version", "").split("+")[0] != base:
            return meta["version"]
    return None


def resolve(extra: str, installed: str) -> dict | None:
    """pip's dry-run report for ``-e .[extra]`` (None when no index is reachable)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "-e", f".[{extra}]"]
    if extra in PINNED:
        command.append(f"torch=={installed.split('+')[0]}")
    done = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        if any(marker in done.stderr for marker in _OFFLINE):
            return None
        raise SystemExit(f"pip could not resolve .[{extra}]:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(names: list[str]) -> int:
    import torch

    installed, failed = torch.__version__, []
    for extra in names or extras():
        report = resolve(extra, installed)
        if report is None:
            print(f"skipped: no package index reachable (resolving .[{extra}])")
            return 0
        changed = torch_change(report, installed)
        print(f".[{extra}]: torch {installed} " + (f"REPLACED by {changed}" if changed else "kept"))
        if changed:
            failed.append(extra)
    if failed:
        print(f"extras that replace torch: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
