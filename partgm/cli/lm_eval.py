"""``partgm lm-eval ARGS``: lm-eval's own command line with the ``partgm`` model registered; each task's
results are also written to ``RUN/eval/lm-eval/TASK.json`` (RUN: ``--model_args run=RUN``, a local run)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError


def _option(argv: list[str], name: str) -> str | None:
    """The value of lm-eval's option ``name`` (``--name X`` or ``--name=X``), or None."""
    for k, item in enumerate(argv):
        if item == name and k + 1 < len(argv):
            return argv[k + 1]
        if item.startswith(name + "="):
            return item.partition("=")[2]
    return None


def _model_args(argv: list[str]) -> dict[str, str]:
    pairs = (pair.partition("=") for pair in (_option(argv, "--model_args") or "").split(","))
    return {key.strip(): value.strip() for key, _, value in pairs if key.strip()}


def _model_run(argv: list[str]) -> Path | None:
    """The local directory named by ``run=`` in ``--model_args``."""
    path = _model_args(argv).get("run")
    return Path(path) if path and Path(path).is_dir() else None


def check_args(argv: list[str]) -> None:
    """What partgm can check before lm-eval starts: ``--model partgm`` has ``--model_args run=...``, its
    booleans are booleans, and ``--output_path`` can be written."""
    import tempfile

    from partgm.integrations import model_arg_bool

    if _option(argv, "--model") == "partgm":
        model_args = _model_args(argv)
        if not model_args.get("run"):
            raise PartgmError("--model partgm needs --model_args run=RUN_DIR (a run directory, a pretrained "
                              "directory or a Hub id)")
        if "truncate" in model_args:
            model_arg_bool("truncate", model_args["truncate"])
    output = _option(argv, "--output_path")
    if output:
        where = Path(output) if Path(output).is_dir() or not Path(output).suffix else Path(output).parent
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            with tempfile.TemporaryFile(dir=where):
                pass
        except OSError as exc:
            raise PartgmError(f"--output_path '{output}' cannot be written ({exc.strerror or exc}): "
                              "give a writable directory") from None


def _patched(name: str, make) -> list[tuple[Any, str, Any]]:
    """Replace the function ``name`` in every loaded ``lm_eval`` module that holds it by ``make(old)``;
    returns (module, name, old) to put back."""
    saved = []
    for module_name, module in list(sys.modules.items()):
        if (module_name == "lm_eval" or module_name.startswith("lm_eval.")) and callable(getattr(module, name, None)):
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, make(getattr(module, name)))
    return saved


def write_results(run_dir: Path, results: dict[str, Any]) -> list[Path]:
    """``RUN/eval/lm-eval/TASK.json`` for each task of an lm-eval results dict: the task's metrics with the
    shared configuration (model args, versions, n-shot, sample counts). A rerun replaces the file."""
    from partgm.fileio import atomic_write_text
    from partgm.run.layout import EVAL, LM_EVAL

    paths = []
    for task, metrics in (results.get("results") or {}).items():
        path = Path(run_dir) / EVAL / LM_EVAL / f"{task.replace('/', '_')}.json"
        per_task = {k: results[k].get(task) for k in ("versions", "n-shot", "n-samples")
                    if isinstance(results.get(k), dict)}
        record = {"task": task, "metrics": metrics, **per_task, "config": results.get("config"),
                  "date": results.get("date")}
        atomic_write_text(path, json.dumps(record, indent=2, default=str))
        paths.append(path)
    return paths


def run_lm_eval(argv: list[str]) -> list[Path]:
    """Run lm-eval's command line on ``argv`` with git's commit lookup silenced (lm-eval asks git for a
    commit hash, and git prints ``fatal: not a git repository`` outside one) and its results captured;
    returns the ``RUN/eval/lm-eval/TASK.json`` files written (none when ``run=`` is not a local directory)."""
    check_args(argv)
    from importlib.util import find_spec

    from partgm.integrations.offline import go_offline_if_unreachable

    installed = "lm_eval" in sys.modules or find_spec("lm_eval") is not None
    if installed and not {"-h", "--help"} & set(argv):
        go_offline_if_unreachable()  # before lm-eval imports `datasets`, which reads the offline flags once
    try:
        from partgm.integrations.lm_eval import main
    except ImportError as exc:
        raise PartgmError(str(exc)) from None
    for name in ("lm_eval.evaluator", "lm_eval.__main__"):  # loaded now, so that their names are patched
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    captured: list[dict] = []

    def capturing(evaluate):
        def wrapper(*args, **kwargs):
            results = evaluate(*args, **kwargs)
            if isinstance(results, dict):
                captured.append(results)
            return results
        return wrapper

    saved = _patched("get_git_commit_hash", lambda old: lambda *a, **k: None)
    saved += _patched("simple_evaluate", capturing)
    try:
        main(argv)
    except (KeyError, ValueError) as exc:  # an unknown task or model argument, as lm-eval reports it
        raise PartgmError(f"lm-eval: {str(exc).strip(chr(39))}: `lm-eval --tasks list` names the tasks") from None
    finally:
        for module, name, old in saved:
            setattr(module, name, old)
    run_dir = _model_run(argv)
    paths = [p for results in captured for p in write_results(run_dir, results)] if run_dir else []
    for path in paths:
        print(f"wrote {path}")
    return paths


def cmd_lm_eval(args: argparse.Namespace) -> None:
    run_lm_eval(args.lm_eval_args)


def add(sub: argparse._SubParsersAction) -> None:
    """Adds ``partgm lm-eval``; every argument goes to lm-eval unchanged (``partgm lm-eval --help``)."""
    p = sub.add_parser(
        "lm-eval",
        help="EleutherAI lm-evaluation-harness with the partgm model: partgm lm-eval --model partgm "
        "--model_args run=RUN_DIR --tasks ... (needs: pip install 'partgm[lm-eval]'); results also in "
        "RUN_DIR/eval/lm-eval/TASK.json",
        add_help=False,
        prefix_chars="+",  # so that every --option reaches lm-eval
    )
    p.add_argument("lm_eval_args", nargs="*")
    p.set_defaults(func=cmd_lm_eval)
