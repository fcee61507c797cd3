"""The checkpoint browser: ``nbtrain.browse()`` and ``%nbtrain checkpoints [NAME]``.

Runs and their checkpoints (step, epoch, eval metrics, size, best marked) from the run store, with
actions: resume, load-and-try, delete (best and newest protected, confirmed first), open the card.
Where widgets cannot be shown, the same table as HTML.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbtrain.display.frontend import fallback_message, widgets_available
from nbtrain.errors import ConfigError
from nbtrain.format import fmt_bytes, fmt_metrics
from nbtrain.runs import Checkpoint, RunInfo, list_checkpoints, list_runs, run_status
from nbtrain.ui.env import user_namespace


def browse(
    name: str | Path | None = None, runs_dir: str | Path = "runs", *, widgets: bool | None = None
) -> Any:
    """Browse runs and their checkpoints: resume, try, delete, open the card.

    Args:
        name: the run to open first (default: all runs, the newest selected). A folder that holds
            runs is read as ``runs_dir``; a run's own folder opens that run.
        runs_dir: the folder holding one sub-folder per run.
        widgets: force (True) or refuse (False) the widget browser; None detects the frontend.

    Returns:
        A :class:`CheckpointBrowser`, or a :class:`CheckpointTable` (HTML) without widgets.
    """
    run: str | None = None
    if name is not None:
        path = Path(name)
        if (path / "config.yaml").is_file():
            runs_dir, run = path.parent, path.name
        elif path.is_dir() and not (Path(runs_dir) / str(name)).is_dir():
            runs_dir = path
        else:
            run = str(name)
    ok, reason = widgets_available() if widgets is None else (widgets, "widgets=False was given")
    if not ok:
        return CheckpointTable(runs_dir, run, reason=reason)
    return CheckpointBrowser(runs_dir, run)


def flags(c: Checkpoint) -> str:
    out = []
    if c.is_best:
        out.append("★ best")
    if c.is_newest:
        out.append("newest")
    if not c.complete:
        out.append("incomplete")
    return ", ".join(out)


def _runs(runs_dir: str | Path, run: str | None) -> list[RunInfo]:
    runs = list_runs(runs_dir)
    if run is not None:
        if not any(r.name == run for r in runs):
            from nbtrain.runs import find_run

            find_run(run, runs_dir)  # raises the store's "no run named" with a did-you-mean
        runs = [r for r in runs if r.name == run]
    return runs


class CheckpointTable:
    """The runs and checkpoints as an HTML table (and as text in a terminal)."""

    def __init__(self, runs_dir: str | Path = "runs", run: str | None = None, reason: str = ""):
        self.runs_dir = Path(runs_dir)
        self.runs = _runs(runs_dir, run)
        self.reason = reason

    def _rows(self) -> list[tuple[RunInfo, list[Checkpoint]]]:
        return [(r, list_checkpoints(r.path)) for r in self.runs]

    def __repr__(self) -> str:
        lines = [fallback_message(self.reason)] if self.reason else []
        if not self.runs:
            lines.append(f"No runs in {str(self.runs_dir)!r}.")
        for r, ckpts in self._rows():
            lines.append(f"{r.name}: {r.status}, step {r.steps}, {fmt_bytes(r.size_bytes)}")
            for c in ckpts:
                epoch = f"{c.epoch:.2f}" if c.epoch is not None else "-"
                lines.append(
                    f"  {c.name:<18} step {c.step:>6}  epoch {epoch:>5}  "
                    f"{fmt_bytes(c.size_bytes):>9}  {fmt_metrics(c.metrics)}  {flags(c)}".rstrip()
                )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = ["<div class='nbt-browser-html'>"]
        if self.reason:
            parts.append(f"<p>{html.escape(fallback_message(self.reason))}</p>")
        if not self.runs:
            parts.append(f"<p>No runs in <code>{html.escape(str(self.runs_dir))}</code>.</p>")
        for r, ckpts in self._rows():
            card = r.path / "card.html"
            link = f" · <a href='{html.escape(str(card))}'>card</a>" if card.is_file() else ""
            parts.append(
                f"<h4>{html.escape(r.name)} <small>{html.escape(r.status)}, step {r.steps}, "
                f"{fmt_bytes(r.size_bytes)}{link}</small></h4>"
            )
            if not ckpts:
                parts.append("<p>No checkpoints.</p>")
                continue
            parts.append(
                "<table><tr><th>checkpoint</th><th>step</th><th>epoch</th><th>eval metrics</th>"
                "<th>size</th><th></th></tr>"
            )
            for c in ckpts:
                epoch = f"{c.epoch:.2f}" if c.epoch is not None else "-"
                style = " style='font-weight:bold'" if c.is_best else ""
                parts.append(
                    f"<tr{style}><td>{html.escape(c.name)}</td><td>{c.step}</td><td>{epoch}</td>"
                    f"<td>{html.escape(fmt_metrics(c.metrics))}</td>"
                    f"<td>{fmt_bytes(c.size_bytes)}</td><td>{html.escape(flags(c))}</td></tr>"
                )
            parts.append("</table>")
        parts.append("</div>")
        return "".join(parts)


class CheckpointBrowser:
    """The widget browser. Every action is also a method, so it can be scripted and tested."""

    def __init__(
        self,
        runs_dir: str | Path = "runs",
        run: str | None = None,
        *,
        namespace: Mapping[str, Any] | None = None,
    ) -> None:
        import ipywidgets as W

        self._W = W
        self.runs_dir = Path(runs_dir)
        #: where a run's notebook objects ({train_df}) are found again to resume it
        self.namespace = namespace
        runs = _runs(runs_dir, run)
        names = [r.name for r in list_runs(runs_dir)] if run is None else [run]
        self.run_select = W.Dropdown(
            options=names, value=(run or (runs[-1].name if runs else None)), description="Run"
        )
        self.run_select.observe(lambda _: self.refresh(), names="value")
        self.refresh_button = W.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.card_button = W.Button(description="Open card", icon="file")
        self.card_button.on_click(lambda _: self.open_card())
        self.summary = W.HTML()
        self.table = W.VBox()
        self.table.add_class("nbt-ckpt-table")
        self.try_box = W.VBox()
        self.confirm_box = W.HBox()
        self.message = W.HTML()
        self.message.add_class("nbt-browser-message")
        self.output = W.Output()
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger")
        self.stop_button.layout.display = "none"
        self.stop_button.on_click(lambda _: self.stop())
        self.card_view = W.HTML()
        self.run: Any = None
        self.panel = W.VBox(
            [
                W.HTML("<b>nbtrain</b> — checkpoints"),
                W.HBox([self.run_select, self.refresh_button, self.card_button]),
                self.summary,
                self.table,
                self.confirm_box,
                self.try_box,
                self.message,
                self.stop_button,
                self.output,
                self.card_view,
            ]
        )
        self.panel.add_class("nbt-browser")
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.panel._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return repr(CheckpointTable(self.runs_dir))

    # -- data --------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path | None:
        name = self.run_select.value
        return self.runs_dir / name if name else None

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return list_checkpoints(self.run_dir) if self.run_dir else []

    def refresh(self) -> None:
        W = self._W
        self.confirm_box.children = ()
        names = [r.name for r in list_runs(self.runs_dir)]
        if names and list(self.run_select.options) != names and len(self.run_select.options) != 1:
            current = self.run_select.value
            self.run_select.options = names
            self.run_select.value = current if current in names else names[-1]
        if self.run_dir is None:
            self.summary.value = f"No runs in <code>{html.escape(str(self.runs_dir))}</code>."
            self.table.children = ()
            return
        info = run_status(self.run_dir)
        self.summary.value = (
            f"<b>{html.escape(info.name)}</b>: {html.escape(info.status)}, step {info.steps}"
            + (f"/{info.total_steps}" if info.total_steps else "")
            + f", {fmt_bytes(info.size_bytes)} on disk"
            + (f" · {html.escape(fmt_metrics(info.metrics))}" if info.metrics else "")
        )
        self.card_button.disabled = not (self.run_dir / "card.html").is_file()
        head = ["checkpoint", "step", "epoch", "eval metrics", "size", "", "", "", ""]
        cells: list[Any] = [W.HTML(f"<b>{h}</b>") for h in head]
        resumable = info.status not in ("finished", "running")
        for c in self.checkpoints:
            epoch = f"{c.epoch:.2f}" if c.epoch is not None else "-"
            name = W.HTML(f"<b>{c.name}</b>" if c.is_best else c.name)
            name.add_class("nbt-ckpt-" + c.name)
            resume = W.Button(description="Resume", icon="play", layout=W.Layout(width="90px"))
            resume.disabled = not (resumable and c.is_newest)
            resume.tooltip = (
                "Continue this run from here"
                if not resume.disabled
                else ("Runs resume from their newest complete checkpoint")
            )
            resume.on_click(lambda _, c=c: self.resume(c))
            try_ = W.Button(description="Try", icon="comment", layout=W.Layout(width="70px"))
            try_.on_click(lambda _, c=c: self.open_try(c))
            delete = W.Button(
                description="Delete",
                icon="trash",
                button_style="warning",
                layout=W.Layout(width="90px"),
            )
            delete.disabled = c.is_best or c.is_newest
            delete.tooltip = (
                "The best and the newest checkpoint are kept" if delete.disabled else ""
            )
            delete.add_class("nbt-delete-" + c.name)
            delete.on_click(lambda _, c=c: self.ask_delete(c))
            cells += [
                name,
                W.HTML(str(c.step)),
                W.HTML(epoch),
                W.HTML(html.escape(fmt_metrics(c.metrics)) or "-"),
                W.HTML(fmt_bytes(c.size_bytes)),
                W.HTML(flags(c)),
                resume,
                try_,
                delete,
            ]
        if len(cells) == len(head):
            cells.append(W.HTML("No checkpoints in this run."))
        self.table.children = (
            W.GridBox(
                cells,
                layout=W.Layout(
                    grid_template_columns="130px 50px 50px minmax(260px, 1fr) 75px 90px 95px 75px 95px",
                    grid_gap="2px 6px",
                ),
            ),
        )

    # -- actions -----------------------------------------------------------------------------
    def ask_delete(self, c: Checkpoint) -> None:
        W = self._W
        yes = W.Button(description="Delete", button_style="danger")
        yes.add_class("nbt-confirm-delete")
        no = W.Button(description="Cancel")
        yes.on_click(lambda _: self.delete(c))
        no.on_click(lambda _: setattr(self.confirm_box, "children", ()))
        self.confirm_box.children = (
            W.HTML(f"Delete <b>{c.name}</b> ({fmt_bytes(c.size_bytes)})? This cannot be undone."),
            yes,
            no,
        )

    def delete(self, c: Checkpoint | str) -> None:
        """Delete a checkpoint (refused for the best and the newest one)."""
        from nbtrain.runs import delete_checkpoint

        path = c.path if isinstance(c, Checkpoint) else self.run_dir / str(c)
        try:
            delete_checkpoint(path)
            self.message.value = f"Deleted {html.escape(path.name)}."
        except (PermissionError, FileNotFoundError) as e:
            self.message.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
        self.refresh()

    def open_card(self) -> None:
        card = self.run_dir / "card.html" if self.run_dir else None
        if card is None or not card.is_file():
            self.message.value = "This run has no card yet (it is written when the run ends)."
            return
        doc = html.escape(card.read_text(encoding="utf-8"), quote=True)
        self.card_view.value = (
            f"<iframe class='nbt-card-frame' srcdoc=\"{doc}\" style='width:100%;height:420px;"
            "border:1px solid #ccc'></iframe>"
        )

    def open_try(self, c: Checkpoint) -> None:
        W = self._W
        text = W.Text(placeholder="Type a sentence to classify", layout=W.Layout(width="420px"))
        text.add_class("nbt-try-text")
        go = W.Button(description="Predict", icon="bolt")
        go.add_class("nbt-try-go")
        result = W.HTML()
        result.add_class("nbt-try-result")
        go.on_click(lambda _: setattr(result, "value", self.try_html(c, text.value)))
        text.on_submit(lambda _: setattr(result, "value", self.try_html(c, text.value)))
        self.try_box.children = (W.HTML(f"Try <b>{c.name}</b>:"), W.HBox([text, go]), result)

    def try_html(self, c: Checkpoint, sentence: str) -> str:
        try:
            pred = predict(c.path, [sentence])[0]
        except Exception as e:  # shown next to the box: a broken checkpoint must not crash the UI
            return f"<span style='color:#b00020'>{html.escape(type(e).__name__)}: {html.escape(str(e))}</span>"
        probs = pred.get("probs") or {}
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{v:.3f}</td></tr>" for k, v in probs.items()
        )
        return (
            f"<div>predicted: <b class='nbt-pred-label'>{html.escape(str(pred.get('label')))}</b>"
            + (f" ({pred['score']:.3f})" if isinstance(pred.get("score"), float) else "")
            + f"</div><table>{rows}</table>"
        )

    def resume(self, c: Checkpoint | None = None) -> Any:
        """Continue the selected run from its newest complete checkpoint, the view below.

        Data that came from the notebook (``{train_df}``) is taken from the notebook again by
        the same name; when it is missing or holds other data, the message says so.
        """
        from nbtrain.api import finetune
        from nbtrain.display.live import HtmlRenderer, OutputWidgetDisplay

        if self.run is not None and not self.run.done:
            return self.run
        namespace = self.namespace if self.namespace is not None else user_namespace()
        try:
            cfg = resume_config(self.run_dir, namespace)
        except ConfigError as e:  # notebook data missing or changed: say what to do, start nothing
            self.message.value = (
                f"<span class='nbt-resume-error' style='color:#b00020'>{html.escape(str(e))}</span>"
            )
            return None
        view = HtmlRenderer(display=OutputWidgetDisplay(self.output))
        self.stop_button.layout.display = None
        self.message.value = f"Resuming {html.escape(self.run_dir.name)}…"
        self.run = finetune(cfg, display=view, background=True)
        self.run.add_done_callback(lambda _: self._resumed())
        return self.run

    def stop(self) -> None:
        if self.run is not None and not self.run.done:
            self.run.stop()

    def _resumed(self) -> None:
        self.stop_button.layout.display = "none"
        self.message.value = ""
        self.refresh()


_OBJECT_KEYS = ("model", "tokenizer", "data.train", "data.eval")


def resume_config(run_dir: str | Path, namespace: Mapping[str, Any] | None) -> Any:
    """The config ``run_dir`` trained with, ready to resume it.

    ``config.yaml`` records notebook objects by name (``'{train_df}'``); they are looked up in
    ``namespace`` again, and must hold the data the run trained on (its fingerprint).

    Raises:
        ConfigError: an object is not in the namespace, holds other data, or was passed to
            ``finetune`` without a name; the message says how to resume.
    """
    from nbtrain.config import diff_configs, load_config, parse_yaml
    from nbtrain.config.refs import resolve_refs
    from nbtrain.engine.rundir import identity

    run_dir = Path(run_dir)
    name = run_dir.name
    raw = parse_yaml(
        (run_dir / "config.yaml").read_text(encoding="utf-8"), origin=str(run_dir / "config.yaml")
    )
    found = {key: _value_at(raw, key) for key in _OBJECT_KEYS}
    refs = {k: v.strip()[1:-1].strip() for k, v in found.items() if _is_ref(v)}
    unnamed = [k for k, v in found.items() if isinstance(v, str) and v.startswith("<")]
    if unnamed:
        raise ConfigError(
            f"Run {name!r} was given {', '.join(f'{k} {found[k]}' for k in unnamed)} as an object "
            "without a name, so it cannot be found again here. Resume it from Python with the "
            "same objects: nbtrain.finetune(nbtrain.load_run(name).config, ...) with "
            + ", ".join(f"{k}=..." for k in unnamed)
            + "."
        )
    missing = [k for k, var in refs.items() if namespace is None or var not in namespace]
    if missing:
        wanted = ", ".join(f"{{{refs[k]}}} ({k})" for k in missing)
        raise ConfigError(
            f"Run {name!r} trained on notebook data: {wanted}. Define "
            + ", ".join(refs[k] for k in missing)
            + " in this notebook with the same data (run the cells that make it), then press "
            "Resume again."
        )
    if refs:
        raw = resolve_refs(raw, namespace or {})
    raw["name"], raw["runs_dir"] = name, str(run_dir.parent)
    cfg = load_config(raw)
    ident = run_dir / "identity.json"
    if refs and ident.is_file():
        import json

        changed = diff_configs(json.loads(ident.read_text()), identity(cfg))
        if changed:
            names = ", ".join(f"{{{v}}}" for v in refs.values())
            raise ConfigError(
                f"The notebook's {names} is not the data run {name!r} trained on (changed: "
                f"{', '.join(changed[:6])}). Resuming needs the same data: re-create it as it "
                "was, or train a new run with %%finetune NEW_NAME."
            )
    return cfg


def _value_at(raw: Mapping[str, Any], dotted: str) -> Any:
    value: Any = raw
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _is_ref(value: Any) -> bool:
    text = value.strip() if isinstance(value, str) else ""
    return text.startswith("{") and text.endswith("}") and text[1:-1].strip().isidentifier()


def predict(ckpt: str | Path, texts: list[str]) -> list[dict[str, Any]]:
    """Load a checkpoint (weights via safetensors) and predict ``texts`` with its run's task."""
    from nbtrain.api import load_run
    from nbtrain.config import Config
    from nbtrain.engine.tasks import get_task
    from nbtrain.runs import load_final_model, run_max_length, run_task

    ckpt = Path(ckpt)
    run = load_run(ckpt.parent)
    task_name = run_task(run.output_dir)
    if (ckpt / "adapter_model.safetensors").is_file():
        from nbtrain.errors import ConfigError

        raise ConfigError(
            "This is a LoRA checkpoint (adapters only); try the run's final model with "
            "nbtrain.load_run(name).predict([...]) instead."
        )
    model = load_final_model(ckpt, task_name)
    from transformers import AutoTokenizer

    tok_dir = ckpt if (ckpt / "tokenizer_config.json").is_file() else run.final_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    task = get_task(task_name, Config(model="x"))
    task.max_length = run_max_length(run.output_dir)  # truncate where training did
    return task.predict(model, tokenizer, texts)
