"""token-classification: word labels aligned to sub-tokens, entity F1, per-word predictions."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nbtrain.engine.tasks.text_metrics import entities, entity_scores
from nbtrain.errors import DataError
from tests.conftest import make_wordpiece_tokenizer
from tests.tiny_models import events_of

NAMES = ["alice", "bob", "carol", "dave"]
CITIES = ["paris", "rome", "oslo", "lima"]
WORDS = ["went", "to", "met", "in", "lives", "and", "today", "."]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, c = rng.choice(NAMES), rng.choice(NAMES), rng.choice(CITIES)
        form = rng.randrange(3)
        if form == 0:
            words, tags = [a, "went", "to", c], ["B-PER", "O", "O", "B-LOC"]
        elif form == 1:
            words, tags = [a, "met", b, "in", c], ["B-PER", "O", "B-PER", "O", "B-LOC"]
        else:
            words = ["today", a, b, "lives", "in", c, "."]
            tags = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "O"]
        rows.append({"tokens": words, "tags": tags})
    return rows


@pytest.fixture(scope="module")
def tiny_bert_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BERT with names and cities left out of the vocabulary: they split into pieces."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("m") / "bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *LETTERS]
    vocab += [f"##{c}" for c in LETTERS]
    tok = make_wordpiece_tokenizer(vocab)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    model = BertModel(config)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _task(rows: list[dict], eval_rows: list[dict] | None = None, **data):
    import datasets

    from nbtrain.config import load_config
    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task

    c = load_config({"model": "x", "data": {"train": "x", **data}})
    task = get_task("token-classification", c)
    ev = datasets.Dataset.from_list(eval_rows) if eval_rows else None
    task.prepare(
        RawData(train=datasets.Dataset.from_list(rows), eval=ev, train_source="t", eval_source="e")
    )
    return task


def test_entities_and_scores_match_seqeval() -> None:
    metrics = pytest.importorskip("seqeval.metrics")
    rng = random.Random(3)
    pool = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    true = [[rng.choice(pool) for _ in range(rng.randint(1, 12))] for _ in range(300)]
    pred = [[t if rng.random() < 0.7 else rng.choice(pool) for t in row] for row in true]
    scores, details = entity_scores(true, pred)
    assert scores["f1"] == pytest.approx(metrics.f1_score(true, pred), abs=1e-9)
    assert scores["precision"] == pytest.approx(metrics.precision_score(true, pred), abs=1e-9)
    assert scores["recall"] == pytest.approx(metrics.recall_score(true, pred), abs=1e-9)
    assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(true, pred), abs=1e-9)
    from seqeval.metrics.sequence_labeling import get_entities

    for row in true[:100]:
        want = sorted((k, s, e + 1) for k, s, e in get_entities(row))
        assert sorted(entities(row)) == want, row
    report = metrics.classification_report(true, pred, output_dict=True)
    assert details["per_entity"]["PER"]["f1"] == pytest.approx(report["PER"]["f1-score"])


def test_labels_align_to_first_sub_token(tiny_bert_tok: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert_tok))
    task = _task(_rows(20))
    assert task.prepared.labels == ["O", "B-LOC", "B-PER", "I-PER"]
    ids = {n: i for i, n in enumerate(task.prepared.labels)}
    import datasets

    one = datasets.Dataset.from_list(
        [{"tokens": ["alice", "went", "to", "oslo"], "tags": ["B-PER", "O", "O", "B-LOC"]}]
    )
    row = task.tokenize(one, tok, 32)[0]
    pieces = tok.convert_ids_to_tokens(row["input_ids"])
    assert pieces == ["[CLS]", "a", "##l", "##i", "##c", "##e", "went", "to", "o", "##s", "##l",
                      "##o", "[SEP]"]  # fmt: skip
    want = [-100, ids["B-PER"], -100, -100, -100, -100, ids["O"], ids["O"], ids["B-LOC"]]
    assert row["labels"] == want + [-100] * 4
    batch = task.collator(tok)([row, task.tokenize(one.select([0]), tok, 5)[0]])
    assert "length" not in batch
    assert batch["labels"][1].tolist() == [-100, ids["B-PER"], -100, -100, -100] + [-100] * 8


def test_integer_tags_use_label_names_and_errors_are_clear() -> None:
    task = _task(
        [{"tokens": ["alice", "went"], "ner_tags": [1, 0]}] * 4, label_names=["O", "B-PER"]
    )
    assert task.prepared.labels == ["O", "B-PER"]
    with pytest.raises(DataError, match=r"needs a 'tokens' column .*'tags'.*text, label"):
        _task([{"text": "alice went", "label": 1}] * 3)
    with pytest.raises(DataError, match=r"row 0 has 2 words but 1 tags"):
        _task([{"tokens": ["alice", "went"], "tags": ["B-PER"]}])
    with pytest.raises(DataError, match=r"tags the training data does not: B-ORG"):
        _task(_rows(5), [{"tokens": ["acme"], "tags": ["B-ORG"]}])
    from transformers import MarianConfig

    with pytest.raises(DataError, match=r"cannot do token-classification.*It can do: causal-lm"):
        _task(_rows(5)).check_model_config(MarianConfig(), "Helsinki-NLP/opus-mt-en-de")


def test_run_lowers_loss_reports_entity_f1_and_predicts(
    tiny_bert_tok: Path, runs_dir: Path
) -> None:
    import nbtrain

    run = nbtrain.finetune(
        {
            "model": str(tiny_bert_tok),
            "data": {"train": _rows(96), "eval": _rows(24, seed=1)},
            "epochs": 6,
            "batch_size": 16,
            "lr": 2e-2,
            "warmup_ratio": 0.0,
            "runs_dir": str(runs_dir),
            "name": "ner",
        },
        display="none",
    )
    assert run.status == "finished"
    notices = [e.message for e in events_of(run.output_dir, "notice")]
    assert any("inferred from the data: token-classification" in m for m in notices)
    losses = [e.values["loss"] for e in events_of(run.output_dir, "log") if "loss" in e.values]
    assert losses[-1] < losses[0] * 0.5
    evals = events_of(run.output_dir, "eval")
    assert len(evals) == 6
    assert {"f1", "precision", "recall", "accuracy", "loss"} <= set(evals[-1].metrics)
    assert set(evals[-1].details["per_entity"]) <= {"PER", "LOC"}
    assert evals[-1].metrics["f1"] > 0.8
    out = run.predict(["bob went to rome", ["carol", "met", "dave", "in", "lima"]])
    assert out[0]["tokens"] == ["bob", "went", "to", "rome"]
    assert out[0]["tags"] == ["B-PER", "O", "O", "B-LOC"]
    assert [e["type"] for e in out[1]["entities"]] == ["PER", "PER", "LOC"]
    assert out[1]["entities"][2] == {"type": "LOC", "text": "lima", "start": 4, "end": 5}
