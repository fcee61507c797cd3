"""causal-lm: instruction/chat SFT with response-only loss, packed plain text, generation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nbtrain.errors import DataError
from tests.tiny_models import (
    build_tiny_gpt2,
    build_tiny_llama,
    chat_rows,
    events_of,
    instruction_rows,
)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("m") / "gpt2")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("m") / "llama")


def _task(data: dict, **cfg):
    import datasets

    from nbtrain.config import load_config
    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task

    c = load_config({"model": "x", "task": "causal-lm", "data": {"train": "x.csv", **cfg}})
    task = get_task("causal-lm", c)
    ds = datasets.Dataset.from_list(data)
    task.prepare(RawData(train=ds, eval=ds, train_source="t", eval_source="e"))
    return task


def _tok(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_instruction_labels_cover_the_response_only(gpt2: Path) -> None:
    tok = _tok(gpt2)
    task = _task(instruction_rows(4))
    enc = task.tokenize(task.prepared.train, tok, 64)
    row = enc[0]
    prompt_ids = tok("Q: colour of sky? A:")["input_ids"]
    n = len(prompt_ids)
    assert row["input_ids"][:n] == prompt_ids
    assert row["labels"][:n] == [-100] * n
    assert row["labels"][n:] == row["input_ids"][n:]
    assert row["input_ids"][-1] == tok.eos_token_id  # the model learns to stop
    assert tok.decode(row["labels"][n:-1]) == " blue"
    assert row["length"] == len(row["input_ids"])

    batch = task.collator(tok)([enc[0], enc[1], enc[3]])
    assert "length" not in batch
    width = batch["input_ids"].shape[1]
    for i, r in enumerate((enc[0], enc[1], enc[3])):
        pad = width - len(r["input_ids"])
        assert batch["labels"][i].tolist() == r["labels"] + [-100] * pad
        assert batch["attention_mask"][i].tolist() == [1] * len(r["input_ids"]) + [0] * pad

    everything = _task(instruction_rows(4), train_on="all").tokenize(task.prepared.train, tok, 64)
    assert everything[0]["labels"] == everything[0]["input_ids"]


def test_long_prompts_keep_part_of_the_response(gpt2: Path) -> None:
    tok = _tok(gpt2)
    task = _task([{"prompt": "Q: colour of sky? " * 20, "response": " blue blue blue"}] * 2)
    row = task.tokenize(task.prepared.train, tok, 16)[0]
    assert len(row["input_ids"]) == 16
    assert any(t != -100 for t in row["labels"])


def test_chat_labels_cover_assistant_turns_only(llama: Path) -> None:
    tok = _tok(llama)
    conv = [
        {"role": "user", "content": "colour of grass?"},
        {"role": "assistant", "content": "green"},
        {"role": "user", "content": "and snow?"},
        {"role": "assistant", "content": "white"},
    ]
    task = _task([{"messages": conv}] * 2)
    row = task.tokenize(task.prepared.train, tok, 64)[0]
    assert tok.decode(row["input_ids"]) == tok.apply_chat_template(conv, tokenize=False)
    kept = [t for t in row["labels"] if t != -100]
    assert tok.decode(kept) == "green<|end|>white<|end|>"
    all_task = _task([{"messages": conv}] * 2, train_on="all")
    assert all_task.tokenize(all_task.prepared.train, tok, 64)[0]["labels"] == row["input_ids"]


def test_chat_without_template_is_a_clear_error(gpt2: Path) -> None:
    task = _task(chat_rows(4))
    with pytest.raises(DataError, match="chat_template"):
        task.tokenize(task.prepared.train, _tok(gpt2), 64)
    # data.chat_template supplies one
    from tests.tiny_models import CHAT_TEMPLATE

    tok = _tok(gpt2)
    ok = _task(chat_rows(4), chat_template=CHAT_TEMPLATE)
    assert len(ok.tokenize(ok.prepared.train, tok, 64)) == 4
    assert tok.chat_template == CHAT_TEMPLATE


def test_plain_text_is_packed_into_blocks(gpt2: Path) -> None:
    tok = _tok(gpt2)
    texts = [f"the sky is blue . {'grass is green . ' * (i % 4)}" for i in range(12)]
    task = _task([{"text": t} for t in texts])
    enc = task.tokenize(task.prepared.train, tok, 16)
    stream = [t for ids in tok(texts)["input_ids"] for t in [*ids, tok.eos_token_id]]
    assert [len(b) for b in enc["input_ids"][:-1]] == [16] * (len(enc) - 1)
    assert [t for b in enc["input_ids"] for t in b] == stream
    assert enc["labels"] == enc["input_ids"]
    unpacked = _task([{"text": t} for t in texts], packing=False)
    assert len(unpacked.tokenize(unpacked.prepared.train, tok, 16)) == 12


def test_missing_columns_name_what_would_work() -> None:
    with pytest.raises(DataError, match=r"messages.*prompt.*response"):
        _task([{"question_text": "a", "reply": "b"}] * 3)


def test_model_that_cannot_do_causal_lm_is_refused() -> None:
    from transformers import T5Config

    task = _task(instruction_rows(3))
    with pytest.raises(DataError, match=r"cannot do causal-lm.*It can do: .*seq2seq"):
        task.check_model_config(T5Config(), "t5-small")


def test_sft_run_lowers_loss_records_perplexity_samples_and_generates(
    gpt2: Path, runs_dir: Path
) -> None:
    import nbtrain

    rows = instruction_rows(40)
    run = nbtrain.finetune(
        {
            "model": str(gpt2),
            "data": {"train": rows, "eval": rows[:6]},
            "epochs": 4,
            "batch_size": 8,
            "lr": 5e-3,
            "runs_dir": str(runs_dir),
            "name": "sft",
            "max_new_tokens": 3,
            "eval_samples": 2,
        },
        display="none",
    )
    assert run.status == "finished"
    notices = [e.message for e in events_of(run.output_dir, "notice")]
    assert any("inferred from the data: causal-lm" in m for m in notices)
    losses = [e.values["loss"] for e in events_of(run.output_dir, "log") if "loss" in e.values]
    assert losses[-1] < losses[0] * 0.7
    evals = events_of(run.output_dir, "eval")
    assert len(evals) == 4
    for ev in evals:
        assert math.isclose(ev.metrics["perplexity"], math.exp(ev.metrics["loss"]), rel_tol=1e-6)
        samples = ev.details["samples"]
        assert [s["prompt"] for s in samples] == [r["prompt"] for r in rows[:2]]
        assert all(isinstance(s["output"], str) for s in samples)
    assert evals[-1].metrics["perplexity"] < evals[0].metrics["perplexity"]
    assert run.metrics["eval_perplexity"] == min(e.metrics["perplexity"] for e in evals)

    out = run.generate(["Q: colour of snow? A:", "Q: colour of sky? A:"], max_new_tokens=2)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    preds = run.predict(["Q: colour of snow? A:", "Q: colour of sky? A:"])
    assert [p["prompt"] for p in preds] == ["Q: colour of snow? A:", "Q: colour of sky? A:"]
    reloaded = nbtrain.load_run("sft", runs_dir=runs_dir)
    assert reloaded.generate("Q: colour of snow? A:", max_new_tokens=2) == out[:1]


def test_chat_run_on_llama(llama: Path, runs_dir: Path) -> None:
    import nbtrain

    run = nbtrain.finetune(
        {
            "model": str(llama),
            "data": {"train": chat_rows(30)},
            "epochs": 2,
            "batch_size": 8,
            "lr": 5e-3,
            "runs_dir": str(runs_dir),
            "name": "chat",
            "max_new_tokens": 2,
        },
        display="none",
    )
    evals = events_of(run.output_dir, "eval")
    assert evals and "perplexity" in evals[-1].metrics
    first = evals[-1].details["samples"][0]
    assert first["prompt"].startswith("user: colour of")
    assert first["messages"] == [{"role": "user", "content": first["prompt"][6:]}]  # for arena
    conv = [{"role": "user", "content": "colour of sky?"}]
    assert len(run.generate([conv], max_new_tokens=2)) == 1
