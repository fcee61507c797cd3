"""Read training data from wherever it is: hub, local files and folders, notebook objects.

Every path ends in ``datasets.Dataset`` objects; file-backed data goes through
``datasets.load_dataset`` so tokenization is cached between runs.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtrain.config.refs import describe, unwrap
from nbtrain.errors import DataError, did_you_mean

_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}
_PREFIX = re.compile(r"^(csv|tsv|json|jsonl|parquet|text|txt|hf|hub):(.+)$", re.S)
_HUB_SPLIT = re.compile(r"^(?P<name>[^:\[\]]+?)(?::(?P<split>[A-Za-z0-9_\-]+(?:\[[^\]]*\])?))?$")


@dataclass
class RawData:
    """Untokenized train/eval datasets and where they came from."""

    train: Any
    eval: Any | None
    train_source: str
    eval_source: str | None
    eval_is_split: bool = False


def load_raw(data_cfg: Any, *, seed: int) -> RawData:
    """Load ``data.train`` and ``data.eval`` as ``datasets.Dataset`` objects."""
    headerless = _headerless(data_cfg)
    train_obj = _load_source(
        data_cfg.train, role="train", header=data_cfg.header, headerless=headerless
    )
    train, extra_eval = _pick_split(train_obj, role="train", source=data_cfg.train)
    eval_ds = None
    if data_cfg.eval is not None:
        eval_obj = _load_source(
            data_cfg.eval, role="eval", header=data_cfg.header, headerless=headerless
        )
        eval_ds, _ = _pick_split(eval_obj, role="eval", source=data_cfg.eval)
    elif extra_eval is not None:
        eval_ds = extra_eval
    if data_cfg.limit:
        train = train.select(range(min(data_cfg.limit, len(train))))
    if len(train) == 0:
        raise DataError(f"The training data {describe_source(data_cfg.train)} has no rows.")
    if eval_ds is not None and len(eval_ds) == 0:
        raise DataError(f"The eval data {describe_source(data_cfg.eval)} has no rows.")
    return RawData(
        train=train,
        eval=eval_ds,
        train_source=describe_source(data_cfg.train),
        eval_source=describe_source(data_cfg.eval) if data_cfg.eval is not None else None,
    )


def describe_source(source: Any) -> str:
    if isinstance(source, str):
        return repr(source)
    return describe(source)


def _headerless(data_cfg: Any) -> bool:
    if data_cfg.header is not None:
        return not data_cfg.header
    return isinstance(data_cfg.text, int) or isinstance(data_cfg.label, int)


def _load_source(source: Any, *, role: str, header: bool | None, headerless: bool) -> Any:
    obj = unwrap(source)
    if not isinstance(obj, (str, os.PathLike)):
        return _from_object(obj, role)
    text = str(obj).strip()
    fmt = None
    m = _PREFIX.match(text)
    if m:
        fmt, text = m.group(1), m.group(2).strip()
        fmt = {"tsv": "csv", "jsonl": "json", "txt": "text", "hf": "hub"}.get(fmt, fmt)
        if m.group(1) == "tsv" and not text.endswith((".tsv", ".tab")):
            return _load_file(Path(text), "csv", headerless=headerless, delimiter="\t")
    if fmt == "hub":
        return _load_hub(text, role)
    path = Path(text).expanduser()
    if path.is_file():
        fmt = fmt or _FORMATS.get(path.suffix.lower())
        if fmt == "text" and m is None:  # a .txt file: lines of text, or tab-separated columns
            columns = _sniff_tabs(path)
            if columns is not None:
                names = None
                if header is None:  # not said: the first row tells (columns by position too)
                    headerless = not _looks_like_header(columns)
                if headerless and len(columns[0]) == 2:
                    names = ["text", "label"]  # `sentence<TAB>label`: what the defaults look for
                return _load_file(path, "csv", headerless=headerless, delimiter="\t", names=names)
        return _load_file(path, fmt, headerless=headerless)
    if path.is_dir():
        return _load_folder(path)
    if fmt is not None or path.suffix.lower() in _FORMATS or text.startswith((".", "/", "~")):
        near = ""
        if path.parent.is_dir():
            near = did_you_mean(path.name, [p.name for p in path.parent.iterdir()])
        raise DataError(
            f"data.{role}: the file {text!r} does not exist (looked in {Path.cwd()}).{near}"
        )
    return _load_hub(text, role)


def _sniff_tabs(path: Path, sample: int = 20) -> list[list[str]] | None:
    """The first rows split on tabs when every sampled line has the same number (>= 1) of tabs
    (``sentence<TAB>label``), else None (plain text, one example per line)."""
    rows: list[list[str]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if line:
                rows.append(line.split("\t"))
            if len(rows) >= sample:
                break
    if not rows or len(rows[0]) < 2 or any(len(r) != len(rows[0]) for r in rows):
        return None
    return rows


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _looks_like_header(rows: list[list[str]]) -> bool:
    """Whether the first row names the columns: no numbers in it where the rows below have
    numbers, and no field that reads like a sentence."""
    first, rest = rows[0], rows[1:]
    if any(_is_number(v) or len(v.split()) > 3 for v in first):
        return False
    numeric_below = [
        i for i in range(len(first)) if rest and all(_is_number(r[i]) for r in rest if r[i])
    ]
    return bool(numeric_below) or not rest or all(v.isidentifier() for v in first)


def _from_object(obj: Any, role: str) -> Any:
    import datasets

    if isinstance(obj, (datasets.Dataset, datasets.DatasetDict)):
        return obj
    if hasattr(obj, "to_dict") and hasattr(obj, "columns") and hasattr(obj, "index"):
        return datasets.Dataset.from_pandas(obj, preserve_index=False)
    if isinstance(obj, dict) and obj and all(isinstance(v, (list, tuple)) for v in obj.values()):
        return datasets.Dataset.from_dict({k: list(v) for k, v in obj.items()})
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        return datasets.Dataset.from_list(obj)
    raise DataError(
        f"data.{role}: cannot use {describe(obj)} as data; pass a pandas DataFrame, a "
        "datasets.Dataset or DatasetDict, a dict of columns, a list of row dicts, a file path or "
        "a hub dataset name."
    )


def _load_file(
    path: Path,
    fmt: str | None,
    *,
    headerless: bool,
    delimiter: str | None = None,
    names: list[str] | None = None,
) -> Any:
    import datasets

    if fmt is None:
        raise DataError(
            f"Cannot tell the format of {str(path)!r} from its extension; prefix it like "
            "'csv:path', 'json:path', 'parquet:path' or 'text:path'."
        )
    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        kwargs["delimiter"] = delimiter or (
            "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
        )
        if kwargs["delimiter"] == "\t":
            kwargs["quoting"] = csv.QUOTE_NONE  # TSV text keeps its quote characters
        if headerless:
            with open(path, encoding="utf-8", newline="") as fh:
                first = fh.readline().rstrip("\r\n")
            n = len(first.split(kwargs["delimiter"])) if first else 1
            kwargs["column_names"] = names or [str(i) for i in range(n)]
            kwargs["header"] = None
    try:
        ds = datasets.load_dataset(fmt, data_files={"data": str(path)}, split="data", **kwargs)
    except Exception as e:
        if "corresponds to no data" in str(e):
            raise DataError(
                f"The file {str(path)!r} has no rows."
            ) from None  # datasets raises many types; turn them into one clear message
        raise DataError(f"Could not read {str(path)!r} as {fmt}: {_first_line(e)}") from None
    return ds


def _load_folder(path: Path) -> Any:
    import datasets

    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return datasets.load_from_disk(str(path))
    try:
        return datasets.load_dataset(str(path))
    except Exception as e:
        raise DataError(
            f"Could not read the folder {str(path)!r} as a dataset: {_first_line(e)}. A folder "
            "holds data files (train.csv, test.csv, ...) or a dataset saved with save_to_disk."
        ) from None


def _load_hub(text: str, role: str) -> Any:
    import datasets

    m = _HUB_SPLIT.match(text)
    if not m:
        raise DataError(
            f"data.{role}: {text!r} is neither an existing file nor a hub dataset name like "
            "'imdb' or 'yelp_review_full:train[:2000]'."
        )
    name, split = m.group("name"), m.group("split")
    config_name = None
    if "/" in name and name.count("/") == 2:  # owner/dataset/config
        owner, ds_name, config_name = name.split("/")
        name = f"{owner}/{ds_name}"
    try:
        return datasets.load_dataset(name, config_name, split=split)
    except Exception as e:
        raise DataError(
            f"data.{role}: could not load the hub dataset {text!r}: {_first_line(e)}. Offline? "
            "Use a local file (csv/tsv/json/parquet) or a DataFrame from the notebook."
        ) from None


def _pick_split(obj: Any, *, role: str, source: Any) -> tuple[Any, Any | None]:
    """A DatasetDict gives its train split (and validation/test as eval when none is given)."""
    import datasets

    if not isinstance(obj, datasets.DatasetDict):
        return obj, None
    splits = list(obj.keys())
    want = ["train"] if role == "train" else ["validation", "valid", "dev", "test", "eval"]
    for s in want:
        if s in obj:
            other = None
            if role == "train":
                for e in ("validation", "valid", "dev", "test"):
                    if e in obj:
                        other = obj[e]
                        break
            return obj[s], other
    if len(splits) == 1:
        return obj[splits[0]], None
    raise DataError(
        f"data.{role}: {describe_source(source)} has splits {', '.join(splits)}; name one, e.g. "
        f"'{source if isinstance(source, str) else 'name'}:{splits[0]}'."
    )


def resolve_column(ds: Any, column: Any, *, what: str, role: str) -> str:
    """The dataset column a config names (by name, or by 0-based position)."""
    names = list(ds.column_names)
    if isinstance(column, int):
        if str(column) in names:
            return str(column)
        if 0 <= column < len(names):
            return names[column]
        raise DataError(
            f"data.{what}: column position {column} is out of range; the {role} data has "
            f"{len(names)} columns ({', '.join(names)})."
        )
    if column in names:
        return column
    lower = {n.lower(): n for n in names}
    if str(column).lower() in lower:
        return lower[str(column).lower()]
    raise DataError(
        f"data.{what}: the {role} data has no column {column!r}.{did_you_mean(column, names)} "
        f"Its columns are: {', '.join(names)}. Set data.{what} to one of them."
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
