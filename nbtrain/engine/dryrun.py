"""Dry run: check a config and its data, show what training would do, train nothing.

Used by ``%%finetune --dry-run`` and ``nbtrain run --dry-run``. Loads the data, the tokenizer and
the model's config (not its weights), tokenizes, and reports. Creates no run folder. Never prints:
the report has a ``text()`` and an HTML form and callers show it.

A report is a list of :class:`Section` objects; later checks (e.g. a memory estimate) append
their own section to ``report.sections`` and both forms pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

from nbtrain.config import Config, to_yaml
from nbtrain.errors import ConfigError

#: How many tokenized training examples a report shows.
N_EXAMPLES = 3


@dataclass
class Section:
    """One titled part of a dry-run report, as lines of text (``html`` overrides the HTML form)."""

    title: str
    lines: list[str] = field(default_factory=list)
    html: str | None = None

    def text(self) -> str:
        return "\n".join([f"== {self.title} =="] + self.lines)

    def to_html(self) -> str:
        body = (
            self.html if self.html is not None else f"<pre>{escape(chr(10).join(self.lines))}</pre>"
        )
        return f"<h4>{escape(self.title)}</h4>{body}"


@dataclass
class DryRunReport:
    """What a run would do. ``sections`` is open for more checks to append to."""

    config_yaml: str
    task: str
    train_rows: int
    eval_rows: int
    labels: list[str] | None
    max_length: int
    steps_per_epoch: int
    total_steps: int
    examples: list[dict[str, Any]]
    notices: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def text(self) -> str:
        return "\n\n".join(s.text() for s in self.sections)

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        return (
            "<div><b>nbtrain dry run</b> — nothing was trained"
            + "".join(s.to_html() for s in self.sections)
            + "</div>"
        )


def dry_run(cfg: Config) -> DryRunReport:
    """Validate ``cfg`` and its data and describe the run it would start.

    Raises:
        ConfigError: the same errors a real run would raise before training (DataError included).
    """
    from nbtrain.engine.runner import prepare, steps_per_epoch, total_steps
    from nbtrain.events import EventBus

    prep = prepare(cfg, EventBus([]))
    n_train = len(prep.train)
    n_eval = len(prep.eval) if prep.eval is not None else 0
    examples = _examples(prep)
    report = DryRunReport(
        config_yaml=to_yaml(cfg),
        task=prep.task.name,
        train_rows=n_train,
        eval_rows=n_eval,
        labels=list(prep.labels) if prep.labels else None,
        max_length=prep.max_length,
        steps_per_epoch=steps_per_epoch(n_train, cfg),
        total_steps=total_steps(n_train, cfg),
        examples=examples,
        notices=list(prep.notices),
    )
    report.sections = _sections(report, cfg)
    report.sections.insert(1, memory_section(cfg, prep))  # parameters, peak memory, fixes
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
        out.append({"tokens": list(tokens), "n_tokens": len(ids), "label": label})
    return out


def _sections(r: DryRunReport, cfg: Config) -> list[Section]:
    data = [
        f"task            {r.task}",
        f"train rows      {r.train_rows}",
        f"eval rows       {r.eval_rows}",
        f"labels          {', '.join(map(str, r.labels)) if r.labels else '-'}",
        f"max_length      {r.max_length}",
        f"batch size      {cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} "
        "accumulation",
        f"steps/epoch     {r.steps_per_epoch}",
        f"total steps     {r.total_steps}",
    ]
    data += [f"note: {n}" for n in r.notices]
    examples = []
    for i, ex in enumerate(r.examples, 1):
        examples.append(f"[{i}] label={ex['label']}  ({ex['n_tokens']} tokens)")
        examples.append("    " + " ".join(ex["tokens"]))
    return [
        Section("Data and steps", data),
        Section("Tokenized examples", examples or ["(no rows)"]),
        Section("Resolved config", r.config_yaml.rstrip().splitlines()),
    ]


def memory_section(cfg: Any, prep: Any, device: Any = None) -> Any:
    """The dry-run report's "Parameters and memory" section for a prepared config.

    Raises the ConfigErrors a real run raises before training (impossible precision, 8-bit
    optimizer or 4-bit loading without bitsandbytes and a GPU).
    """
    from nbtrain.engine.memory import estimate_memory
    from nbtrain.engine.model import check_hardware, device_info, resolve_precision

    dev = device or device_info()
    resolve_precision(cfg.precision, dev)
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
        )
    except ConfigError:
        raise  # e.g. a lora target that matches nothing: the run would fail the same way
    except Exception as e:  # the estimate is advice: never let it block a dry run
        return Section("Parameters and memory", [f"(no estimate: {type(e).__name__}: {e})"])
    return Section("Parameters and memory", est.text().splitlines(), html=est._repr_html_())


__all__ = ["DryRunReport", "Section", "dry_run"]
