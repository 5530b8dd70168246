"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
import safetensors.torch
import torch

from partgm.samplers import SamplingOptions, generate, make_prompt

GENESIS = ("and the lord said unto moses in the beginning god created the heaven and the earth "
           "and the earth was without form and void and darkness was upon the face of the deep")


def write_corpus(root, n_docs: int, stride: int, words_per_doc: int = 400, text: str = GENESIS,
                 name: str = "doc{i:02d}.txt"):
    """``n_docs`` text files in ``root``: document i is ``words_per_doc`` words of ``text`` read cyclically
    from word ``i * stride``. Returns ``root``."""
    words = text.split()
    for i in range(n_docs):
        (root / name.format(i=i)).write_text(" ".join(words[(i * stride + j) % len(words)] for j in range(words_per_doc)))
    return root


def sample(algorithm, model, n: int, length: int, steps: int, sampler: str = "auto", nucleus: float = 1.0,
           generator: torch.Generator | None = None, prompt=None) -> torch.Tensor:
    """``generate`` with a BOS-only prompt by default: [n, length] token ids."""
    prompt = prompt if prompt is not None else make_prompt(n, length, algorithm.bos_id)
    return generate(algorithm, model, prompt, SamplingOptions(steps=steps, nucleus=nucleus), sampler, generator)


needs_gloo = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="needs torch.distributed with gloo",
)


GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def run_torchrun(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 script args`` on this machine (gloo, one thread a process); fails the
    test with the workers' stderr when they fail.

    One retry, on a fresh port and with the output directories (``args`` that are directories) emptied,
    when a worker died of gloo's C++ abort with no Python error (seen about once in 20 runs of the FSDP
    worker with torch 2.13, after every training step and check had passed): the outputs are checked by
    the test afterwards, so a retry cannot hide a wrong result, only that abort."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))  # the workers import helpers and toy_algorithm
    path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH", "")) if p)
    for attempt in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={port}", script, *args]
        proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path},
                              capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode == 0 or attempt or GLOO_TEARDOWN_ABORT not in proc.stderr:
            break
        for arg in args:
            if os.path.isdir(arg):
                for entry in os.scandir(arg):
                    if entry.is_dir():
                        shutil.rmtree(entry.path)
                    else:
                        os.remove(entry.path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def equal(a, b) -> bool:
    """Bitwise equality of nested tensors, dicts, lists and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(u, v) for u, v in zip(a, b))
    return a == b


def checkpoint_state(run_dir) -> dict:
    """The latest checkpoint of ``run_dir``: its training state with the raw and EMA weights (not its wall time)."""
    checkpoint = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)
    for kind in ("model", "ema"):
        state[kind] = safetensors.torch.load_file(checkpoint / f"{kind}.safetensors")
    del state["elapsed"]
    return state
