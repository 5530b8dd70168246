"""SDTT through the training engine: targets from a hand-computed 2-step teacher, the loss, exact resume at
and between round boundaries, and distilled rounds that load and sample as plain runs (API and CLI)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import checkpoint_state, equal, write_corpus

from partgm.algorithms import Batch, TokenSpace
from partgm.algorithms.mdlm import MDLMAlgorithm
from partgm.algorithms.pgm import PGMAlgorithm
from partgm.cli import main
from partgm.config import DistillConfig, to_dict
from partgm.distill.algorithm import SDTTAlgorithm, round_dir
from partgm.distill.run import distill_run
from partgm.engine.ema import EMA
from partgm.errors import PartgmError
from partgm.models.config import DiTConfig, PartitionConfig
from partgm.models.init import randomize_
from partgm.resolve import config_from_dict, resolve_config
from partgm.run.checkpoint import load_run
from partgm.run.sampling import Draws, sample_run
from partgm.samplers import SamplingOptions
from partgm.samplers.common import sample_tokens

pytestmark = pytest.mark.usefixtures("one_thread")

N, L = 11, 8
TINY = {"hidden_size": 16, "n_heads": 2, "cond_dim": 8, "dropout": 0.0}


def tiny(algo_cls):
    space = TokenSpace(vocab_size=N, length=L, bos_id=0)
    algorithm = algo_cls(space)
    cfg = DiTConfig(n_blocks=1, **TINY) if algo_cls is MDLMAlgorithm else PartitionConfig(
        n_encoder_blocks=1, n_decoder_blocks=1, **TINY)
    student = randomize_(algorithm.build_model(cfg), std=0.5, seed=1).eval()
    teacher = randomize_(algorithm.build_model(cfg), std=0.5, seed=2).eval()
    return algorithm, student, teacher


def hand_logp(algorithm, model, tokens, clean):
    """The denoiser written out: MDLM masks and drops the mask column; PGM runs groups = not clean."""
    if isinstance(algorithm, MDLMAlgorithm):
        z = torch.where(clean, tokens, algorithm.mask_id)
        return model(z)[..., :N].log_softmax(-1)
    return model(torch.where(clean, tokens, 0), (~clean).long()).log_softmax(-1)


@pytest.mark.parametrize("algo_cls", [MDLMAlgorithm, PGMAlgorithm])
def test_two_step_teacher_and_loss_by_hand(algo_cls):
    algorithm, student, teacher = tiny(algo_cls)
    sdtt = SDTTAlgorithm(algorithm, DistillConfig(initial_dt=0.25), copy.deepcopy(teacher))
    x = torch.randint(1, N, (6, L), generator=torch.Generator().manual_seed(0))
    t = torch.full((6,), 0.6)
    loss = sdtt.training_loss(student, Batch(x), t, torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    alpha = algorithm.schedule.alpha
    masked = torch.rand(x.shape, generator=g) < (1 - alpha(t))[:, None]
    z = x.masked_fill(masked, 0)
    with torch.no_grad():
        logp0 = hand_logp(algorithm, teacher, z, ~masked)
        p = (alpha(t.double() - 0.25) - alpha(t.double())) / (1 - alpha(t.double()))  # [B], ~0.42
        now = masked & (torch.rand(x.shape, generator=g, dtype=torch.float64) < p[:, None])
        tokens = z.masked_scatter(now, sample_tokens(logp0[now], 1.0, g))
        logp1 = hand_logp(algorithm, teacher, tokens, ~(masked & ~now))
    assert 0 < int(now.sum()) < int(masked.sum())  # both kinds of targets occur
    expected = torch.where(now[..., None], logp0, logp1)
    g2 = torch.Generator().manual_seed(3)
    torch.rand(x.shape, generator=g2)  # the mask draw of training_loss: the teacher's draws come after it
    targets = sdtt.targets(Batch(x), masked, t, g2)
    assert torch.allclose(targets[masked], expected[masked], atol=1e-6)

    student_logp = hand_logp(algorithm, student, z, ~masked)[masked]
    kl = (student_logp.exp() * (student_logp - expected[masked])).sum(-1)  # KL(student || teacher)
    assert torch.allclose(loss, kl.mean(), atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in sdtt.teacher.parameters())


def test_pgm_training_path_matches_packed_denoiser():
    algorithm, student, _ = tiny(PGMAlgorithm)
    x = torch.randint(1, N, (3, L), generator=torch.Generator().manual_seed(0))
    clean = torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    with torch.no_grad():
        training = algorithm.denoise_logprobs(student, x, clean)
        packed = super(PGMAlgorithm, algorithm).denoise_logprobs(student, x, clean)
    assert torch.allclose(training[~clean], packed[~clean], atol=1e-5)


@pytest.mark.parametrize("teacher_weights,swap", [("raw", False), ("ema", False), ("raw", True)])
def test_round_switch_copies_the_chosen_weights(teacher_weights, swap):
    algorithm, student, teacher = tiny(MDLMAlgorithm)
    config = DistillConfig(steps_per_round=2, teacher_weights=teacher_weights, swap_ema_on_round=swap)
    sdtt = SDTTAlgorithm(algorithm, config, copy.deepcopy(teacher))
    ema = EMA(student, 0.5)
    randomize_(student, seed=5)
    raw = copy.deepcopy(student.state_dict())
    trainer = SimpleNamespace(model=student, ema=ema, dist=SimpleNamespace(is_main=False))
    sdtt.after_optimizer_step(trainer, 1)
    assert sdtt.rounds.round == 0 and equal(sdtt.teacher.state_dict(), teacher.state_dict())
    sdtt.after_optimizer_step(trainer, 2)
    expected = ema.model_state_dict(student) if teacher_weights == "ema" or swap else raw
    assert sdtt.rounds.round == 1 and sdtt.rounds.dt == 2 / 1024
    assert equal(sdtt.teacher.state_dict(), expected) and equal(student.state_dict(), expected if swap else raw)


def test_swap_resets_the_ema_and_dt_grows_by_the_teacher_steps():
    algorithm, student, teacher = tiny(MDLMAlgorithm)
    sdtt = SDTTAlgorithm(algorithm, DistillConfig(steps_per_round=2, teacher_steps=3, swap_ema_on_round=True),
                         copy.deepcopy(teacher))
    ema = EMA(student, 0.5)
    for _ in range(3):
        ema.update(student)
    randomize_(student, seed=5)
    trainer = SimpleNamespace(model=student, ema=ema, dist=SimpleNamespace(is_main=False))
    sdtt.after_optimizer_step(trainer, 2)
    assert sdtt.rounds.dt == 3 / 1024  # initial_dt * k**round, the reference's growth
    assert ema.num_updates == 0 and equal(ema.model_state_dict(student), student.state_dict())


def test_start_weights_raw_inits_teacher_and_student_from_raw(tmp_path):
    from partgm.distill.run import distill_config

    run = tmp_path / "src"
    cfg = resolve_config(overrides=["algo=mdlm", "preset=cpu-tiny"])
    run.mkdir()
    (run / "config.json").write_text(json.dumps(to_dict(cfg)))
    assert distill_config(run, tmp_path / "out", [], False).train.init_weights == "ema"
    assert distill_config(run, tmp_path / "out", ["distill.start_weights=raw"], False).train.init_weights == "raw"


def test_distill_section_only_in_distill_runs_and_validated():
    plain = resolve_config(overrides=["algo=mdlm"])
    assert plain.distill is None and "distill" not in to_dict(plain) and config_from_dict(to_dict(plain)).distill is None
    assert resolve_config(overrides=["algo=mdlm"], distill=True).distill == DistillConfig()
    # run directories written before: every run held a distill section (and a sample section, now retired)
    older = {**to_dict(plain), "distill": to_dict(DistillConfig(rounds=3)), "sample": {"steps": 128}}
    assert config_from_dict(older).distill == DistillConfig(rounds=3)
    with pytest.raises(PartgmError, match="distill.rounds"):
        resolve_config(overrides=["distill.rounds=2"])  # not a distillation run
    for bad in ("distill.rounds=0", "distill.initial_dt=0", "distill.divergence=kl", "distill.teacher_steps=0",
                "distill.teacher_steps=1", "distill.start_weights=best"):
        with pytest.raises(PartgmError, match=bad.split("=")[0]):
            resolve_config(overrides=[bad], distill=True)


# --- end to end: a tiny source run, the CLI, exact resume ------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = write_corpus(tmp_path_factory.mktemp("sdtt"), n_docs=8, stride=5, words_per_doc=300, name="doc{i}.txt")
    run_dir = root / "pgm"
    assert main(["train", "--algo", "pgm", "--preset", "cpu-tiny", "--run-dir", str(run_dir), f"data.corpus={root}",
                 "data.tokenizer=bpe-300", "data.length=16", f"data.cache_dir={root / 'cache'}", "train.steps=2",
                 "train.global_batch=4", "train.save_every=2", "train.eval_every=2", "train.progress=false"]) == 0
    return run_dir


OVERRIDES = ["distill.steps_per_round=2", "distill.initial_dt=0.125", "train.save_every=1", "train.keep_last=0",
             "train.eval_every=0", "train.ema_decay=0.9", "train.global_batch=4", "train.progress=false"]


def test_exact_resume_at_and_between_round_boundaries(source, tmp_path):
    full = tmp_path / "full"
    distill_run(source, full, ["distill.rounds=3", *OVERRIDES])
    reference = checkpoint_state(full)
    assert reference["algorithm"]["rounds"]["round"] == 3 and reference["step"] == 6
    teacher = reference["algorithm"]["teacher"]
    assert equal(teacher, checkpoint_state(full)["model"])  # the last round switch copied the raw student
    for stop in (2, 3):  # at the end of round 1; in the middle of round 2
        split = tmp_path / f"split{stop}"
        shutil.copytree(full, split)
        for later in range(stop + 1, 7):  # as if the run had died right after saving step `stop`
            shutil.rmtree(split / "checkpoints" / f"step_{later:08d}")
        for done in range(stop // 2 + 1, 4):
            shutil.rmtree(round_dir(split, done))
        (split / "checkpoints" / "latest").write_text(f"step_{stop:08d}\n")
        distill_run(source, split, ["distill.rounds=3", *OVERRIDES], resume=True)
        assert equal(checkpoint_state(split), reference), stop
        for done in (1, 2, 3):
            a, b = (load_run(round_dir(run, done), weights="raw").model.state_dict() for run in (full, split))
            assert equal(a, b)


def test_rounds_load_and_sample_like_plain_runs(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["distill", str(source), "--run-dir", str(out), "distill.rounds=2", *OVERRIDES]) == 0
    round_1 = round_dir(out, 1)
    meta = json.loads((round_1 / "distill.json").read_text())
    assert meta["round"] == 1 and meta["student_steps"] == 4 and meta["teacher_steps"] == 2
    run = load_run(round_1)
    assert type(run.algorithm) is PGMAlgorithm and run.step == 2
    records = sample_run(round_1, Draws(SamplingOptions(steps=4), num_samples=2, batch=2))
    assert len(records) == 2 and all(len(r["token_ids"]) == 16 for r in records)
    assert main(["sample", str(round_dir(out, 2)), "--steps", "4", "--num-samples", "2", "--batch", "2",
                 "--out", str(tmp_path / "s.jsonl")]) == 0
    assert main(["eval", "ppl", str(round_1), "--batch", "4", "--max-batches", "1"]) == 0
    assert main(["hub", "export", str(round_1), str(tmp_path / "export")]) == 0
    capsys.readouterr()
    # Errors are one line: a non-empty run directory without --resume; another algorithm than the teacher's.
    assert main(["distill", str(source), "--run-dir", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(PartgmError):
        distill_run(source, tmp_path / "other", ["algo=mdlm"])
