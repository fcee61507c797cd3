"""The classification collator pads exactly like DataCollatorWithPadding, only cheaper."""

from __future__ import annotations

import pytest

from tests.conftest import FILLER, NEGATIVE, POSITIVE, make_wordpiece_tokenizer


@pytest.fixture(scope="module")
def tok():
    # [PAD] is not id 0, so a wrong pad value for input_ids shows.
    vocab = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", *FILLER, *POSITIVE, *NEGATIVE]
    tok = make_wordpiece_tokenizer(vocab)
    assert tok.pad_token_id == 3
    return tok


def _rows(tok, texts, labels, pair=False):
    enc = tok(texts, texts[::-1] if pair else None, truncation=True, max_length=16)
    keys = list(enc.keys())
    return [
        {**{k: enc[k][i] for k in keys}, "labels": labels[i], "length": len(enc["input_ids"][i])}
        for i in range(len(texts))
    ]


def _reference(tok, rows, multiple=None):
    from transformers import DataCollatorWithPadding

    from nbtrain.engine.tasks.classification import DropLength

    return DropLength(DataCollatorWithPadding(tok, pad_to_multiple_of=multiple))(rows)


TEXTS = ["the movie was good", "bad", "a very dull and boring film plot really", "superb cast"]


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [None, 8])
@pytest.mark.parametrize("pair", [False, True])
def test_same_batch_as_data_collator_with_padding(tok, side, multiple, pair):
    from nbtrain.engine.tasks.classification import PadBatch

    tok.padding_side = side
    try:
        rows = _rows(tok, TEXTS, [1, 0, 0, 1], pair=pair)
        ours = PadBatch(tok, pad_to_multiple_of=multiple)(rows)
        ref = _reference(tok, rows, multiple)
    finally:
        tok.padding_side = "right"
    assert set(ours) == set(ref) and "length" not in ours
    for key in ref:
        assert ours[key].dtype == ref[key].dtype, key
        assert ours[key].tolist() == ref[key].tolist(), key
    if multiple:
        assert ours["input_ids"].shape[1] % multiple == 0


def test_float_and_multi_hot_labels(tok):
    import torch

    from nbtrain.engine.tasks.classification import PadBatch

    reg = PadBatch(tok)(_rows(tok, TEXTS[:2], [0.5, 2.0]))
    assert reg["labels"].dtype == torch.float32 and reg["labels"].tolist() == [0.5, 2.0]
    multi = PadBatch(tok)(_rows(tok, TEXTS[:2], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert multi["labels"].shape == (2, 3) and multi["labels"].dtype == torch.float32


def test_unknown_keys_fall_back_to_the_transformers_collator(tok):
    from nbtrain.engine.tasks.classification import PadBatch

    rows = _rows(tok, TEXTS[:2], [1, 0])
    for r in rows:
        r["extra"] = 3
    batch = PadBatch(tok)(rows)
    assert batch["extra"].tolist() == [3, 3]
