"""lm-eval offline: a standard task fails at once with the local-task route (lm-eval mocked: it is not in
the test environment)."""

from __future__ import annotations

import socket
import sys
import time
import types

import pytest

from partgm.cli import main
from partgm.integrations import offline

FLAGS = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@pytest.fixture
def fake_lm_eval(monkeypatch):
    """Just enough of lm-eval for partgm.integrations.lm_eval to import; ``calls`` records what the harness
    saw, and its cli_evaluate fails as `datasets` does offline for a data set missing from the cache."""
    calls = []

    def cli_evaluate():
        calls.append({flag: __import__("os").environ.get(flag) for flag in FLAGS})
        if sys.modules["datasets.config"].HF_DATASETS_OFFLINE:
            raise ConnectionError("Couldn't reach 'EleutherAI/lambada_openai' on the Hub (offline mode is enabled)")
        raise RuntimeError("the harness ran")

    modules = {
        "lm_eval": types.ModuleType("lm_eval"), "lm_eval.models": types.ModuleType("lm_eval.models"),
        "lm_eval.api": types.ModuleType("lm_eval.api"),
        "lm_eval.api.model": types.SimpleNamespace(LM=object),
        "lm_eval.api.registry": types.SimpleNamespace(register_model=lambda name: lambda cls: cls),
        "lm_eval.utils": types.SimpleNamespace(get_rolling_token_windows=None, make_disjoint_window=None),
        "lm_eval.__main__": types.SimpleNamespace(cli_evaluate=cli_evaluate),
        "datasets.config": types.SimpleNamespace(HF_DATASETS_OFFLINE=False, HF_HUB_OFFLINE=False),
        "huggingface_hub.constants": types.SimpleNamespace(HF_HUB_OFFLINE=False),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "partgm.integrations.lm_eval", raising=False)
    for flag in FLAGS:
        monkeypatch.setenv(flag, "")  # unset for offline_reason, restored afterwards
    monkeypatch.setitem(offline._decided, "reason", None)
    return calls


def _no_network(*args, **kwargs):
    raise OSError(101, "Network is unreachable")


def test_standard_task_offline_fails_at_once_with_the_local_route(fake_lm_eval, monkeypatch, capsys):
    monkeypatch.setattr(socket, "create_connection", _no_network)
    start = time.perf_counter()
    assert main(["lm-eval", "--model", "partgm", "--model_args", "run=x", "--tasks", "lambada_openai"]) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "not available offline" in err and "--include_path" in err and "huggingface.co cannot be reached" in err
    assert fake_lm_eval == [{flag: "1" for flag in FLAGS}]  # lm-eval ran in offline mode: no Hub retries


def test_online_runs_unchanged_and_flags_are_read(fake_lm_eval, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    assert offline.offline_reason() is None
    with pytest.raises(RuntimeError, match="the harness ran"):
        main(["lm-eval", "--model", "partgm", "--model_args", "run=x", "--tasks", "lambada_openai"])
    assert fake_lm_eval == [{flag: "" for flag in FLAGS}]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline.offline_reason() == "HF_HUB_OFFLINE is set"
    assert offline.offline_error(ValueError("unrelated"), "x") is None
    assert offline.offline_error(PermissionError(13, "Permission denied"), "x") is None
    missing = type("DatasetNotFoundError", (FileNotFoundError,), {})("Dataset 'x' doesn't exist on the Hub")
    assert "--include_path" in str(offline.offline_error(missing, "x"))
