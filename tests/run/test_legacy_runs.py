"""Run directories written before the architecture step still load, sample and evaluate, and give the
same tokens and validation NELBO as the code that wrote them (tests/fixtures/legacy/expected.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import sample

from partgm.cli import main
from partgm.data import PreparedData
from partgm.engine import evaluate_ppl
from partgm.run.checkpoint import load_run
from partgm.samplers import make_prompt

pytestmark = pytest.mark.usefixtures("one_thread")
LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.mark.parametrize("algo", ["pgm", "mdlm", "ar"])
def test_legacy_run_samples_and_nelbo_unchanged(algo: str) -> None:
    run = load_run(LEGACY / algo, weights="ema")
    for key, expected in EXPECTED[algo]["samples"].items():
        sampler, nucleus = key.rsplit("-", 1)
        prompt = make_prompt(3, 32, run.algorithm.bos_id, [5, 7], {20: 9} if algo != "ar" else None)
        ids = sample(run.algorithm, run.model, 3, 32, 8, sampler, float(nucleus), torch.Generator().manual_seed(123),
                     prompt)
        assert ids.tolist() == expected, key
    data = PreparedData.load(LEGACY / "data")
    nelbo = evaluate_ppl(run.algorithm, run.model, data.val, 8, "cpu", seed=0)["nelbo"]
    assert nelbo == pytest.approx(EXPECTED[algo]["val_nelbo"], rel=1e-6)


def test_legacy_run_through_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s.jsonl"
    assert main(["sample", str(LEGACY / "pgm"), "--steps", "4", "--num-samples", "2", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2
    run_copy = tmp_path / "run"
    import shutil

    shutil.copytree(LEGACY / "mdlm", run_copy)
    assert main(["eval", "ppl", str(run_copy), "--data", str(LEGACY / "data"), "--batch", "8"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tokens"] == 928
