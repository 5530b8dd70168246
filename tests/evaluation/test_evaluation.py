"""Evaluation: gen PPL under partgm and transformers judges, entropy, LAMBADA, multiple choice, plots.

Models are tiny (cpu-tiny or smaller) with a word-level tokenizer; "forced" models have a zero output
weight and a chosen output bias, so every prediction is softmax(bias) and every number the evaluation
reports can be computed by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_runs import ALGOS, TASKS, make_run, out_bias, word_tokenizer

from partgm.cli import main
from partgm.data import Tokenizer, load_tokenizer
from partgm.errors import PartgmError
from partgm.evaluation.genppl import judge_texts, load_judge, mean_entropy, unigram_entropy
from partgm.evaluation.plots import plot_genppl_vs_steps, plot_genppl_vs_throughput, read_records
from partgm.evaluation.zeroshot import (
    Example,
    Scorer,
    build_batch,
    choice_accuracy,
    encode_pair,
    lambada_accuracy,
    read_choice,
    read_lambada,
)


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return word_tokenizer(tmp_path_factory.mktemp("tok"))


# --- entropy and gen PPL ---------------------------------------------------------------------------------


def test_unigram_entropy_known_values() -> None:
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy([5, 5, 5]) == 0.0
    assert unigram_entropy([1, 2, 3, 4]) == pytest.approx(math.log(4))
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert unigram_entropy([7, 7, 8, 9]) == pytest.approx(expected)
    # position 0 (BOS) is not a generated token
    assert mean_entropy([[0, 7, 7, 8, 9], [0, 3, 3]]) == pytest.approx(expected / 2)


def write_samples(path: Path, tok: Tokenizer, sentences: list[str]) -> list[list[int]]:
    rows = [[tok.bos_id] + tok.encode(s) for s in sentences]
    path.write_text(
        "".join(
            json.dumps({"index": i, "text": tok.decode(r[1:]), "token_ids": r}) + "\n"
            for i, r in enumerate(rows)
        )
    )
    return rows


def test_genppl_with_partgm_ar_judge_is_hand_computable(tmp_path: Path, tok: Tokenizer, capsys) -> None:
    bias = out_bias("ar", tok, {"god": 2.0, "the": 1.0, "lord": -1.0})
    make_run(tmp_path / "judge", "ar", tok, length=16, bias=bias)
    make_run(tmp_path / "model", "pgm", tok, length=16)
    sentences = [
        "in the beginning god created the heaven",
        "god said let there be light <|endoftext|> the lord",
        "the the the god",
    ]
    rows = write_samples(tmp_path / "samples.jsonl", tok, sentences)
    logp = torch.log_softmax(bias.double(), -1)
    targets = [r[1:] for r in rows]  # the word tokenizer retokenises the decoded text to the same ids
    total = -sum(float(logp[t]) for ids in targets for t in ids)
    count = sum(len(ids) for ids in targets)
    command = ["eval", "genppl", str(tmp_path / "model"), "--judge", str(tmp_path / "judge"),
               "--samples", str(tmp_path / "samples.jsonl")]
    result = run_cli(command, capsys)
    assert result["gen_ppl"] == pytest.approx(math.exp(total / count), rel=1e-9)
    assert result["tokens_scored"] == count and result["samples_truncated"] == 0
    assert result["entropy"] == pytest.approx(sum(unigram_entropy(r[1:]) for r in rows) / 3)
    assert (result["judge_kind"], result["judge_bos_id"], result["num_samples"], result["model_step"]) == (
        "partgm-ar",
        0,
        3,
        7,
    )
    saved = json.loads(Path(tmp_path / "model" / "eval").glob("genppl-*.json").__next__().read_text())
    assert saved == result
    lines = Path(result["samples_file"]).read_text().splitlines()
    assert [json.loads(line)["token_ids"] for line in lines] == rows

    # truncation to the judge's max length: BOS + 3 text tokens
    result = run_cli([*command, "--max-length", "4", "--out", str(tmp_path / "short.json")], capsys)
    short = [ids[:3] for ids in targets]
    expected = math.exp(-sum(float(logp[t]) for ids in short for t in ids) / 9)
    assert result["gen_ppl"] == pytest.approx(expected, rel=1e-9)
    assert (result["tokens_scored"], result["samples_truncated"], result["judge_max_length"]) == (9, 3, 4)


def test_judge_errors(tmp_path: Path, tok: Tokenizer) -> None:
    make_run(tmp_path / "pgm", "pgm", tok)
    with pytest.raises(PartgmError, match="must be an autoregressive run"):
        load_judge(str(tmp_path / "pgm"))
    with pytest.raises(PartgmError, match="neither a partgm AR run"):
        load_judge(str(tmp_path / "missing-judge"))
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(PartgmError, match="token_ids"):
        main_error(
            [
                "eval",
                "genppl",
                str(tmp_path / "pgm"),
                "--judge",
                str(tmp_path / "pgm"),
                "--samples",
                str(tmp_path / "bad.jsonl"),
            ]
        )


def main_error(args: list[str]) -> None:
    """Run the command's function directly so the PartgmError reaches pytest.raises."""
    from partgm.cli import build_parser

    parsed = build_parser().parse_args(args)
    parsed.func(parsed)


def test_genppl_with_transformers_judge(tmp_path: Path, tok: Tokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(Path(tok_dir(tmp_path, tok)) / "tokenizer.json"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="[UNK]",
    )
    config = transformers.GPT2Config(
        vocab_size=tok.vocab_size,
        n_positions=8,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "gpt2-tiny")
    fast.save_pretrained(tmp_path / "gpt2-tiny")
    judge = load_judge(str(tmp_path / "gpt2-tiny"), max_length=1024)
    assert (judge.kind, judge.bos_id, judge.max_length) == ("transformers", 0, 8)  # n_positions caps it
    texts = ["in the beginning god created the heaven and the earth", "let there be light", "god"]
    scores = judge_texts(judge, texts, batch_size=2)  # padding and batching must not change anything
    total, count = 0.0, 0
    for text in texts:
        ids = [0] + tok.encode(text)[:7]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
        total -= float(logp.gather(-1, torch.tensor(ids[1:])[:, None]).sum())
        count += len(ids) - 1
    assert scores["tokens_scored"] == count == 7 + 4 + 1
    assert scores["samples_truncated"] == 1
    assert scores["gen_ppl"] == pytest.approx(math.exp(total / count), rel=1e-6)


def tok_dir(tmp_path: Path, tok: Tokenizer) -> Path:
    return tok.save(tmp_path / "hf-tok").parent


def test_genppl_draws_samples(tmp_path: Path, tok: Tokenizer, capsys) -> None:
    make_run(tmp_path / "judge", "ar", tok, length=16)
    make_run(tmp_path / "model", "pgm", tok, length=16, seed=1)
    command = ["eval", "genppl", str(tmp_path / "model"), "--judge", str(tmp_path / "judge"),
               "--num-samples", "3", "--batch", "2", "--steps", "4", "--seed", "3", "--quiet"]
    result = run_cli(command, capsys)
    assert (result["num_samples"], result["steps"], result["seed"], result["samples_source"]) == (
        3,
        4,
        3,
        "sampled",
    )
    rows = [json.loads(line) for line in Path(result["samples_file"]).read_text().splitlines()]
    assert len(rows) == 3 and all(len(r["token_ids"]) == 16 and r["token_ids"][0] == tok.bos_id for r in rows)
    assert all(r["text"] == tok.decode(r["token_ids"][1:]) for r in rows)
    rescored = judge_texts(load_judge(str(tmp_path / "judge")), [r["text"] for r in rows])
    assert result["gen_ppl"] == pytest.approx(rescored["gen_ppl"], rel=1e-12) and result["gen_ppl"] > 1.0
    assert result["entropy"] == pytest.approx(mean_entropy([r["token_ids"] for r in rows]))
    again = run_cli([*command, "--out", str(tmp_path / "again.json")], capsys)
    assert again["gen_ppl"] == result["gen_ppl"]  # seeded sampling


# --- zero-shot ---------------------------------------------------------------------------------------------


def test_task_files_and_errors(tmp_path: Path) -> None:
    lam = read_lambada(TASKS / "lambada_kjv.jsonl")
    assert len(lam) == 15
    assert (lam[0].context, lam[0].continuations) == (
        "In the beginning God created the heaven and the",
        [" earth"],
    )
    ch = read_choice(TASKS / "choice_kjv.jsonl")
    assert len(ch) == 12 and ch[1].continuations == [" darkness", " light", " water"] and ch[1].gold == 1
    assert ch[7].context.startswith("Our Father")  # the "context" key
    bad = {
        '{"text": "one"}': "a context and a last word",
        '{"txt": "a b"}': 'needs a "text" string',
        "not json": "not valid JSON",
    }
    for line, message in bad.items():
        (tmp_path / "l.jsonl").write_text('{"text": "a b"}\n\n' + line + "\n")
        with pytest.raises(PartgmError, match=f"l.jsonl:3: .*{message}"):
            read_lambada(tmp_path / "l.jsonl")
    bad = {
        '{"choices": ["a", "b"], "gold": 0}': '"query" \\(or "context"\\)',
        '{"query": "q", "choices": ["a"], "gold": 0}': "at least two",
        '{"query": "q", "choices": ["a", "b"], "gold": 2}': '"gold" must be an integer index',
        '{"query": "q", "choices": ["a", "b"], "gold": true}': '"gold" must be an integer index',
    }
    for line, message in bad.items():
        (tmp_path / "c.jsonl").write_text(line + "\n")
        with pytest.raises(PartgmError, match=f"c.jsonl:1: .*{message}"):
            read_choice(tmp_path / "c.jsonl")
    with pytest.raises(PartgmError, match="does not exist"):
        read_choice(tmp_path / "nope.jsonl")


def test_build_batch_pads_and_refuses_long_contexts(tok: Tokenizer) -> None:
    pair = encode_pair(tok, "in the beginning god", " created")
    assert pair == ([2, 3, 4, 5], [6])
    b = build_batch([pair], [1], 8, 0, 0, True, False)
    assert b.x.tolist() == [[0, 2, 3, 4, 5, 6, 0, 0]]
    assert b.context.tolist() == [[False, True, True, True, True, False, False, False]]
    assert b.target.tolist() == [[False] * 5 + [True, False, False]]
    with pytest.raises(
        PartgmError, match="line 4: 6 tokens with BOS, more than the model's length 5 .*--truncate"
    ):
        build_batch([pair], [4], 5, 0, 0, True, False)
    b = build_batch([pair], [4], 5, 0, 0, True, True)
    assert b.x.tolist() == [[0, 3, 4, 5, 6]] and b.truncated == 1
    with pytest.raises(PartgmError, match="more than the model's length 1$"):
        build_batch([pair], [4], 1, 0, 0, True, True)


@pytest.mark.parametrize("algo", ALGOS)
def test_argmax_is_forced_right_or_wrong(tmp_path: Path, tok: Tokenizer, algo: str) -> None:
    algorithm, model = make_run(tmp_path / algo, algo, tok, bias=out_bias(algo, tok, {"lord": 40.0}))
    scorer = Scorer(algorithm, model)
    lord, god = tok.encode("lord")[0], tok.encode("god")[0]
    x = torch.tensor(
        [[0, 2, 3, lord, lord, 0, 0, 0], [0, 2, 3, lord, god, 0, 0, 0], [0, 2, 3, god, lord, 0, 0, 0]]
    )
    target = torch.zeros_like(x, dtype=torch.bool)
    target[:, 3:5] = True
    pred, correct = scorer.argmax(x, target)
    assert correct.tolist() == [True, False, False]  # every target token must match
    assert (pred[target] == lord).all() and (pred[~target] == -1).all()
    examples = [
        Example(1, "in the", [" lord"], 0),
        Example(2, "in the", [" earth"], 0),
        Example(3, "the lord", [" lord"], 0),
    ]
    result = lambada_accuracy(scorer, tok, examples, 16, tok.bos_id, tok.eos_id, batch_size=2)
    assert (result["correct"], result["count"]) == (2, 3)
    assert [p["correct"] for p in result["predictions"]] == [True, False, True]
    assert result["predictions"][1]["predicted"] == "lord"


@pytest.mark.parametrize("algo", ("mdlm", "pgm"))
def test_diffusion_predicts_targets_without_seeing_them(tmp_path: Path, tok: Tokenizer, algo: str) -> None:
    algorithm, model = make_run(tmp_path / algo, algo, tok, seed=3)
    scorer = Scorer(algorithm, model)
    x = torch.randint(2, tok.vocab_size, (4, 16))
    target = torch.zeros_like(x, dtype=torch.bool)
    target[:, 5:9] = True
    y = torch.where(target, torch.randint(2, tok.vocab_size, x.shape), x)
    assert torch.equal(scorer.argmax(x, target)[0], scorer.argmax(y, target)[0])
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, *inputs, **kwargs):
            calls.append(inputs)
            return model(*inputs, **kwargs)

        def forward_packed(self, *inputs, **kwargs):
            calls.append(inputs)
            return model.forward_packed(*inputs, **kwargs)

    Scorer(algorithm, Spy()).argmax(x, target)
    assert len(calls) == 1  # one pass for the whole target
    if algo == "mdlm":
        (z,) = calls[0]
        assert torch.equal(z, torch.where(target, algorithm.mask_id, x))
    else:  # the encoder reads exactly the non-target tokens
        clean_tokens, clean_positions, _, clean_valid = calls[0]
        for row in range(len(x)):
            valid = clean_valid[row] if clean_valid is not None else torch.ones_like(clean_positions[row], dtype=torch.bool)
            assert torch.equal(clean_positions[row][valid], (~target[row]).nonzero().squeeze(1))
            assert torch.equal(clean_tokens[row][valid], x[row][~target[row]])


def choice_examples() -> list[Example]:
    return [
        Example(1, "in the", [" earth", " god"], 1),
        Example(2, "let there be", [" light", " night"], 0),
        Example(3, "god said", [" bread", " god god"], 0),
    ]


def test_choice_ar_is_exact(tmp_path: Path, tok: Tokenizer) -> None:
    bias = out_bias("ar", tok, {"god": 3.0, "light": 2.0, "bread": 2.5})
    algorithm, model = make_run(tmp_path / "ar", "ar", tok, bias=bias)
    logp = torch.log_softmax(bias.double(), -1)
    examples = choice_examples()
    for score in ("joint", "answer"):
        result = choice_accuracy(Scorer(algorithm, model), tok, examples, 16, 0, 0, batch_size=3, score=score)
        for e, p in zip(examples, result["predictions"]):
            for cont, s, n in zip(e.continuations, p["scores"], p["scored_tokens"]):
                ids = tok.encode(e.context + cont) if score == "joint" else tok.encode(cont)
                assert s == pytest.approx(-sum(float(logp[i]) for i in ids), rel=1e-6) and n == len(ids)
        # " god god" costs 2 x 0.x nats more than " bread" in total but less per token
        assert [p["pred"] for p in result["predictions"]] == [1, 0, 0]
        assert [p["pred_token_normalized"] for p in result["predictions"]] == [1, 0, 1]
        assert (result["accuracy_unnormalized"], result["accuracy_token_normalized"]) == (
            1.0,
            pytest.approx(2 / 3),
        )
    result = choice_accuracy(Scorer(algorithm, model), tok, examples, 16, 0, 0, normalize="tokens")
    assert result["accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("algo", ("mdlm", "pgm"))
def test_choice_nelbo_estimates_the_likelihood(tmp_path: Path, tok: Tokenizer, algo: str) -> None:
    bias = out_bias(algo, tok, {"god": 3.0, "light": 2.0, "bread": 2.5})
    algorithm, model = make_run(tmp_path / algo, algo, tok, bias=bias)
    logp = torch.log_softmax(bias[: tok.vocab_size].double(), -1)  # the mask logit is -inf under SUBS
    examples = choice_examples()
    result = choice_accuracy(Scorer(algorithm, model), tok, examples, 16, 0, 0, mc_samples=32, score="answer")
    assert result["accuracy"] == 1.0
    # With predictions independent of the input, E[NELBO] = (1 - eps) * exact NLL under the log-linear schedule
    for e, p in zip(examples, result["predictions"]):
        for cont, s in zip(e.continuations, p["scores"]):
            exact = -sum(float(logp[i]) for i in tok.encode(cont))
            assert s == pytest.approx(0.999 * exact, rel=0.2)
    again = choice_accuracy(Scorer(algorithm, model), tok, examples, 16, 0, 0, mc_samples=32, score="answer")
    assert again["predictions"] == result["predictions"]  # seeded
    joint = choice_accuracy(Scorer(algorithm, model), tok, examples, 16, 0, 0, mc_samples=8, seed=1)
    assert all(
        n1 > n2
        for p, q in zip(joint["predictions"], result["predictions"])
        for n1, n2 in zip(p["scored_tokens"], q["scored_tokens"])
    )


@pytest.fixture(scope="module")
def kjv_tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    texts = [
        json.loads(line).get("text") or json.loads(line).get("query") or json.loads(line)["context"]
        for f in ("lambada_kjv.jsonl", "choice_kjv.jsonl")
        for line in (TASKS / f).read_text().splitlines()
    ]
    texts += [
        c
        for line in (TASKS / "choice_kjv.jsonl").read_text().splitlines()
        for c in json.loads(line)["choices"]
    ]
    return load_tokenizer("bpe-300", data_dir=tmp_path_factory.mktemp("bpe"), corpus_texts=texts * 3)


@pytest.mark.parametrize("algo", ALGOS)
def test_cli_tasks_on_the_shipped_fixtures(tmp_path: Path, kjv_tok: Tokenizer, algo: str, capsys) -> None:
    run = tmp_path / algo
    make_run(run, algo, kjv_tok, length=96)
    lam = run_cli(
        ["eval", "lambada", str(run), "--data", str(TASKS / "lambada_kjv.jsonl"), "--batch", "8"], capsys
    )
    assert (lam["metric"], lam["count"], lam["algo"], lam["model_step"]) == ("lambada", 15, algo, 7)
    assert 0.0 <= lam["accuracy"] <= 1.0 and lam["correct"] == round(lam["accuracy"] * 15)
    preds = Path(lam["predictions_file"]).read_text().splitlines()
    assert len(preds) == 15 and json.loads(preds[0])["target"] == " earth"
    assert json.loads((run / "eval" / "lambada-lambada_kjv.json").read_text()) == lam
    ch = run_cli(
        [
            "eval",
            "choice",
            str(run),
            "--data",
            str(TASKS / "choice_kjv.jsonl"),
            "--mc-samples",
            "2",
            "--limit",
            "5",
        ],
        capsys,
    )
    assert (ch["count"], ch["score"], ch["normalize"]) == (5, "joint", "none")
    assert ch["estimator"] == ("exact log-likelihood" if algo == "ar" else "Monte-Carlo NELBO (upper bound)")
    make_run(tmp_path / "short", algo, kjv_tok, length=8)
    with pytest.raises(PartgmError, match="more than the model's length 8 .*--truncate"):
        main_error(["eval", "lambada", str(tmp_path / "short"), "--data", str(TASKS / "lambada_kjv.jsonl")])


# --- plots ---------------------------------------------------------------------------------------------------


def test_plots(tmp_path: Path) -> None:
    records = [
        {
            "metric": "genppl",
            "algo": algo,
            "run_dir": f"runs/{algo}",
            "steps": s,
            "gen_ppl": ppl * 64 / s,
            "entropy": 5.6 - 0.01 * s / 64,
            "nucleus": 1.0,
            "sampler": "auto",
            "judge": "gpt2-large",
        }
        for algo, ppl in (("pgm", 100.0), ("mdlm", 110.0))
        for s in (32, 128, 1024)
    ]
    records.append({"metric": "genppl", "algo": "pgm", "steps": None, "gen_ppl": 50.0})  # from a samples file
    (tmp_path / "a.json").write_text(json.dumps(records[0]))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    assert read_records([tmp_path / "a.json", tmp_path / "b.jsonl"]) == records
    out = plot_genppl_vs_steps(records, tmp_path / "plots" / "steps.png")
    assert out.stat().st_size > 5000 and out.read_bytes()[:4] == b"\x89PNG"
    bench = [
        {"algo": a, "variant": v, "steps": s, "tokens_per_s": tps / s}
        for a, v, tps in (("pgm", "uniform", 6e5), ("mdlm", "reference", 1.3e5), ("mdlm", "best", 2e5))
        for s in (32, 128, 1024)
    ]
    out = plot_genppl_vs_throughput(records, bench, tmp_path / "plots" / "speed.png")
    assert out.stat().st_size > 5000
    with pytest.raises(PartgmError, match="no gen PPL record has a bench record"):
        plot_genppl_vs_throughput(
            records, [{"algo": "ar", "steps": 32, "tokens_per_s": 1.0}], tmp_path / "x.png"
        )
    with pytest.raises(PartgmError, match="no gen PPL records"):
        plot_genppl_vs_steps([records[-1]], tmp_path / "x.png")
