"""Issue 23, item 3: multi-file outputs are written as a unit (a VQ directory, a pretrained directory, a
checkpoint, a distillation's start), so a kill or a full disk leaves the old state or the new one, never a
mix; kill -9 at seeded random moments, then resume, ends bitwise equal to an uninterrupted run."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import checkpoint_state, equal, write_corpus
from PIL import Image

import partgm.images.vqvae as vqvae_module
import partgm.run.checkpoint as checkpoint_module
from partgm.cli import main
from partgm.fileio import atomic_write, unit_directory
from partgm.images.vqvae import load_vqvae
from partgm.run.layout import list_checkpoints
from partgm.run.lock import RunLock

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("uw"), n_docs=8, stride=5, words_per_doc=300, name="doc{i}.txt")


def train_args(corpus: Path, run: Path, *extra: str, resume: bool = False) -> list[str]:
    return ["train", *(["--resume"] if resume else []), "--algo", "pgm", "--preset", "cpu-tiny", "--run-dir", str(run), f"data.corpus={corpus}",
            "data.tokenizer=bpe-300", "data.length=16", f"data.cache_dir={corpus / 'cache'}", "train.steps=2",
            "train.global_batch=4", "train.save_every=2", "train.eval_every=0", "train.progress=false", *extra]


@pytest.fixture(scope="module")
def source(corpus, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("src") / "pgm"
    assert main(train_args(corpus, run)) == 0
    return run


DISTILL = ["distill.rounds=2", "distill.steps_per_round=2", "distill.initial_dt=0.125", "train.save_every=1",
           "train.keep_last=2", "train.eval_every=0", "train.global_batch=4", "train.progress=false"]


def distill_args(source: Path, out: Path, *extra: str) -> list[str]:
    return ["distill", str(source), "--run-dir", str(out), *DISTILL, *extra]


def no_temporaries(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(".*") if p.name != ".lock"]


# --- one directory as a unit -------------------------------------------------------------------------------


def test_unit_directory_keeps_the_old_state_or_none(tmp_path) -> None:
    old = tmp_path / "d"
    with unit_directory(old) as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), unit_directory(old) as tmp:  # fails half-way: nothing changes
        (tmp / "a").write_text("new")
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["d"] and (old / "a").read_text() == "old"
    with pytest.raises(RuntimeError), unit_directory(tmp_path / "new") as tmp:
        raise RuntimeError("full disk")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # before: an empty (or half) directory stayed
    with unit_directory(old) as tmp:
        (tmp / "b").write_text("new")
    assert sorted(p.name for p in old.iterdir()) == ["b"] and [p.name for p in tmp_path.iterdir()] == ["d"]


def flat_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


VQ = ["--size", "8", "--hidden", "4", "--codebook-size", "4", "--code-dim", "2"]


def test_vq_train_killed_between_config_and_weights_keeps_the_old_directory(tmp_path, monkeypatch, capsys) -> None:
    folder, out = flat_folder(tmp_path), tmp_path / "vq"
    assert main(["vq", "train", str(folder), "--out", str(out), "--steps", "1", *VQ]) == 0
    before = load_vqvae(out).state_dict()
    real = vqvae_module.atomic_write_bytes

    def dies_on_weights(path, data):
        if path.name == "model.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, data)

    monkeypatch.setattr(vqvae_module, "atomic_write_bytes", dies_on_weights)
    assert main(["vq", "train", str(folder), "--out", str(out), "--steps", "1", "--hidden", "6", *VQ[:2],
                 "--overwrite"]) == 2  # a wider model: before, its config stood beside the old weights
    assert "No space left on device" in capsys.readouterr().err
    assert equal(load_vqvae(out).state_dict(), before) and no_temporaries(tmp_path) == []
    assert main(["vq", "train", str(folder), "--out", str(tmp_path / "new"), "--steps", "1", *VQ]) == 2
    assert not (tmp_path / "new").exists()  # before: a config without weights


def test_hub_export_failing_leaves_no_directory(source, tmp_path, monkeypatch, capsys) -> None:
    from partgm.run import pretrained

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pretrained, "atomic_write_bytes", full)
    assert main(["hub", "export", str(source), str(tmp_path / "pre")]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # before: an empty directory stayed


# --- checkpoints -------------------------------------------------------------------------------------------


def test_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(corpus, tmp_path, monkeypatch, capsys) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run)) == 0
    kept = checkpoint_state(run)
    def no_space(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real = checkpoint_module.atomic_write_bytes

    def full(path, data):  # the disk fills up on the training state, after both weight files
        real(path, data) if path.name != "training_state.pt" else atomic_write(path, no_space)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", full)
    assert main(train_args(corpus, run, "train.steps=4", resume=True)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "No space left on device" in err[-1] and "Traceback" not in "\n".join(err)
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002"] and equal(checkpoint_state(run), kept)
    assert no_temporaries(run) == []  # before: a .tmp-step_* directory stayed


def test_full_tmpfs(corpus, tmp_path, capsys) -> None:
    """The same on a real full disk: a tmpfs just larger than the run (needs root to mount)."""
    run = tmp_path / "run"
    assert main(train_args(corpus, run)) == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in run.rglob("*") if p.is_file()) + 64 * 4096
    ckpt = sum(p.stat().st_size for p in list_checkpoints(run)[0].iterdir())
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size + ckpt // 2}", "tmpfs", str(mnt)],
                      capture_output=True, check=False).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        shutil.copytree(run, mnt / "run")
        kept = checkpoint_state(mnt / "run")
        assert main(train_args(corpus, mnt / "run", "train.steps=4", resume=True)) == 2
        assert "No space left on device" in capsys.readouterr().err.strip().splitlines()[-1]
        assert [p.name for p in list_checkpoints(mnt / "run")] == ["step_00000002"]
        assert equal(checkpoint_state(mnt / "run"), kept) and no_temporaries(mnt / "run") == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_pruning_killed_midway_leaves_whole_checkpoints(corpus, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    assert main(train_args(corpus, run, "train.save_every=1", "train.keep_last=1", "train.steps=1")) == 0
    real = checkpoint_module.shutil.rmtree

    def killed(path, *args, **kwargs):
        if Path(path).name.startswith(".trash-"):
            (Path(path) / "model.safetensors").unlink()  # half deleted when the kill comes
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", killed)
    assert main(train_args(corpus, run, "train.save_every=1", "train.keep_last=1", resume=True)) == 130
    # before: step_00000001 stayed as a checkpoint directory without its model.safetensors
    assert [p.name for p in list_checkpoints(run)] == ["step_00000002"]
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", real)
    assert main(train_args(corpus, run, "train.save_every=1", "train.keep_last=1", "train.steps=3", resume=True)) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003"] and no_temporaries(run) == []


# --- a distillation's start --------------------------------------------------------------------------------


def test_distill_killed_before_its_first_checkpoint_resumes_exactly(source, tmp_path, monkeypatch) -> None:
    full = tmp_path / "full"
    assert main(distill_args(source, full)) == 0
    reference = checkpoint_state(full)
    out = tmp_path / "out"
    real = checkpoint_module.save_checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # config.json and data.json are written; no checkpoint yet

    import partgm.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "save_checkpoint", killed)
    assert main(distill_args(source, out)) == 130
    assert (out / "config.json").is_file() and not list_checkpoints(out)
    monkeypatch.setattr(trainer_module, "save_checkpoint", real)
    assert main(distill_args(source, out, "--resume")) == 0
    # before: the resumed run drew a fresh random teacher (3.85 max abs from the source EMA) and ended elsewhere
    assert equal(checkpoint_state(out), reference)
    stuck = tmp_path / "stuck"
    RunLock(stuck).release()  # killed after its lock, before its config
    assert main(distill_args(source, stuck, "--resume")) == 0  # before: "holds no distillation run"
    assert equal(checkpoint_state(stuck), reference)


def test_two_processes_on_one_run_refuse_each_other(source, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    lock = RunLock(out)
    try:
        assert main(distill_args(source, out)) == 2
        assert "in use by another trainer" in capsys.readouterr().err
    finally:
        lock.release()


# --- kill -9 at seeded random moments, then resume ---------------------------------------------------------


def kill_at_random(argv: list[str], started: Path, seed: int, window: float) -> bool:
    """Run ``partgm argv`` in a process and SIGKILL it ``window * U(0, 1)`` seconds (seeded) after ``started``
    appears; returns whether it was killed (not finished first)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from partgm.cli import main; sys.exit(main())",
                             *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(window * random.Random(seed).random())
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.parametrize("seed", [1, 2])
def test_distill_killed_at_random_resumes_bitwise(source, tmp_path_factory, tmp_path, seed) -> None:
    full = tmp_path_factory.getbasetemp() / "distill-full"
    if not full.exists():
        assert main(distill_args(source, full)) == 0
    out = tmp_path / "out"
    kill_at_random(distill_args(source, out), out / ".lock", seed, 1.0)  # seldom after its end: still checked
    if not (list_checkpoints(out) and list_checkpoints(out)[-1].name == "step_00000004"):  # else: it had finished
        assert main(distill_args(source, out, "--resume")) == 0
    assert equal(checkpoint_state(out), checkpoint_state(full))


def images_args(run: Path, cache: Path, resume: bool = False) -> list[str]:
    return ["train", "--algo", "pgm-image", "--run-dir", str(run), *(["--resume"] if resume else []), *IMAGES,
            f"data.cache_dir={cache}"]


IMAGES = ["data.corpus=digits", "model.hidden_size=16", "model.n_heads=2",
          "model.cond_dim=16", "model.dropout=0.0", "model.n_encoder_blocks=1", "model.n_decoder_blocks=1",
          "train.steps=6", "train.global_batch=4", "train.eval_every=0", "train.save_every=1", "train.keep_last=2",
          "train.progress=false", "data.val_fraction=0.1"]


@pytest.mark.parametrize("seed", [3])
def test_image_training_killed_at_random_resumes_bitwise(tmp_path_factory, tmp_path, seed) -> None:
    cache = tmp_path_factory.getbasetemp() / "digits-cache"
    full = tmp_path_factory.getbasetemp() / "digits-full"
    if not full.exists():
        assert main(images_args(full, cache)) == 0
    run = tmp_path / "run"
    kill_at_random(images_args(run, cache), run / "config.json", seed, 1.0)  # seldom after its end: still checked
    if not (list_checkpoints(run) and list_checkpoints(run)[-1].name == "step_00000006"):  # else: it had finished
        assert main(images_args(run, cache, resume=True)) == 0
    assert equal(checkpoint_state(run), checkpoint_state(full))


@pytest.mark.parametrize("seed", [4, 5])
def test_vq_train_killed_at_random_leaves_old_or_new(tmp_path, seed) -> None:
    folder, out = flat_folder(tmp_path), tmp_path / "vq"
    assert main(["vq", "train", str(folder), "--out", str(out), "--steps", "1", *VQ]) == 0
    old = load_vqvae(out).state_dict()
    argv = ["vq", "train", str(folder), "--steps", "300", "--seed", "1", *VQ]
    assert main([*argv, "--out", str(tmp_path / "ref")]) == 0
    new = load_vqvae(tmp_path / "ref").state_dict()
    assert kill_at_random([*argv, "--out", str(out), "--overwrite"], folder, seed, 4.0)
    state = load_vqvae(out).state_dict()  # it loads: never a new config beside old weights
    assert equal(state, old) or equal(state, new)
    assert main([*argv, "--out", str(out), "--overwrite"]) == 0  # the rerun ends as an uninterrupted run
    assert equal(load_vqvae(out).state_dict(), new) and sorted(p.name for p in tmp_path.iterdir()) == [
        "flat", "ref", "vq"]
