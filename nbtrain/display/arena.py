"""The arena's two forms: an HTML table (a column per model) and plain text."""

from __future__ import annotations

from html import escape
from typing import Any

from nbtrain.display.html import CELL, HEAD, wrap


class ArenaView:
    """What ``nbtrain.arena`` returns: the outputs of each model for the same prompts.

    ``outputs[label]`` holds one text per prompt; ``_repr_html_`` and ``repr`` show the table.
    """

    def __init__(self, result: Any) -> None:
        self.result = result
        self.prompts: list[str] = list(result.prompts)
        self.models: list[str] = [c.label for c in result.contenders]
        self.outputs: dict[str, list[str]] = {c.label: list(c.outputs) for c in result.contenders}
        self.settings: dict[str, Any] = dict(result.settings)

    def _settings_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items())

    def to_records(self) -> list[dict[str, str]]:
        """One dict per prompt: ``{"prompt": ..., <model>: output, ...}`` (for a DataFrame)."""
        return [
            {"prompt": p, **{m: self.outputs[m][i] for m in self.models}}
            for i, p in enumerate(self.prompts)
        ]

    def __repr__(self) -> str:
        lines = [f"Arena: {len(self.models)} models, {len(self.prompts)} prompts "
                 f"({self._settings_text()})"]  # fmt: skip
        for c in self.result.contenders:
            lines.append(f"  {c.label}: {c.task}, {c.source}")
        width = max(len(m) for m in self.models) if self.models else 0
        for i, p in enumerate(self.prompts):
            lines.append("")
            lines.append(f"[{i + 1}] {p}")
            for m in self.models:
                lines.append(f"  {m.ljust(width)} | {self.outputs[m][i]}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = f"<th style='{HEAD}text-align:left'>prompt</th>" + "".join(
            f"<th style='{HEAD}text-align:left' title='{escape(c.source)}'>{escape(c.label)}"
            f"<div style='font-weight:400;opacity:.7'>{escape(c.task)}</div></th>"
            for c in self.result.contenders
        )
        cell = f"{CELL}text-align:left;vertical-align:top;white-space:pre-wrap;max-width:320px"
        rows = "".join(
            f"<tr><td style='{cell};opacity:.8'>{escape(p)}</td>"
            + "".join(f"<td style='{cell}'>{escape(self.outputs[m][i])}</td>" for m in self.models)
            + "</tr>"
            for i, p in enumerate(self.prompts)
        )
        return wrap(
            f"<div><b>Arena</b> · {len(self.prompts)} prompts · "
            f"<span style='opacity:.8'>{escape(self._settings_text())}</span></div>"
            "<table style='border-collapse:collapse;font-size:90%;margin:4px 0'>"
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )
