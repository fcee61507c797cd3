"""The dry-run report on small generated data with known answers, section by section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import make_texts
from tests.tiny_models import build_tiny_llama

# -- pure statistics --------------------------------------------------------------------------


def test_percentiles_lengths_and_truncation_have_known_values():
    from nbtrain.engine.datastats import length_stats, percentile, suggest_max_length

    lengths = list(range(1, 101))  # 1..100 tokens
    assert [percentile(lengths, q) for q in (50, 90, 99, 100)] == [50, 90, 99, 100]
    s = length_stats("train", lengths, max_length=80)
    assert (s.count, s.p50, s.p90, s.p99, s.max) == (100, 50, 90, 99, 100)
    assert s.truncated_rows == 20  # 81..100
    assert s.tokens_lost == sum(n - 80 for n in range(81, 101)) == 210
    assert s.lost_share == pytest.approx(210 / 5050)
    assert sum(s.histogram.counts) == 100 and s.histogram.edges[-1] > 80
    a = suggest_max_length(lengths, current=80, limit=512)
    assert a.suggested == 104 and a.change == "raise"  # p99 = 99, rounded up to 8
    assert a.tokens_now == sum(min(n, 80) for n in lengths) and a.tokens_suggested == 5050
    tail = suggest_max_length([10] * 99 + [300], current=512, limit=512)
    assert tail.suggested == 16 and tail.change == "lower" and tail.rows_truncated == 1
    assert tail.longest_batch_now == 300 and tail.longest_batch_suggested == 16
    # max_length above every row costs nothing with dynamic padding: keep it
    assert suggest_max_length([10] * 99 + [30], current=512, limit=512).change == "keep"
    assert suggest_max_length(lengths, current=100, limit=512).change == "keep"


def test_labels_duplicates_junk_and_masked_rows():
    from nbtrain.engine.datastats import (
        balanced_weights,
        duplicates,
        junk_rows,
        label_stats,
        untrained_rows,
    )

    lab = label_stats(["neg", "pos"], {"train": [0] * 30 + [1] * 10, "eval": [0, 1, 1]})
    assert lab.counts == {"train": {"neg": 30, "pos": 10}, "eval": {"neg": 1, "pos": 2}}
    assert lab.imbalance == 3.0 and lab.imbalanced
    assert lab.weights == (40 / 60, 2.0) == tuple(balanced_weights([30, 10]))
    unseen = label_stats(["a", "b"], {"train": ["a", "b"], "eval": ["a", "c", "c"]})
    assert unseen.unseen_in_train == {"c": 2}

    d = duplicates(["x", "y", "x", "z", "x"], ["y", "new", "z"])
    assert d.within_train == 2 and d.within_train_examples[0] == ("x", (0, 2, 4))
    assert d.train_eval == 2 and d.train_eval_examples == (("y", 1, 0), ("z", 3, 2))

    j = junk_rows(
        "train", ["ok", " \t", "", "[UNK]"], [[1, 5, 2], [1, 2], [1, 2], [1, 3, 2]], {1, 2, 3}
    )
    assert j.empty == (1, 2) and j.special_only == (3,)

    labels = [[-100, 5, 6], [-100, -100], [7, -100], [5]]
    assert untrained_rows(labels, shift=False) == [1]
    assert untrained_rows(labels, shift=True) == [1, 2, 3]  # the first label is never predicted


def test_batch_plan_puts_the_longest_batch_first_and_pads():
    from nbtrain.engine.timing import batch_plan, count_evals

    lengths = [3, 9, 4, 17, 5, 6, 7, 8] * 4
    plan = batch_plan(lengths, 4, 8, grouped=True, seed=0, multiple=8)
    assert len(plan) == 8 and plan[0] == 24  # 17 padded to a multiple of 8
    assert all(n % 8 == 0 for n in plan)
    two_epochs = batch_plan(lengths, 4, 16, grouped=False, seed=0)
    assert len(two_epochs) == 16 and max(two_epochs) == 17

    class C:
        eval_strategy, eval_steps = "steps", 10

    assert count_evals(C, True, 35, 12) == 3 and count_evals(C, False, 35, 12) == 0


# -- the report on generated data -------------------------------------------------------------


def _write(path: Path, rows: list[tuple[str, str]]) -> str:
    path.write_text("text,label\n" + "\n".join(f"{t},{lab}" for t, lab in rows) + "\n")
    return str(path)


@pytest.fixture
def known_data(tmp_path: Path) -> dict:
    # Every word is one token of the tiny BERT's vocabulary; [CLS] and [SEP] add 2.
    long_row = " ".join(["the movie was really very good"] * 4)  # 24 words: 26 tokens
    rows = [(t, "neg") for t, _ in make_texts(60, 0)] + [(t, "pos") for t, _ in make_texts(20, 1)]
    rows += [(long_row, "pos"), (long_row + " and it", "pos")]  # 26 and 28 tokens
    rows += [("good good", "pos"), ("good good", "pos"), ("  ", "neg"), ("€ €", "neg")]
    train = _write(tmp_path / "train.csv", rows)
    dev = _write(tmp_path / "dev.csv", [("good good", "pos"), ("bad film", "neg")])
    return {"train": train, "eval": dev, "max_length": 16}


def test_report_numbers_on_known_data(fast_cfg, known_data):
    from nbtrain.preflight import inspect

    cfg = dict(fast_cfg, data=known_data)
    r = inspect(cfg, timing=False)
    d = r.data
    train = next(s for s in d.lengths if s.split == "train")
    assert train.count == 86 and train.max == 28
    assert train.truncated_rows == 2 and train.tokens_lost == (26 - 16) + (28 - 16)
    # 2 of 86 rows cut (> 1 %): raise to p99 (28) rounded up to 8, with what it costs
    a = d.advice
    assert (a.change, a.suggested, a.rows_truncated) == ("raise", 32, 0)
    assert (a.longest_batch_now, a.longest_batch_suggested) == (16, 28)
    assert a.tokens_suggested - a.tokens_now == (26 - 16) + (28 - 16)
    assert r.suggested_memory_bytes > r.memory.total_bytes  # longer batches need more memory
    assert d.labels.counts["train"] == {"neg": 62, "pos": 24}
    assert d.labels.imbalance == pytest.approx(62 / 24, abs=1e-3) and not d.labels.imbalanced
    assert d.duplicates.within_train == 1 and d.duplicates.train_eval == 1
    junk = next(j for j in d.junk if j.split == "train")
    assert junk.empty == (84,) and junk.special_only == (85,)
    # Memory from the longest real batch (16 tokens, truncated), not max_length x every row
    assert r.memory.max_length == 16 and r.memory.length_source == "longest batch"
    text = r.text()
    assert "|---- max_length 16" in text and "2 rows, " in text
    assert "Suggested max_length: 32 (covers 99% of training rows; 0 would be truncated)" in text
    assert "longest batch 16 -> 28 tokens per row; peak memory " in text
    assert "exact duplicates within train: 1 rows" in text
    assert "1 empty or whitespace-only rows (84)" in text and "special tokens only (85)" in text
    html = r._repr_html_()
    assert "<svg" in html and "max_length 16" in html
    assert json.loads(r.to_json())["data"]["duplicates"]["train_eval"] == 1
    fig = r.plot()
    assert len(fig.axes) == 2  # train and eval panels


def test_imbalance_suggests_class_weights_auto(fast_cfg, tmp_path):
    from nbtrain.preflight import inspect

    rows = [(t, "neg") for t, _ in make_texts(60, 0)] + [(t, "pos") for t, _ in make_texts(12, 1)]
    cfg = dict(fast_cfg, data={"train": _write(tmp_path / "t.csv", rows), "eval_split": 0})
    r = inspect(cfg, timing=False)
    assert r.data.labels.imbalance == 5.0 and r.data.labels.weights == (0.6, 3.0)
    assert "set class_weights: auto (weights 0.6, 3" in r.text()


def test_unseen_eval_label_is_reported_not_a_traceback(fast_cfg, tmp_path, capsys):
    from nbtrain.cli import main
    from nbtrain.preflight import inspect

    train = _write(tmp_path / "t.csv", make_texts(40, 0))
    dev = _write(tmp_path / "d.csv", make_texts(6, 1) + [("odd film", "meh"), ("odd", "meh")])
    r = inspect(dict(fast_cfg, data={"train": train, "eval": dev}), timing=False)
    assert r.error and "meh" in r.error
    assert r.data.labels.unseen_in_train == {"meh": 2}
    assert "Eval labels the training data does not have: 'meh' (2 rows)" in r.text()
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dict(fast_cfg, data={"train": train, "eval": dev})))
    assert main(["run", str(path), "--dry-run"]) == 2
    assert "== The run would stop ==" in capsys.readouterr().out


def test_rows_without_a_label_stop_the_dry_run_and_are_named(fast_cfg, tmp_path):
    from nbtrain.preflight import inspect

    rows = make_texts(40, 0)
    rows[5] = (rows[5][0], "")
    rows[9] = (rows[9][0], "")
    r = inspect(dict(fast_cfg, data={"train": _write(tmp_path / "t.csv", rows)}), timing=False)
    assert r.error and "rows 5, 9" in r.error
    assert r.data.labels.missing == {"train": [5, 9]}
    assert r.data.labels.counts["train"] == {"neg": 20, "pos": 18}  # rows 5 and 9 were pos
    text = r.text()
    assert "== The run would stop ==" in text
    assert "train: 2 rows without a label (rows 5, 9)." in text


def test_time_estimate_times_real_steps_and_leaves_the_model_alone(fast_cfg, known_data, tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    from nbtrain.preflight import inspect

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    from nbtrain.config import load_config
    from nbtrain.config.refs import Ref

    r = inspect(load_config(dict(fast_cfg, data=known_data, model=Ref("m", model))))
    t = r.time
    assert t is not None, r.time_error
    assert t.optimizer_steps == 12 and t.micro_batches == 12 and t.evals == 2  # 86 rows / 16, x2
    assert len(t.measured) == 2 and all(m.seconds > 0 for m in t.measured)
    assert t.measured[0].tokens == t.batch_max_tokens and t.total_s > t.train_s > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())
    assert "Estimated training time" in r.text()


# -- language-model data: template, label mask, rows with nothing to train ---------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("m") / "llama")


def _chat(user: str, answer: str) -> dict:
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def test_chat_preview_and_rows_cut_to_nothing_are_dropped_and_named(llama, tmp_path):
    import datasets

    from nbtrain.preflight import inspect

    rows = [_chat("colour of sky?", "blue") for _ in range(10)]
    long_user = "the sky is blue . " * 20  # the answer lies past max_length
    rows[3] = _chat(long_user, "blue")
    rows[7] = _chat(long_user, "green")
    cfg = {
        "model": str(llama),
        "data": {"train": "{ds}", "max_length": 32, "eval_split": 0},
        "task": "causal-lm",
        "runs_dir": str(tmp_path / "runs"),
        "batch_size": 4,
    }
    from nbtrain.config import load_config
    from nbtrain.config.refs import Ref

    ds = datasets.Dataset.from_list(rows)
    cfg["data"]["train"] = Ref("ds", ds)
    r = inspect(load_config(cfg), timing=False)
    assert r.data.dropped == {"train": [3, 7]}
    assert r.train_rows == 8
    assert any("Dropped 2 train rows" in n and "rows 3, 7" in n for n in r.notices)
    p = r.data.preview
    assert p.text.startswith("<|user|>colour of sky?<|end|><|assistant|>blue")
    trained = "".join(t for t, on in zip(p.tokens, p.trained) if on)
    assert "blue" in trained.replace("Ġ", "") and not any(p.trained[:3])
    assert 0 < p.n_trained < p.n_tokens
    text = r.text()
    assert "train: 2 rows have no token left to train on" in text
    # The text form marks the trained tokens [like this] and leaves the masked ones bare.
    marked = " ".join(f"[{t}]" if on else t for t, on in zip(p.tokens, p.trained))
    assert "(in [brackets]; the rest is masked, -100)" in text and "  " + marked in text
    assert f" [{p.tokens[-1]}]" in marked and not marked.startswith("[")
    assert "background:#c8f0c8" in r._repr_html_()  # trained tokens coloured

    every = Ref("ds", datasets.Dataset.from_list([_chat(long_user, "blue")] * 4))
    from nbtrain.errors import DataError

    with pytest.raises(DataError, match="all labels are -100"):
        inspect(load_config(dict(cfg, data=dict(cfg["data"], train=every))), timing=False)


def test_seq2seq_preview_trains_the_target_tokens_only(tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from nbtrain.config import load_config
    from nbtrain.config.refs import Ref
    from nbtrain.preflight import inspect
    from tests.tiny_models import COLOURS, build_tiny_t5

    rows = [{"source": f"colour of {k}", "target": v} for k, v in COLOURS.items()] * 2
    t5 = build_tiny_t5(tmp_path / "t5", [f"{r['source']} {r['target']}" for r in rows])
    cfg = {
        "model": str(t5),
        "data": {"train": Ref("ds", datasets.Dataset.from_list(rows)), "eval_split": 0},
        "task": "seq2seq",
        "runs_dir": str(tmp_path / "runs"),
        "batch_size": 4,
    }
    r = inspect(load_config(cfg), timing=False)
    p = r.data.preview
    assert p is not None, "no label-mask preview for seq2seq"
    first = rows[0]
    assert p.text == f"{first['source']}\n→ {first['target']}"
    tok = AutoTokenizer.from_pretrained(str(t5))
    source = tok.convert_ids_to_tokens(tok(first["source"])["input_ids"])
    target = tok.convert_ids_to_tokens(tok(text_target=first["target"])["input_ids"])
    assert list(p.tokens) == [*source, "→", *target]
    assert list(p.trained) == [False] * (len(source) + 1) + [True] * len(target)
    assert p.n_trained == len(target) and "What is trained (label mask)" in r.text()


# -- class_weights: auto ----------------------------------------------------------------------


def test_class_weights_auto_is_accepted_applied_and_changes_the_loss(fast_cfg, tmp_path):
    import torch

    from nbtrain.config import load_config
    from nbtrain.engine.data import load_raw
    from nbtrain.engine.tasks import get_task
    from nbtrain.errors import ConfigError

    rows = [(t, "neg") for t, _ in make_texts(30, 0)] + [(t, "pos") for t, _ in make_texts(10, 1)]
    data = {"train": _write(tmp_path / "t.csv", rows), "eval_split": 0}
    cfg = load_config(dict(fast_cfg, data=data, class_weights="auto"))
    assert cfg.class_weights == "auto"
    with pytest.raises(ConfigError, match="class_weights"):
        load_config(dict(fast_cfg, class_weights="balanced"))

    task = get_task("text-classification", cfg)
    prepared = task.prepare(load_raw(cfg.data, seed=0))
    assert task.class_weights == [40 / 60, 2.0]
    assert any("class_weights: auto -> neg 0.6667, pos 2" in n for n in prepared.notices)
    loss_fn = task.compute_loss_func()
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.5]])
    labels = torch.tensor([1, 1, 0])
    weighted = loss_fn({"logits": logits}, labels)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    expected = torch.nn.functional.cross_entropy(
        logits, labels, weight=torch.tensor([40 / 60, 2.0])
    )
    assert torch.isclose(weighted, expected) and not torch.isclose(weighted, plain)


# -- the run records its data -----------------------------------------------------------------


def test_a_training_run_records_its_data_in_env_json_and_the_card(fast_cfg, known_data):
    import nbtrain

    cfg = dict(fast_cfg, data=known_data, epochs=1, name="data-card")
    result = nbtrain.finetune(cfg, display="none")
    env = json.loads((result.output_dir / "env.json").read_text())
    train = env["data"]["lengths"][0]
    assert (train["split"], train["truncated_rows"], train["max"]) == ("train", 2, 28)
    assert env["data"]["duplicates"]["within_train"] == 1
    card = (result.output_dir / "card.html").read_text()
    assert "train tokens" in card and "2 truncated at 16" in card
