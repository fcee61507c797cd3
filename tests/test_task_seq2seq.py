"""seq2seq: T5 with DataCollatorForSeq2Seq, generation at eval, exact match and ROUGE-L."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtrain.engine.tasks.text_metrics import generation_scores, rouge_l
from nbtrain.errors import DataError
from tests.tiny_models import COLOURS, build_tiny_t5, events_of


def _rows(n: int) -> list[dict[str, str]]:
    things = list(COLOURS)
    return [
        {"source": f"colour of {things[i % 5]}", "target": COLOURS[things[i % 5]]} for i in range(n)
    ]


@pytest.fixture(scope="module")
def t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [f"{r['source']} {r['target']}" for r in _rows(5)]
    return build_tiny_t5(tmp_path_factory.mktemp("m") / "t5", texts)


def test_rouge_l_matches_the_rouge_score_package() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [
        ("the cat sat on the mat", "the cat is on the mat"),
        ("A quick brown fox!", "the quick, brown dog"),
        ("", "something"),
        ("identical words here", "identical words here"),
        ("police killed the gunman", "the gunman police killed"),
    ]
    for pred, ref in pairs:
        want = scorer.score(ref, pred)["rougeL"].fmeasure
        assert rouge_l(pred, ref) == pytest.approx(want, abs=1e-9), (pred, ref)
    scores = generation_scores(["Blue ", "green"], ["blue", "red"])
    assert scores == {"exact_match": 0.5, "rougeL": 0.5}


def test_tokenize_and_collator_pad_labels(t5: Path) -> None:
    import datasets
    from transformers import AutoTokenizer

    from nbtrain.config import load_config
    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task

    tok = AutoTokenizer.from_pretrained(str(t5))
    task = get_task("seq2seq", load_config({"model": "x", "data": {"train": "x"}}))
    ds = datasets.Dataset.from_list(
        [
            {"document": "colour of sky", "summary": "blue"},
            {"document": "colour of coal now", "summary": "black coal"},
        ]
    )
    task.prepare(RawData(train=ds, eval=ds, train_source="t", eval_source="e"))
    enc = task.tokenize(task.prepared.train, tok, 32)
    assert enc[0]["input_ids"] == tok("colour of sky")["input_ids"]
    assert enc[0]["input_ids"][-1] == tok.eos_token_id
    assert enc[0]["labels"] == tok("blue")["input_ids"]
    batch = task.collator(tok)([enc[0], enc[1]])
    assert "length" not in batch
    short, long_ = enc[0]["labels"], enc[1]["labels"]
    assert batch["labels"][0].tolist() == short + [-100] * (len(long_) - len(short))
    assert batch["input_ids"].shape[1] == max(len(enc[0]["input_ids"]), len(enc[1]["input_ids"]))


def test_errors_name_what_is_missing_and_what_works() -> None:
    import datasets
    from transformers import BertConfig

    from nbtrain.config import load_config
    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task

    task = get_task("seq2seq", load_config({"model": "x", "data": {"train": "x"}}))
    bad = datasets.Dataset.from_list([{"question": "a", "answer": "b"}])
    with pytest.raises(DataError, match=r"seq2seq needs 'source' and 'target'.*question, answer"):
        task.prepare(RawData(train=bad, eval=None, train_source="t", eval_source=None))
    with pytest.raises(DataError, match=r"cannot do seq2seq.*It can do: .*masked-lm.*t5-small"):
        task.check_model_config(BertConfig(), "bert-base-uncased")


def test_run_generates_at_eval_and_scores(t5: Path, runs_dir: Path) -> None:
    import nbtrain

    rows = _rows(40)
    run = nbtrain.finetune(
        {
            "model": str(t5),
            "data": {"train": rows, "eval": _rows(5)},
            "epochs": 6,
            "batch_size": 8,
            "lr": 1e-2,
            "runs_dir": str(runs_dir),
            "name": "s2s",
            "max_new_tokens": 4,
            "eval_samples": 2,
        },
        display="none",
    )
    assert run.status == "finished"
    notices = [e.message for e in events_of(run.output_dir, "notice")]
    assert any("inferred from the data: seq2seq" in m for m in notices)
    losses = [e.values["loss"] for e in events_of(run.output_dir, "log") if "loss" in e.values]
    assert losses[-1] < losses[0] * 0.5
    evals = events_of(run.output_dir, "eval")
    assert len(evals) == 6
    for ev in evals:
        assert {"loss", "exact_match", "rougeL"} <= set(ev.metrics)
        assert len(ev.details["samples"]) == 2
        assert ev.details["samples"][0]["prompt"] == "colour of sky"
    # It learns: from nothing right at the first eval to most targets (0, 0.2, ..., 0.6 measured).
    assert evals[0].metrics["rougeL"] < evals[-1].metrics["rougeL"]
    assert evals[-1].metrics["rougeL"] >= 0.4
    assert run.metrics["eval_rougeL"] == max(e.metrics["rougeL"] for e in evals)

    out = run.generate(["colour of sky", "colour of snow"], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    pred = run.predict("colour of sky")
    assert pred == [{"source": "colour of sky", "generated": out[0]}]
