"""The hyperparameter form: ``nbtrain.form(config=None)`` and ``%finetune_form``.

Built with ipywidgets from the schema (see :mod:`nbtrain.ui.spec`): one tab per section, the
common fields up front, the rest under "Advanced". Train runs in a background thread with the
live view inside the panel, so Stop is handled while training runs.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from nbtrain.display.frontend import fallback_message, widgets_available
from nbtrain.ui import spec as S

_LABEL_WIDTH = "210px"
_INPUT_WIDTH = "320px"


def form(config: Any = None, *, runs_dir: str | None = None, widgets: bool | None = None) -> Any:
    """Open the hyperparameter form, filled from ``config`` (a Config, dict, YAML or run name).

    Args:
        config: what to fill the form with; a run's name (or folder) fills it from that run.
        runs_dir: where to look for a run given by name (default ``runs``).
        widgets: force (True) or refuse (False) the widget form; None detects the frontend.

    Returns:
        A :class:`FinetuneForm` (shown when it is the cell's last value), or, where widgets
        cannot be shown, a :class:`FormFallback` with the equivalent ``%%finetune`` cell.
    """
    cfg = resolve_config(config, runs_dir)
    ok, reason = widgets_available() if widgets is None else (widgets, "widgets=False was given")
    if not ok:
        return FormFallback(cfg, reason)
    return FinetuneForm(cfg)


def resolve_config(config: Any, runs_dir: str | None = None) -> Any:
    from nbtrain.config import Config, load_config

    if config is None:
        return Config()
    if isinstance(config, str) and "\n" not in config and not config.endswith((".yaml", ".yml")):
        run = Path(config)
        if not (run / "config.yaml").is_file():
            run = Path(runs_dir or "runs") / config
        if (run / "config.yaml").is_file():
            return load_config(run / "config.yaml")
        if runs_dir is not None or "/" not in config:
            from nbtrain.api import load_run

            return load_run(config, runs_dir or "runs").config  # raises with a did-you-mean
    if isinstance(config, Config):
        return config
    return _lenient(config)


def _lenient(config: Any) -> Any:
    """A config that may still lack the model or the training data (the form asks for them)."""
    import dataclasses

    from nbtrain.config import load_config
    from nbtrain.errors import ConfigError

    missing: dict[str, Any] = {}
    for _ in range(3):
        try:
            cfg = load_config(config, **missing)
        except ConfigError as e:
            if e.field not in ("model", "data.train") or e.field in missing:
                raise
            missing[e.field] = "-"
            continue
        if "data.train" in missing:
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=None))
        return dataclasses.replace(cfg, model=None) if "model" in missing else cfg
    raise AssertionError("unreachable")


def _user_namespace() -> dict[str, Any] | None:
    import sys

    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    return getattr(shell, "user_ns", None)


class FinetuneForm:
    """The widget form. ``.config`` is the valid config (or None), ``.errors`` the messages."""

    def __init__(self, config: Any = None, *, namespace: dict[str, Any] | None = None) -> None:
        import ipywidgets as W
        from ipywidgets.widgets.widget_bool import CheckboxStyle
        from ipywidgets.widgets.widget_description import DescriptionStyle
        from ipywidgets.widgets.widget_string import HTMLStyle, TextStyle

        from nbtrain.config import Config

        self._W = W
        self.namespace = namespace
        self.specs = S.field_specs()
        self.inputs: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.config: Any = None
        self.run: Any = None
        self._quiet = False
        self._training = False

        # One Layout and one style per kind of widget, shared by every row: each widget model
        # is a message to the browser, and a form of ~90 fields with its own layouts and
        # styles sent ~1,500 of them at once, more than the kernel's IOPub queue (1,000
        # messages) holds when the frontend reads slowly; the ones dropped left the form
        # half-rendered or a notebook client waiting for a status that never came.
        self._shared = {
            # label and input keep their width; a long message wraps instead of squeezing them
            "label": W.Layout(width=_LABEL_WIDTH, flex="0 0 auto"),
            "input": W.Layout(width=_INPUT_WIDTH, flex="0 0 auto"),
            "message": W.Layout(width="auto", flex="1 1 auto"),
            "row": W.Layout(),
            "html": HTMLStyle(),
            "text": TextStyle(),
            "checkbox": CheckboxStyle(),
            "dropdown": DescriptionStyle(),
        }
        rows_by_section = {}
        for section, specs in S.sections(self.specs).items():
            common = [self._row(s) for s in specs if s.common]
            advanced = [self._row(s) for s in specs if not s.common]
            children = list(common)
            if advanced:
                acc = W.Accordion(children=[W.VBox(advanced)], selected_index=None)
                acc.set_title(0, f"Advanced ({len(advanced)})")
                acc.add_class("nbt-advanced")
                children.append(acc)
            rows_by_section[section] = W.VBox(children)
        self.section_names = list(rows_by_section)
        self.tabs = W.Tab(children=list(rows_by_section.values()))
        self.tabs.titles = tuple(self.section_names)

        self.preset = W.Dropdown(
            options=["(choose a preset)", *S.PRESETS],
            value="(choose a preset)",
            description="Preset",
        )
        self.preset.observe(self._on_preset, names="value")
        self.train_button = W.Button(description="Train", button_style="success", icon="play")
        self.stop_button = W.Button(
            description="Stop", button_style="danger", icon="stop", disabled=True
        )
        self.copy_button = W.Button(description="Copy as cell", icon="copy")
        self.train_button.on_click(lambda _: self.train())
        self.stop_button.on_click(lambda _: self.stop())
        self.copy_button.on_click(lambda _: self.copy_as_cell())
        self.status = W.HTML()  # what the run is doing
        self.status.add_class("nbt-status")
        self.form_error = W.HTML()  # a problem that names no single field
        self.form_error.add_class("nbt-form-error")
        self.cell_box = W.Textarea(layout=W.Layout(width="100%", height="160px", display="none"))
        self.cell_box.add_class("nbt-cell-text")
        self.output = W.Output(layout=W.Layout(border="1px solid #ddd", min_height="30px"))
        self.output.add_class("nbt-output")
        bar = W.HBox([self.preset, self.train_button, self.stop_button, self.copy_button])
        # Section names are long; let the tabs take the width they need.
        title = W.HTML(
            "<style>.nbt-form .widget-tab>.lm-TabBar .lm-TabBar-tab{flex:0 0 auto !important;"
            "max-width:none !important}</style>"
            "<b>nbtrain</b> — fine-tuning settings"
        )
        self.panel = W.VBox(
            [title, bar, self.tabs, self.form_error, self.status, self.cell_box, self.output]
        )
        self.panel.add_class("nbt-form")
        self.set_config(config if config is not None else Config())

    # -- building ----------------------------------------------------------------------------
    def _row(self, spec: S.FieldSpec) -> Any:
        W, shared = self._W, self._shared
        kind, field = spec.widget, spec.key.replace(".", "-")
        # Classes and tooltip at construction: each add_class afterwards is one more message.
        common = dict(
            layout=shared["input"],
            tooltip=spec.help,
            _dom_classes=("nbt-input", f"nbt-field-{field}"),
        )
        if kind == "checkbox":
            w = W.Checkbox(value=False, indent=False, style=shared["checkbox"], **common)
        elif kind == "tristate":
            w = W.Dropdown(
                options=[("auto", S.AUTO), ("yes", True), ("no", False)],
                style=shared["dropdown"],
                **common,
            )
        elif kind == "dropdown":
            opts = [(c, c) for c in spec.choices or ()]
            if spec.nullable:
                opts.insert(0, ("auto", S.AUTO))
            w = W.Dropdown(options=opts, style=shared["dropdown"], **common)
        elif kind == "yaml":
            w = W.Textarea(
                placeholder="adam_beta1: 0.9\ndataloader_num_workers: 2",
                style=shared["text"],
                **common,
            )
        else:
            w = W.Text(
                placeholder=_placeholder(spec),
                continuous_update=True,
                style=shared["text"],
                **common,
            )
        w.observe(self._on_change, names="value")
        label = W.HTML(
            f"<span title='{html.escape(spec.help, quote=True)}'>{html.escape(spec.key)}</span>",
            layout=shared["label"],
            style=shared["html"],
        )
        msg = W.HTML(
            layout=shared["message"],
            style=shared["html"],
            _dom_classes=("nbt-error", f"nbt-error-{field}"),
        )
        self.inputs[spec.key] = w
        self.messages[spec.key] = msg
        return W.HBox([label, w, msg], layout=shared["row"])

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.panel._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        state = "valid" if self.config is not None else f"{len(self.errors)} problem(s)"
        return f"<nbtrain form: {state}>"

    # -- values ------------------------------------------------------------------------------
    @property
    def values(self) -> dict[str, Any]:
        return {k: w.value for k, w in self.inputs.items()}

    def set_values(self, values: dict[str, Any]) -> None:
        self._quiet = True
        try:
            for key, value in values.items():
                w = self.inputs[key]
                if hasattr(w, "options") and value not in _option_values(w):
                    w.options = [*w.options, (str(value), value)]  # e.g. an optimizer by name
                w.value = value
        finally:
            self._quiet = False
        self.validate()

    def set_config(self, cfg: Any) -> None:
        """Fill every field from a config."""
        self.set_values(S.config_to_values(cfg))

    def apply_preset(self, name: str) -> None:
        self.set_values(S.apply_preset(self.values, name))

    def _on_preset(self, change: dict[str, Any]) -> None:
        if change["new"] in S.PRESETS:
            self.apply_preset(change["new"])

    def _on_change(self, change: dict[str, Any]) -> None:
        if not self._quiet:
            self.validate()

    def validate(self) -> Any:
        """Check the values; show each message next to its field; enable Train when valid."""
        ns = self.namespace if self.namespace is not None else _user_namespace()
        self.config, self.errors = S.validate(self.values, ns)
        for key, msg in self.messages.items():
            text = self.errors.get(key, "")
            msg.value = f"<span style='color:#b00020'>{html.escape(text)}</span>" if text else ""
        bad_sections = {s.group for s in self.specs if s.key in self.errors}
        self.tabs.titles = tuple(
            (name + " ⚠") if name in bad_sections else name for name in self.section_names
        )
        form_err = self.errors.get(S.FORM_ERROR, "")
        running = self._training
        self.form_error.value = (
            f"<span style='color:#b00020'>{html.escape(form_err)}</span>" if form_err else ""
        )
        self.train_button.disabled = self.config is None or running
        self.copy_button.disabled = self.config is None
        return self.config

    # -- actions -----------------------------------------------------------------------------
    def cell_text(self) -> str:
        """The ``%%finetune`` cell equivalent to the form (the form must be valid)."""
        if self.validate() is None:
            from nbtrain.errors import ConfigError

            first = next(iter(self.errors.values()), "the form has errors")
            raise ConfigError(first)
        return S.cell_text(self.config)

    def copy_as_cell(self) -> str:
        """Put the equivalent ``%%finetune`` cell into the notebook and show it in the panel.

        ``set_next_input`` reaches the notebook with the reply of an executed cell: called in a
        cell, the new cell appears right below it; from the button (a widget message, not an
        execution), it appears below the next cell you run. The text is shown in the panel too.
        """
        text = self.cell_text()
        import sys

        ip = sys.modules.get("IPython")
        shell = ip.get_ipython() if ip is not None else None
        if shell is not None:
            shell.set_next_input(text, replace=False)
        self.cell_box.value = text
        self.cell_box.layout.display = None
        self.status.value = (
            "The form as a %%finetune cell is shown below; it is also added to the notebook "
            "(below the next cell you run)."
            if shell is not None
            else "The form as a %%finetune cell is shown below."
        )
        return text

    def train(self) -> Any:
        """Start the run in a background thread, its live view inside the panel."""
        from nbtrain.api import finetune
        from nbtrain.display.live import HtmlRenderer, OutputWidgetDisplay

        if self.validate() is None or self._training:
            return None
        self._training = True
        view = HtmlRenderer(display=OutputWidgetDisplay(self.output))
        self.train_button.disabled = True
        self.stop_button.disabled = False
        self.status.value = "Training… (Stop saves a checkpoint and ends the run)"
        try:
            self.run = finetune(self.config, display=view, background=True)
        except Exception as e:  # e.g. a run of this name is already training in this kernel
            self._training = False
            self.train_button.disabled = False
            self.stop_button.disabled = True
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(e))}</span>"
            return None
        self.run.add_done_callback(self._done)
        return self.run

    def stop(self) -> None:
        """End the run at the end of the current step; the engine writes a checkpoint."""
        if self.run is not None and not self.run.done:
            self.run.stop()
            self.stop_button.disabled = True
            self.status.value = "Stopping at the end of this step…"

    def _done(self, run: Any) -> None:
        self._training = False
        self.stop_button.disabled = True
        res = run.result
        if res is not None:
            self.status.value = f"Run {html.escape(res.name)}: {html.escape(res.status)}."
        elif run.error is not None:
            from nbtrain.format import one_paragraph

            self.status.value = (
                f"<span style='color:#b00020'>{html.escape(one_paragraph(run.error))}</span>"
            )
        else:
            self.status.value = (
                "<span style='color:#b00020'>The run did not finish; see above.</span>"
            )
        self.validate()


def _option_values(w: Any) -> list[Any]:
    return [o[1] if isinstance(o, tuple) else o for o in w.options]


def _placeholder(spec: S.FieldSpec) -> str:
    if spec.default in (None, "", [], {}):
        return {"source": "file, hub name or {df}", "model": "hub id or folder"}.get(
            spec.kind, "default"
        )
    return "default: " + S.to_widget(spec, spec.default)


class FormFallback:
    """What the form shows where widgets cannot: the reason and the equivalent cell to edit."""

    def __init__(self, cfg: Any, reason: str) -> None:
        self.config = cfg
        self.reason = reason
        self.cell = S.cell_text(cfg)

    def __repr__(self) -> str:
        return f"{fallback_message(self.reason)}\n\n{self.cell}"

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(s.key)}</code></td><td>{html.escape(s.group)}</td>"
            f"<td>{html.escape(S.to_widget(s, s.default) if s.widget == 'text' else str(s.default))}"
            f"</td><td style='text-align:left'>{html.escape(s.help)}</td></tr>"
            for s in S.field_specs()
            if s.common
        )
        return (
            f"<div class='nbt-fallback'><p>{html.escape(fallback_message(self.reason))}</p>"
            f"<pre>{html.escape(self.cell)}</pre><table><tr><th>key</th><th>section</th>"
            f"<th>default</th><th>meaning</th></tr>{rows}</table></div>"
        )
