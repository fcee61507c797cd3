"""The form's logic without widgets: fields from the schema, values both ways, validation, presets.

Everything here is generated from the field metadata of :mod:`nbtrain.config.schema`, so a new
schema field shows up in the form (and in its validation and cell text) without form code.
Standard library and PyYAML only; ipywidgets is imported by :mod:`nbtrain.ui.form`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import MISSING, dataclass
from typing import Any

import yaml

from nbtrain.config import Config, config_to_dict, load_config, parse_yaml
from nbtrain.config.load import coerce_field
from nbtrain.config.refs import Ref
from nbtrain.config.schema import DataConfig, LoraConfig
from nbtrain.errors import ConfigError

#: Form sections in display order; groups the schema adds later are appended after them.
SECTIONS = (
    "Model",
    "Data",
    "Training",
    "Evaluation & saving",
    "Precision & memory",
    "LoRA",
    "Logging",
)
LORA_SWITCH = "lora"  # the key of the "use LoRA" checkbox
TRAINING_ARGS = "training_args"
FORM_ERROR = "_form"  # errors that name no field
AUTO = "(auto)"  # a dropdown's "left out" value (None cannot be a selected dropdown value)
_TEXT_KINDS = ("int", "float", "str", "str_list", "column", "source", "model", "float_list")
_REF = re.compile(r"^\{([A-Za-z_]\w*)\}$")

PRESETS: dict[str, dict[str, Any]] = {
    "BERT-style classification": {
        "task": "text-classification",
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 32,
        "learning_rate": 2e-5,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "lr_scheduler_type": "linear",
        "data.max_length": 128,
        "eval_strategy": "epoch",
        "load_best_model_at_end": True,
        "precision": "auto",
        LORA_SWITCH: False,
    },
    "Small GPU with LoRA": {
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 4,
        "learning_rate": 2e-4,
        "warmup_ratio": 0.05,
        "gradient_checkpointing": True,
        "precision": "auto",
        "data.max_length": 256,
        LORA_SWITCH: True,
        "lora.r": 16,
        "lora.alpha": 32.0,
        "lora.dropout": 0.05,
        "lora.target_modules": "auto",
    },
    "Quick CPU check": {
        "num_train_epochs": 1.0,
        "max_steps": 20,
        "per_device_train_batch_size": 8,
        "learning_rate": 5e-5,
        "data.limit": 200,
        "data.max_length": 64,
        "eval_strategy": "no",
        "precision": "fp32",
        LORA_SWITCH: False,
    },
}


@dataclass(frozen=True)
class FieldSpec:
    """One form field, generated from a schema field."""

    key: str  # dotted config key: "learning_rate", "data.train", "lora.r"
    field: dataclasses.Field | None
    group: str
    kind: str
    help: str
    common: bool
    nullable: bool
    choices: tuple[str, ...] | None
    default: Any

    @property
    def prefix(self) -> str:
        return self.key.rpartition(".")[0] + "." if "." in self.key else ""

    @property
    def name(self) -> str:
        return self.key.rpartition(".")[2]

    @property
    def widget(self) -> str:
        """checkbox | tristate | dropdown | text | yaml"""
        if self.kind == "bool":
            return "tristate" if self.nullable else "checkbox"
        if self.kind == "choice":
            return "dropdown"
        if self.kind in ("lora_switch",):
            return "checkbox"
        if self.kind in ("training_args", "trl_args"):
            return "yaml"
        return "text"


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _spec(f: dataclasses.Field, prefix: str) -> FieldSpec:
    m = f.metadata
    choices = m.get("choices")
    return FieldSpec(
        key=prefix + f.name,
        field=f,
        group=m.get("group", "Advanced"),
        kind=m.get("kind", "any"),
        help=m.get("help", ""),
        common=bool(m.get("common")),
        nullable=bool(m.get("nullable", True)),
        choices=tuple(choices) if choices else None,
        default=_default(f),
    )


def field_specs() -> list[FieldSpec]:
    """Every form field, in schema order (runtime objects left out: they come from code)."""
    out: list[FieldSpec] = []
    for f in dataclasses.fields(Config):
        kind = f.metadata.get("kind")
        if kind in ("runtime", "sweep"):  # objects from code; a sweep is written as YAML
            continue
        if kind == "section":
            out += [_spec(g, f.name + ".") for g in dataclasses.fields(DataConfig)]
        elif kind == "lora":
            out.append(
                FieldSpec(
                    key=LORA_SWITCH,
                    field=f,
                    group=f.metadata.get("group", "LoRA"),
                    kind="lora_switch",
                    help="Train LoRA adapters (peft) instead of the full model: far less memory.",
                    common=True,
                    nullable=False,
                    choices=None,
                    default=False,
                )
            )
            out += [_spec(g, f.name + ".") for g in dataclasses.fields(LoraConfig)]
        else:
            out.append(_spec(f, ""))
    return out


def sections(specs: list[FieldSpec] | None = None) -> dict[str, list[FieldSpec]]:
    """Specs grouped by form section: the known sections first, then any new group."""
    specs = field_specs() if specs is None else specs
    groups: dict[str, list[FieldSpec]] = {s: [] for s in SECTIONS}
    for s in specs:
        groups.setdefault(s.group, []).append(s)
    return {g: v for g, v in groups.items() if v}


# ---------------------------------------------------------------------------------------------
# Config values <-> widget values


def _num_text(v: float) -> str:
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """The widget value showing ``value`` (a canonical config value) for ``spec``."""
    w = spec.widget
    if w == "checkbox":
        return bool(value)
    if w in ("tristate", "dropdown"):
        return AUTO if value is None else value
    if w == "yaml":
        if not value:
            return ""
        return yaml.safe_dump(dict(value), sort_keys=False, allow_unicode=True).strip()
    if value is None:
        # "none" is read back as null; an empty box means "the default".
        return "" if spec.default is None else "none"
    if isinstance(value, Ref):
        return "{" + value.name + "}"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return _num_text(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_num_text(v) if isinstance(v, float) else str(v) for v in value)
    return str(value)


def from_widget(spec: FieldSpec, wv: Any, namespace: dict[str, Any] | None = None) -> Any:
    """The raw config value a widget value stands for (checked later by the config loader)."""
    w = spec.widget
    if w in ("tristate", "dropdown") and wv == AUTO:
        return None
    if w != "text":
        return wv
    text = str(wv).strip()
    m = _REF.match(text)
    if m and spec.kind in ("source", "model"):
        name = m.group(1)
        if namespace is None or name not in namespace:
            raise ConfigError(
                f"{spec.key}: {text} names no variable in the notebook; define {name} first "
                "or give a file or hub name.",
                field=spec.key,
            )
        return Ref(name, namespace[name])
    if spec.kind == "callables":  # "{my_reward}, {length_penalty}" or "module:function"
        out: list[Any] = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            ref = _REF.match(part)
            if ref and namespace is not None and ref.group(1) in namespace:
                out.append(Ref(ref.group(1), namespace[ref.group(1)]))
            elif ref:
                raise ConfigError(
                    f"{spec.key}: {part} names no function in the notebook; define "
                    f"{ref.group(1)} first.",
                    field=spec.key,
                )
            else:
                out.append(part)
        return out
    if spec.kind == "column" and text.isdigit():
        return int(text)
    if spec.kind == "float_list":
        if text.lower() == "auto":
            return "auto"  # class_weights: auto
        return [t.strip() for t in text.split(",") if t.strip()]
    return text


def default_widget_value(spec: FieldSpec) -> Any:
    if spec.kind == "lora_switch":
        return False
    return to_widget(spec, spec.default)


def config_to_values(cfg: Config) -> dict[str, Any]:
    """Widget values for every field, from a config."""
    out: dict[str, Any] = {}
    for spec in field_specs():
        if spec.kind == "lora_switch":
            out[spec.key] = cfg.lora is not None
            continue
        section, _, name = spec.key.rpartition(".")
        holder = getattr(cfg, section) if section else cfg
        if holder is None:  # lora switched off: show the defaults
            out[spec.key] = default_widget_value(spec)
        else:
            out[spec.key] = to_widget(spec, getattr(holder, name))
    return out


# ---------------------------------------------------------------------------------------------
# Widget values -> raw dict -> Config, with per-field messages


def values_to_raw(
    values: dict[str, Any], namespace: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A nested raw config dict holding only what differs from the defaults, and field errors.

    Each value is checked with the config loader's own ``coerce_field``, so the message next to a
    field is word for word the ``ConfigError`` the same value gives in a ``%%finetune`` cell.
    """
    specs = field_specs()
    lora_on = bool(values.get(LORA_SWITCH))
    raw: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in specs:
        if spec.kind == "lora_switch":
            continue
        if spec.key.startswith("lora.") and not lora_on:
            continue
        wv = values.get(spec.key, default_widget_value(spec))
        if wv == default_widget_value(spec) or (spec.widget == "text" and not str(wv).strip()):
            continue  # the default (an emptied box means the default too)
        try:
            if spec.widget == "yaml":
                value = parse_yaml(str(wv), origin=spec.key) if str(wv).strip() else {}
            else:
                value = from_widget(spec, wv, namespace)
                if spec.field is not None and spec.kind != "any":
                    coerce_field(spec.field, value, prefix=spec.prefix)
        except ConfigError as e:
            errors[spec.key] = str(e)
            continue
        _set(raw, spec.key, value)
    if lora_on:
        raw.setdefault("lora", {})
    return raw, errors


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, name = key.rpartition(".")
    if section:
        raw.setdefault(section, {})[name] = value
    elif key == TRAINING_ARGS:
        raw.setdefault(TRAINING_ARGS, {}).update(value)
    else:
        raw[key] = value


def validate(
    values: dict[str, Any], namespace: dict[str, Any] | None = None
) -> tuple[Config | None, dict[str, str]]:
    """``(config, {})`` when the values make a valid config, else ``(None, {field: message})``."""
    raw, errors = values_to_raw(values, namespace)
    if errors:
        return None, errors
    try:
        return load_config(raw), {}
    except ConfigError as e:
        if e.field in {s.key for s in field_specs()}:
            key = e.field
        elif e.field and e.field in raw.get(TRAINING_ARGS, {}):
            key = TRAINING_ARGS  # a pass-through TrainingArguments key lives in that box
        else:
            key = FORM_ERROR
        return None, {key: str(e)}


def apply_preset(values: dict[str, Any], preset: str) -> dict[str, Any]:
    """The values with a preset applied (model and data are left as they are)."""
    if preset not in PRESETS:
        from nbtrain.errors import did_you_mean

        raise ConfigError(
            f"Unknown preset {preset!r}.{did_you_mean(preset, PRESETS)} Presets: "
            + ", ".join(PRESETS)
            + "."
        )
    by_key = {s.key: s for s in field_specs()}
    out = dict(values)
    for key, value in PRESETS[preset].items():
        spec = by_key[key]
        out[key] = value if spec.kind == "lora_switch" else to_widget(spec, value)
    return out


# ---------------------------------------------------------------------------------------------
# Config -> %%finetune cell


def cell_text(cfg: Config) -> str:
    """The ``%%finetune`` cell that runs ``cfg``: the name on the magic line, then the YAML of
    every value that differs from the defaults (notebook objects as ``{name}`` references)."""
    full = config_to_dict(cfg)
    base = config_to_dict(Config())
    body = _diff(full, base)
    body.pop("name", None)
    if cfg.lora is not None:
        body["lora"] = _diff(full["lora"], config_to_dict(LoraConfig())) or {}
    for key, ref in _refs(cfg):
        section, _, name = key.rpartition(".")
        (body.setdefault(section, {}) if section else body)[name] = "{" + ref + "}"
    text = yaml.dump(body, Dumper=_CellDumper, sort_keys=False, allow_unicode=True, width=100)
    text = "" if not body else text
    text = re.sub(r"'\{([A-Za-z_]\w*)\}'", r"{\1}", text)  # references are written bare
    head = "%%finetune" + (f" {cfg.name}" if cfg.name else "")
    return head + "\n" + text


class _CellDumper(yaml.SafeDumper):  # type: ignore[misc]
    """Safe YAML with short lists written inline (``report_to: [tensorboard]``)."""


def _flow_list(dumper: Any, data: list[Any]) -> Any:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)


_CellDumper.add_representer(list, _flow_list)


def _diff(full: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in full.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            sub = _diff(value, base[key])
            if sub:
                out[key] = sub
        elif key not in base or base[key] != value:
            out[key] = value
    return out


def _refs(cfg: Config) -> list[tuple[str, str]]:
    out = []
    for key, value in (
        ("model", cfg.model),
        ("tokenizer", cfg.tokenizer),
        ("data.train", cfg.data.train),
        ("data.eval", cfg.data.eval),
    ):
        if isinstance(value, Ref):
            out.append((key, value.name))
    return out


def parse_cell(text: str, namespace: dict[str, Any] | None = None) -> Config:
    """Read a ``%%finetune`` cell the form wrote (with the magic's parser where installed)."""
    head, _, body = text.partition("\n")
    parts = head.split()
    if not parts or parts[0] != "%%finetune":
        raise ConfigError("A %%finetune cell starts with the line '%%finetune [NAME]'.")
    ns = namespace or {}
    try:  # the magic's own parser, so the form and the cell can never disagree
        from nbtrain.magics import build_config
    except ImportError:
        build_config = None
    if build_config is not None:
        return build_config(body, ns, name=parts[1] if len(parts) > 1 else None)

    def sub(m: re.Match[str]) -> str:
        return f"'{{{m.group(1)}}}'"

    raw = parse_yaml(re.sub(r"(?<=: )\{([A-Za-z_]\w*)\}", sub, body))
    for section in ("", "data"):
        node = raw.get(section, {}) if section else raw
        for k, v in list(node.items()):
            m = _REF.match(v) if isinstance(v, str) else None
            if m and m.group(1) in ns:
                node[k] = Ref(m.group(1), ns[m.group(1)])
    if len(parts) > 1:
        raw["name"] = parts[1]
    return load_config(raw)
