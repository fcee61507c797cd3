"""Config schema, loading and translation. Standard library and PyYAML only."""

from nbtrain.config.load import (
    config_to_dict,
    diff_configs,
    from_dict,
    load_config,
    parse_yaml,
    set_dotted,
    to_yaml,
)
from nbtrain.config.refs import Ref
from nbtrain.config.schema import Config, DataConfig, LoraConfig, SweepConfig

__all__ = [
    "Config",
    "DataConfig",
    "LoraConfig",
    "Ref",
    "SweepConfig",
    "config_help",
    "config_to_dict",
    "diff_configs",
    "from_dict",
    "load_config",
    "parse_yaml",
    "set_dotted",
    "to_yaml",
]


def config_help() -> str:
    """Every config key with its default and help, as plain text."""
    import dataclasses

    lines = []
    sections = ((Config, ""), (DataConfig, "data."), (LoraConfig, "lora."), (SweepConfig, "sweep."))
    for cls, prefix in sections:
        for f in dataclasses.fields(cls):
            kind = f.metadata.get("kind")
            if kind in ("section", "lora", "sweep", "runtime", "training_args"):
                continue
            default = f.default if f.default is not dataclasses.MISSING else None
            aliases = f.metadata.get("aliases") or ()
            alias = f" (also: {', '.join(aliases)})" if aliases else ""
            choices = f.metadata.get("choices")
            ch = f" [{'|'.join(choices)}]" if choices else ""
            lines.append(
                f"{prefix}{f.name}{alias}{ch} = {default!r}\n    {f.metadata.get('help', '')}"
            )
    lines.append("Any other TrainingArguments field of the installed transformers is accepted too.")
    return "\n".join(lines)
