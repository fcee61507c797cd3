"""Prediction: one batched loop for every task, truncating at the max_length the run trained with."""

from __future__ import annotations

import pytest

import nbtrain
from nbtrain.events import read_events

LONG = " ".join(["the movie was a film and the plot"] * 6) + " superb wonderful brilliant"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, tiny_bert, sentiment_csv):
    runs = tmp_path_factory.mktemp("runs")
    cfg = {
        "model": str(tiny_bert),
        "data": {
            "train": str(sentiment_csv["train"]),
            "eval": str(sentiment_csv["dev"]),
            "max_length": 6,  # the tiny BERT takes 64: a loaded run must not fall back to that
        },
        "epochs": 8,
        "lr": 3e-3,
        "runs_dir": str(runs),
        "name": "short",
    }
    return nbtrain.finetune(cfg, display="none"), runs


def _probs(model, tokenizer, text: str, max_length: int) -> list[float]:
    import torch

    enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        return model.eval()(**enc).logits.float().softmax(-1)[0].tolist()


def test_start_event_records_max_length(short_run):
    result, _ = short_run
    start = next(e for e in read_events(result.output_dir) if e.type == "start")
    assert start.max_length == 6


def test_loaded_run_predicts_with_trained_max_length(short_run):
    result, runs = short_run
    loaded = nbtrain.load_run("short", runs)
    assert loaded._task is None  # rebuilt from the run folder, not the training session's
    got = loaded.predict([LONG])[0]
    model, tok = loaded.model, loaded.tokenizer
    at_6, at_64 = _probs(model, tok, LONG, 6), _probs(model, tok, LONG, 64)
    assert at_6 != pytest.approx(at_64, abs=1e-3)  # the two lengths give different answers
    assert [got["probs"][k] for k in sorted(got["probs"])] == pytest.approx(at_6, abs=1e-5)
    # the result of the training session truncates the same way
    fresh = result.predict([LONG])[0]
    assert fresh["probs"] == pytest.approx(got["probs"], abs=1e-5)


def test_batched_predictions_keep_input_order(short_run):
    result, _ = short_run
    texts = ["superb", LONG, "a dull and boring plot", "great", "the film was awful", "sad"]
    one_by_one = [result.predict([t], batch_size=1)[0] for t in texts]
    batched = result.predict(texts, batch_size=4)  # sorted by length inside, order kept
    assert [p["text"] for p in batched] == texts
    for a, b in zip(one_by_one, batched):
        assert a["label"] == b["label"]
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-4)
