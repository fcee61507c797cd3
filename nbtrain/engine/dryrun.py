"""Dry run: check a config and its data, say what training would do, train nothing.

Used by ``%%finetune --dry-run``, ``nbtrain run --dry-run`` and ``nbtrain.inspect(config)``.
Loads the data and the tokenizer, tokenizes, and computes from the real tokenized rows: token
lengths and truncation, labels, duplicates and junk (:mod:`nbtrain.engine.report`), the peak
memory of the longest batch (:mod:`nbtrain.engine.memory`) and the run's time from a few timed
real steps (:mod:`nbtrain.engine.timing`). Creates no run folder. Returns data only: the text,
HTML, plot and JSON forms are :mod:`nbtrain.display.report`'s.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from nbtrain.config import Config, to_yaml
from nbtrain.engine.memory import MemoryEstimate
from nbtrain.engine.report import DataSummary
from nbtrain.engine.timing import TimeEstimate
from nbtrain.errors import ConfigError, DataError

#: How many tokenized training examples a report shows.
N_EXAMPLES = 3


@dataclass
class DryRunReport:
    """What a run would do and what its data holds (numbers only; see ``display.report``)."""

    config_yaml: str
    task: str
    train_rows: int
    eval_rows: int
    labels: list[str] | None
    max_length: int
    batch_size: int
    gradient_accumulation_steps: int
    steps_per_epoch: int
    total_steps: int
    examples: list[dict[str, Any]]
    notices: list[str] = field(default_factory=list)
    data: DataSummary | None = None
    memory: MemoryEstimate | None = None
    memory_error: str | None = None
    #: Peak memory with the suggested max_length (when it differs from the current one).
    suggested_memory_bytes: int | None = None
    time: TimeEstimate | None = None
    time_error: str | None = None
    #: The error a real run would stop on, when the data check found one (labels, text).
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able data (what ``nbtrain run --dry-run --json`` prints)."""
        out = asdict(self)
        if self.memory is not None:
            out["memory"]["total_bytes"] = self.memory.total_bytes
            out["memory"]["model_bytes"] = self.memory.model_bytes
            out["memory"]["fits"] = self.memory.fits
        if self.time is not None:
            out["time"]["total_s"] = self.time.total_s
        return out


def dry_run(cfg: Config, *, timing: bool = True) -> DryRunReport:
    """Validate ``cfg`` and its data and describe the run it would start.

    Args:
        cfg: the resolved config.
        timing: time a few real training steps for the time estimate (loads the weights).

    Raises:
        ConfigError: the config errors a real run raises before training. A data problem
            the label check explains (eval labels unseen in training, rows without a label) is
            returned as ``report.error`` with the label counts instead.
    """
    from nbtrain.engine.model import device_info, resolve_precision
    from nbtrain.engine.prepare import prepare, steps_per_epoch, total_steps
    from nbtrain.engine.report import data_summary, longest_batch
    from nbtrain.events import EventBus

    dev = device_info()
    try:
        prep = prepare(cfg, EventBus([]))
    except DataError as e:
        found = _raw_labels(cfg)
        if found is None:
            raise
        return _failed_report(cfg, str(e), found)
    n_train = len(prep.train)
    n_eval = len(prep.eval) if prep.eval is not None else 0
    report = DryRunReport(
        config_yaml=to_yaml(cfg),
        task=prep.task.name,
        train_rows=n_train,
        eval_rows=n_eval,
        labels=list(prep.labels) if prep.labels else None,
        max_length=prep.max_length,
        batch_size=int(cfg.per_device_train_batch_size),
        gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
        steps_per_epoch=steps_per_epoch(n_train, cfg),
        total_steps=total_steps(n_train, cfg),
        examples=_examples(prep),
        notices=list(prep.notices),
    )
    report.data = data_summary(prep)
    precision = resolve_precision(cfg.precision, dev, prep.model_config)  # impossible: ConfigError
    longest = longest_batch(prep, precision)
    report.memory, report.memory_error = _memory(cfg, prep, dev, longest)
    advice = report.data.advice
    if report.memory is not None and advice is not None and advice.change != "keep" and longest:
        at = advice.longest_batch_suggested
        at = -(-at // 8) * 8 if precision != "fp32" else at
        report.suggested_memory_bytes = report.memory.total_bytes + (
            _memory(cfg, prep, dev, at, suggest=False)[0].activations - report.memory.activations
        )
    if timing and report.memory is not None and report.memory.fits is not False:
        try:
            from nbtrain.engine.timing import estimate_time

            report.time = estimate_time(prep, dev, precision)
        except ConfigError:
            raise
        except Exception as e:  # the estimate is advice: never let it block a dry run
            report.time_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    elif timing:
        report.time_error = "not timed: the estimate says the run does not fit in memory"
    return report


def _examples(prep: Any) -> list[dict[str, Any]]:
    tok = prep.tokenizer
    out = []
    for i in range(min(N_EXAMPLES, len(prep.train))):
        row = prep.train[i]
        ids = row.get("input_ids") or []
        tokens = tok.convert_ids_to_tokens(ids) if tok is not None else [str(t) for t in ids]
        label = row.get("labels")
        if isinstance(label, int) and prep.labels and 0 <= label < len(prep.labels):
            label = prep.labels[label]
        elif isinstance(label, list):
            label = f"{sum(1 for t in label if t != -100)} label tokens"
        out.append({"tokens": list(tokens), "n_tokens": len(ids), "label": label})
    return out


def _memory(
    cfg: Any, prep: Any, dev: Any, longest: int | None, suggest: bool = True
) -> tuple[MemoryEstimate | None, str | None]:
    """The peak-memory estimate at the longest batch (ConfigErrors a real run raises, raised)."""
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import check_hardware
    from nbtrain.engine.report import process_rss

    check_hardware(cfg, dev)
    model = None if isinstance(prep.model_source, str) else prep.model_source
    try:
        est = estimate_memory(
            cfg,
            prep.model_config,
            dev,
            task=prep.task.name,
            max_length=prep.max_length,
            model=model,
            longest_batch=longest,
            suggest=suggest,
            runtime_bytes=process_rss() if dev.kind != "cuda" else None,
        )
    except ConfigError:
        raise  # e.g. a lora target that matches nothing: the run would fail the same way
    except Exception as e:  # the estimate is advice: never let it block a dry run
        return None, f"{type(e).__name__}: {e}"
    return est, None


def memory_estimate(cfg: Any, prep: Any, device: Any = None) -> MemoryEstimate | None:
    """The estimate a dry run shows, for a prepared config (None when it cannot be made)."""
    from nbtrain.engine.model import device_info, resolve_precision
    from nbtrain.engine.report import longest_batch

    dev = device or device_info()
    precision = resolve_precision(cfg.precision, dev, prep.model_config)
    return _memory(cfg, prep, dev, longest_batch(prep, precision))[0]


# -- a data error explained by the labels -----------------------------------------------------


def _raw_labels(cfg: Config) -> Any:
    """Label counts from the data as given, when prepare() refused it (None: not labels)."""
    from nbtrain.engine.data import load_raw, resolve_column
    from nbtrain.engine.datastats import label_stats

    try:
        raw = load_raw(cfg.data, seed=cfg.seed)
        splits, missing = {}, {}
        for role, ds in (("train", raw.train), ("eval", raw.eval)):
            if ds is None:
                continue
            col = resolve_column(ds, cfg.data.label, what="label", role=role)
            values = ds[col]
            if values and isinstance(values[0], (list, tuple, float)):
                return None  # multi-label or regression: no class counts
            missing[role] = [i for i, v in enumerate(values) if v is None or v == ""]
            splits[role] = [str(v) for v in values if v is not None and v != ""]
    except ConfigError:
        return None
    names = sorted(set(splits.get("train", [])))
    stats = label_stats(names, splits, missing)
    if not stats.unseen_in_train and not stats.missing:
        return None
    return stats


def _failed_report(cfg: Config, message: str, labels: Any) -> DryRunReport:
    report = DryRunReport(
        config_yaml=to_yaml(cfg),
        task=cfg.task or "text-classification",
        train_rows=sum(labels.counts.get("train", {}).values()),
        eval_rows=sum(labels.counts.get("eval", {}).values()),
        labels=list(labels.names),
        max_length=int(cfg.data.max_length or 0),
        batch_size=int(cfg.per_device_train_batch_size),
        gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
        steps_per_epoch=0,
        total_steps=0,
        examples=[],
        error=message,
    )
    report.data = DataSummary(task=report.task, max_length=report.max_length, model_limit=None)
    report.data.labels = labels
    return report


__all__ = ["DryRunReport", "dry_run", "memory_estimate"]
