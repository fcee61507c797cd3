"""masked-lm: masking in the collator, packing, perplexity, fill-mask predictions."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from nbtrain.errors import DataError
from tests.conftest import FILLER, NEGATIVE, POSITIVE, make_wordpiece_tokenizer
from tests.tiny_models import events_of

WORDS = sorted(set(POSITIVE + NEGATIVE + FILLER))


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # "the movie was good" / "the film was bad": a pattern a tiny model picks up quickly
    return [
        f"the {rng.choice(['movie', 'film'])} was {rng.choice(POSITIVE + NEGATIVE)} and "
        f"{rng.choice(['very', 'quite'])} {rng.choice(['dull', 'happy'])}"
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("m") / "bert-mlm"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tok = make_wordpiece_tokenizer(vocab)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertForMaskedLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _task(rows: list[dict], **data):
    import datasets

    from nbtrain.config import load_config
    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task

    c = load_config({"model": "x", "task": "masked-lm", "data": {"train": "x", **data}})
    task = get_task("masked-lm", c)
    ds = datasets.Dataset.from_list(rows)
    task.prepare(RawData(train=ds, eval=None, train_source="t", eval_source=None))
    return task


def test_collator_masks_tokens_and_labels_only_them(tiny_mlm: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_mlm))
    task = _task([{"text": t} for t in _texts(200)], mlm_probability=0.4)
    enc = task.tokenize(task.prepared.train, tok, 32)
    torch.manual_seed(0)
    rows = [enc[i] for i in range(64)]
    batch = task.collator(tok)(rows)
    assert "length" not in batch
    labels, ids = batch["labels"], batch["input_ids"]
    for i, row in enumerate(rows):
        orig = torch.tensor(row["input_ids"])
        n = len(orig)
        picked = labels[i, :n] != -100
        assert (labels[i, n:] == -100).all()  # padding never predicted
        assert (labels[i, :n][picked] == orig[picked]).all()  # labels are the original tokens
        special = torch.tensor(row["special_tokens_mask"]).bool()
        assert not picked[special].any()  # [CLS]/[SEP] never masked
        assert (ids[i, :n][~picked] == orig[~picked]).all()  # unpicked tokens unchanged
    picked = labels != -100
    share = picked.sum().item() / sum(n - 2 for n in (len(r["input_ids"]) for r in rows))
    assert 0.3 < share < 0.5
    masked = (ids[picked] == tok.mask_token_id).float().mean().item()
    assert 0.7 < masked < 0.9  # 80% become [MASK], the rest random or unchanged


def test_packing_makes_full_blocks(tiny_mlm: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_mlm))
    task = _task([{"text": t} for t in _texts(40)], packing=True)
    enc = task.tokenize(task.prepared.train, tok, 16)
    assert all(n == 16 for n in enc["length"][:-1])
    train_texts = list(task.prepared.train["text"])
    assert sum(enc["length"]) == sum(len(x) for x in tok(train_texts)["input_ids"])


def test_errors_name_what_is_missing_and_what_works(tiny_mlm: Path) -> None:
    from transformers import GPT2Config

    with pytest.raises(DataError, match=r"masked-lm needs a text column .*data.text"):
        _task([{"sentence": "a b"}] * 4)
    task = _task([{"text": t} for t in _texts(10)])
    with pytest.raises(DataError, match=r"cannot do masked-lm.*It can do: .*causal-lm"):
        task.check_model_config(GPT2Config(), "gpt2")


def test_run_infers_masked_lm_lowers_loss_and_fills_masks(tiny_mlm: Path, runs_dir: Path) -> None:
    import nbtrain

    run = nbtrain.finetune(
        {
            "model": str(tiny_mlm),
            "data": {
                "train": {"text": _texts(96)},
                "eval": {"text": _texts(32, seed=1)},
                "mlm_probability": 0.3,
            },
            "epochs": 4,
            "batch_size": 16,
            "lr": 5e-3,
            "runs_dir": str(runs_dir),
            "name": "mlm",
        },
        display="none",
    )
    assert run.status == "finished"
    notices = [e.message for e in events_of(run.output_dir, "notice")]
    assert any("inferred from the data: masked-lm" in m for m in notices)
    losses = [e.values["loss"] for e in events_of(run.output_dir, "log") if "loss" in e.values]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 * 0.8
    evals = events_of(run.output_dir, "eval")
    assert len(evals) == 4
    for ev in evals:
        assert math.isclose(ev.metrics["perplexity"], math.exp(ev.metrics["loss"]), rel_tol=1e-6)
    assert evals[-1].metrics["perplexity"] < evals[0].metrics["perplexity"]

    out = run.predict(["the movie [MASK] good", "the [MASK] was [MASK]"])
    assert [len(o["masks"]) for o in out] == [1, 2]
    assert out[0]["masks"][0][0]["token"] == "was"  # learnt from the pattern
    with pytest.raises(DataError, match=r"\[MASK\]"):
        run.predict("no mask here")
