"""Installing an extra keeps the user's torch: the CI check's logic (.ci/check_extras.py), offline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("check_extras", ROOT / ".ci" / "check_extras.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _report(*packages: tuple[str, str]) -> dict:
    return {"install": [{"metadata": {"name": n, "version": v}} for n, v in packages]}


def test_a_report_that_replaces_torch_is_caught():
    assert check.torch_change(_report(("torchvision", "0.29.1"), ("torch", "2.14.1")), "2.13.0+cpu") == "2.14.1"
    assert check.torch_change(_report(("torch", "2.13.0")), "2.13.0+cpu") is None  # same version, other tag
    assert check.torch_change(_report(("partgm", "0.1.0")), "2.13.0+cpu") is None


def test_only_the_fid_extra_needs_torchvision():
    names = check.extras()
    assert {"images", "fid", "test", "lm-eval"} <= set(names)
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    for line in section.splitlines():
        if not line.startswith("#") and any(heavy in line for heavy in ("torch-fidelity", "torchvision")):
            assert line.startswith("fid ="), line
    assert check.PINNED == {"fid"}
