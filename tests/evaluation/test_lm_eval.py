"""The lm-eval adapter on a local task (a task YAML over a local JSONL file, no download): its LAMBADA
accuracy equals ``partgm eval lambada`` on the same items, example by example, for PGM, MDLM and AR."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'partgm[lm-eval]')")

from lm_eval.api.instance import Instance
from tiny_runs import TASKS, make_run, out_bias

from partgm.api import Model
from partgm.cli import main
from partgm.data import load_tokenizer
from partgm.evaluation.zeroshot import encode_pair, evaluate_task, read_lambada

pytestmark = pytest.mark.usefixtures("one_thread")
LAMBADA = TASKS / "lambada_kjv.jsonl"
TASK = "partgm_lambada_local"


def task_dir(root: Path) -> Path:
    """lm-eval's lambada_openai task over the local file (same prompt, target and metrics)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "lambada_local.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {LAMBADA}
  cache_dir: {root / "hf-cache"}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return root


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    texts = [json.loads(line)["text"] for line in LAMBADA.read_text().splitlines()]
    return load_tokenizer("bpe-300", data_dir=tmp_path_factory.mktemp("bpe"), corpus_texts=texts * 3)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir(tmp_path_factory.mktemp("tasks"))), include_defaults=False)


def favourite_bias(algo: str, tok) -> object:
    """Logits that make the most common one-token target the argmax everywhere: some examples right."""
    targets = [encode_pair(tok, e.context, e.continuations[0])[1] for e in read_lambada(LAMBADA)]
    (word, _), = Counter(tok.decode(t) for t in targets if len(t) == 1).most_common(1)
    return out_bias(algo, tok, {word: 5.0})


@pytest.mark.parametrize("algo", ["pgm", "mdlm", "ar"])
def test_lambada_accuracy_equals_partgm_eval(tmp_path: Path, tok, tasks, algo: str) -> None:
    import partgm.integrations.lm_eval  # noqa: F401  (registers "partgm")

    run = tmp_path / algo
    make_run(run, algo, tok, length=96, bias=favourite_bias(algo, tok))
    ours = evaluate_task("lambada", run, LAMBADA)
    out = lm_eval.simple_evaluate(model="partgm", model_args=f"run={run},mc_samples=2", tasks=[TASK],
                                  task_manager=tasks, batch_size=4, log_samples=True)
    assert ours["correct"] >= 1
    assert out["results"][TASK]["acc,none"] == pytest.approx(ours["accuracy"])
    theirs = sorted(out["samples"][TASK], key=lambda s: s["doc_id"])
    predictions = [json.loads(line) for line in Path(ours["predictions_file"]).read_text().splitlines()]
    assert [bool(s["acc"]) for s in theirs] == [p["correct"] for p in predictions]


def test_cli_line_rolling_and_generation(tmp_path: Path, tok, monkeypatch) -> None:
    import lm_eval.tasks

    from partgm.integrations.lm_eval import PartgmLM

    class LocalTasksOnly(lm_eval.tasks.TaskManager):  # skips indexing lm-eval's thousands of built-in tasks
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "include_defaults": False})

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", LocalTasksOnly)

    run = tmp_path / "ar"
    make_run(run, "ar", tok, length=24, bias=favourite_bias("ar", tok))
    args = ["lm-eval", "--model", "partgm", "--model_args", f"run={run}", "--tasks", TASK, "--include_path",
            str(task_dir(tmp_path / "tasks")), "--output_path", str(tmp_path / "out"), "--limit", "3"]
    assert main(args) == 0
    (result,) = (tmp_path / "out").rglob("results_*.json")
    assert json.loads(result.read_text())["results"][TASK]["acc,none"] >= 0.0

    lm, model = PartgmLM(run=str(run), mc_samples=2), Model.load(run)
    short, long = "In the beginning God created", " ".join(json.loads(x)["text"] for x in LAMBADA.read_text().splitlines())
    assert len(tok.encode(long)) > 3 * model.length
    rolled = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), 0) for t in (short, long)])
    assert rolled[0] == pytest.approx(-model.score(short)[0])  # AR: one window, exact
    assert rolled[1] < rolled[0] < 0
    (text,) = lm.generate_until([Instance("generate_until", {}, (short, {"until": ["\n"], "max_gen_toks": 5}), 0)])
    assert isinstance(text, str) and "\n" not in text
