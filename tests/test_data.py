"""Data sources, column mapping, labels, eval split and data errors (no training)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import nbtrain
from nbtrain.config import Ref, load_config
from nbtrain.engine.runner import prepare
from nbtrain.events import EventBus

from .conftest import make_texts


def prep(tiny_bert, **data):
    cfg = load_config(model=str(tiny_bert), data=data)
    return prepare(cfg, EventBus())


def rows(n=40, seed=0, labels=("neg", "pos")):
    return make_texts(n, seed, labels)


@pytest.fixture
def files(tmp_path):
    r = rows()
    df = pd.DataFrame(r, columns=["text", "label"])
    out = {}
    df.to_csv(tmp_path / "d.csv", index=False)
    out["csv"] = tmp_path / "d.csv"
    df.to_csv(tmp_path / "d.tsv", index=False, sep="\t")
    out["tsv"] = tmp_path / "d.tsv"
    (tmp_path / "d.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "label": lab}) for t, lab in r)
    )
    out["jsonl"] = tmp_path / "d.jsonl"
    (tmp_path / "d.json").write_text(json.dumps([{"text": t, "label": lab} for t, lab in r]))
    out["json"] = tmp_path / "d.json"
    df.to_parquet(tmp_path / "d.parquet")
    out["parquet"] = tmp_path / "d.parquet"
    (tmp_path / "nohead.tsv").write_text("\n".join(f"{lab}\t{t}" for t, lab in r) + "\n")
    out["nohead"] = tmp_path / "nohead.tsv"
    folder = tmp_path / "folder"
    folder.mkdir()
    df.iloc[:30].to_csv(folder / "train.csv", index=False)
    df.iloc[30:].to_csv(folder / "test.csv", index=False)
    out["folder"] = folder
    return out


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_file_sources(tiny_bert, files, kind):
    p = prep(tiny_bert, train=str(files[kind]))
    assert p.labels == ["neg", "pos"]
    assert len(p.train) + len(p.eval) == 40  # eval split held out of train
    assert {"input_ids", "labels", "length"} <= set(p.train.column_names)


def test_prefixed_source(tiny_bert, files, tmp_path):
    odd = tmp_path / "data.txtdump"
    odd.write_text(files["csv"].read_text())
    p = prep(tiny_bert, train=f"csv:{odd}")
    assert len(p.train) == 36


def test_headerless_by_position(tiny_bert, files):
    p = prep(tiny_bert, train=str(files["nohead"]), text=1, label=0)
    assert p.labels == ["neg", "pos"] and len(p.train) == 36


@pytest.mark.parametrize("header", ["sentence\tlabel\n", ""])
def test_tab_separated_txt_file(tiny_bert, tmp_path, header):
    """`sentence<TAB>0` in a .txt file, with or without a header row, reads as two columns."""
    path = tmp_path / "sst.txt"
    lines = [f"{t}\t{int(lab == 'pos')}" for t, lab in rows()]
    path.write_text(header + "\n".join(lines) + "\n")
    data = {"text": "sentence", "label": "label"} if header else {}
    p = prep(tiny_bert, train=str(path), **data)
    assert p.labels == ["0", "1"]
    assert len(p.train) + len(p.eval) == 40  # no row lost to a header, none taken as one
    by_position = prep(tiny_bert, train=str(path), text=0, label=1)
    assert len(by_position.train) + len(by_position.eval) == 40


def test_txt_file_of_plain_lines_stays_text(tmp_path):
    from nbtrain.engine.data import load_raw

    path = tmp_path / "corpus.txt"
    path.write_text("a first line, with a comma\nand a second\n")
    raw = load_raw(load_config(model="m", data={"train": str(path)}).data, seed=0)
    assert raw.train.column_names == ["text"] and len(raw.train) == 2


def test_folder_uses_its_splits(tiny_bert, files):
    p = prep(tiny_bert, train=str(files["folder"]))
    assert len(p.train) == 30 and len(p.eval) == 10


def test_saved_dataset_folder(tiny_bert, tmp_path):
    import datasets

    d = datasets.Dataset.from_dict(
        {"text": [t for t, _ in rows()], "label": [lab for _, lab in rows()]}
    )
    d.save_to_disk(str(tmp_path / "saved"))
    p = prep(tiny_bert, train=str(tmp_path / "saved"), eval_split=0.25)
    assert len(p.eval) == 10


def test_dataframe_and_datasets_objects(tiny_bert):
    import datasets

    df = pd.DataFrame(rows(), columns=["sentence", "y"])
    p = prep(tiny_bert, train=Ref("df", df), text="sentence", label="y", eval_split=0)
    assert p.eval is None and len(p.train) == 40
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_pandas(df.iloc[:30]),
            "validation": datasets.Dataset.from_pandas(df.iloc[30:]),
        }
    )
    p = prep(tiny_bert, train=dd, text="sentence", label="y")
    assert len(p.train) == 30 and len(p.eval) == 10


def test_string_labels_map_to_ids_and_stratified_split(tiny_bert):
    df = pd.DataFrame(rows(100, labels=("negative", "positive")), columns=["text", "label"])
    p = prep(tiny_bert, train=Ref("df", df), eval_split=0.2)
    assert p.labels == ["negative", "positive"]
    counts = pd.Series(p.eval["labels"]).value_counts()
    assert counts.to_dict() == {0: 10, 1: 10}  # stratified
    # the same seed gives the same split
    again = prep(tiny_bert, train=Ref("df", df), eval_split=0.2)
    assert again.eval["input_ids"] == p.eval["input_ids"]


def test_noncontiguous_int_labels(tiny_bert):
    df = pd.DataFrame({"text": [t for t, _ in rows(30)], "label": [1, 3, 5] * 10})
    p = prep(tiny_bert, train=Ref("df", df), eval_split=0)
    assert p.labels == ["1", "3", "5"]
    assert set(p.train["labels"]) == {0, 1, 2}


def test_label_names_for_int_labels(tiny_bert):
    df = pd.DataFrame({"text": [t for t, _ in rows(20)], "label": [0, 1] * 10})
    cfg = load_config(
        model=str(tiny_bert), data={"train": Ref("df", df), "label_names": ["bad", "good"]}
    )
    assert prepare(cfg, EventBus()).labels == ["bad", "good"]


def test_multilabel_and_regression(tiny_bert):
    texts = [t for t, _ in rows(20)]
    df = pd.DataFrame({"text": texts, "label": [["a"], ["b"], ["a", "b"], []] * 5})
    p = prep(tiny_bert, train=Ref("df", df), eval_split=0)
    assert p.labels == ["a", "b"] and p.train["labels"][2] == [1.0, 1.0]
    df = pd.DataFrame({"text": texts, "label": [0.5, 1.25, 3.75, 2.0] * 5})
    p = prep(tiny_bert, train=Ref("df", df), eval_split=0)
    assert p.labels is None and p.train["labels"][1] == pytest.approx(1.25)


def test_dynamic_lengths_never_padded(tiny_bert, files):
    p = prep(tiny_bert, train=str(files["csv"]))
    lengths = [len(x) for x in p.train["input_ids"]]
    assert lengths == p.train["length"]
    assert len(set(lengths)) > 1 and max(lengths) < 64


def test_eval_is_sorted_by_length(tiny_bert, files):
    p = prep(tiny_bert, train=str(files["csv"]), eval_split=0.5)
    assert p.eval["length"] == sorted(p.eval["length"], reverse=True)


def test_max_length_truncates(tiny_bert, files):
    p = prep(tiny_bert, train=str(files["csv"]), max_length=5)
    assert max(p.train["length"]) == 5


# -- errors ------------------------------------------------------------------------------------


def data_error(tiny_bert, **data) -> str:
    with pytest.raises(nbtrain.ConfigError) as info:
        prep(tiny_bert, **data)
    return str(info.value)


def test_missing_file(tiny_bert, files):
    msg = data_error(tiny_bert, train=str(files["csv"].parent / "dd.csv"))
    assert "does not exist" in msg and "Did you mean 'd.csv'" in msg


def test_missing_column_lists_columns(tiny_bert, files):
    msg = data_error(tiny_bert, train=str(files["csv"]), text="sentence")
    assert "no column 'sentence'" in msg and "text, label" in msg


def test_empty_dataset(tiny_bert, tmp_path):
    (tmp_path / "e.csv").write_text("text,label\n")
    assert "no rows" in data_error(tiny_bert, train=str(tmp_path / "e.csv"))


def test_single_class(tiny_bert):
    df = pd.DataFrame({"text": ["a good film"] * 10, "label": ["pos"] * 10})
    assert "single class" in data_error(tiny_bert, train=Ref("df", df))


def test_unknown_eval_label(tiny_bert):
    tr = pd.DataFrame(rows(20), columns=["text", "label"])
    ev = pd.DataFrame({"text": ["so so"], "label": ["meh"]})
    msg = data_error(tiny_bert, train=Ref("tr", tr), eval=Ref("ev", ev))
    assert "'meh'" in msg and "neg, pos" in msg


def test_missing_labels_are_reported_not_dropped(tiny_bert):
    df = pd.DataFrame({"text": ["good", "bad", "fine"], "label": ["pos", None, "pos"]})
    assert "rows 1" in data_error(tiny_bert, train=Ref("df", df))


def test_head_with_other_label_count(tmp_path):
    from .conftest import build_tiny_bert

    model = build_tiny_bert(tmp_path / "clf3", num_labels=3)
    df = pd.DataFrame(rows(20), columns=["text", "label"])
    msg = data_error(model, train=Ref("df", df))
    assert "3 labels" in msg and "ignore_mismatched_sizes" in msg


def test_unusable_object(tiny_bert):
    assert "cannot use" in data_error(tiny_bert, train=Ref("x", 42))


# -- hub datasets: datasets.load_dataset with a dataset repository, and offline -------------


def _dataset_repo(root, rows_):
    """A dataset repository as on the hub (data files + README configs), in a local folder."""
    repo = root / "hub" / "reviews"
    (repo / "data").mkdir(parents=True)
    df = pd.DataFrame(rows_, columns=["text", "label"])
    df.iloc[:30].to_csv(repo / "data" / "train.csv", index=False)
    df.iloc[30:].to_csv(repo / "data" / "test.csv", index=False)
    df.iloc[:12].to_csv(repo / "data" / "small.csv", index=False)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        "  - {split: train, path: data/train.csv}\n  - {split: test, path: data/test.csv}\n"
        "- config_name: small\n  data_files:\n  - {split: train, path: data/small.csv}\n---\n"
    )
    return repo


def test_hub_dataset_splits_and_configs(tiny_bert, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _dataset_repo(tmp_path, rows())
    p = prep(tiny_bert, train="hf:hub/reviews")  # a DatasetDict: train, and test as eval
    assert (len(p.train), len(p.eval)) == (30, 10)
    p = prep(tiny_bert, train="hf:hub/reviews:train[:20]", eval="hf:hub/reviews:test")
    assert (len(p.train), len(p.eval)) == (20, 10)
    p = prep(tiny_bert, train="hf:hub/reviews/small:train", eval_split=0.25)  # owner/name/config
    assert len(p.train) + len(p.eval) == 12


def test_hub_dataset_offline_error(tiny_bert, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(nbtrain.DataError) as e:
        prep(tiny_bert, train="nbtrain-tests/no-such-dataset")
    msg = str(e.value)
    assert "could not load the hub dataset 'nbtrain-tests/no-such-dataset'" in msg
    assert "Offline?" in msg and "local file" in msg
    assert "\n" not in msg  # one paragraph, no traceback
