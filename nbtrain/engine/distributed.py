"""DeepSpeed and FSDP settings, checked before any process starts, and the DDP loss fix.

``deepspeed:`` (a JSON/YAML file or a mapping) and ``fsdp:`` / ``fsdp_config:`` are passed to
``TrainingArguments`` as they are, after these checks: the file exists and parses, the ZeRO stage
is one DeepSpeed has, the batch sizes agree with the config, combinations that cannot work
(QLoRA with ZeRO-3, DeepSpeed with FSDP, quantized weights with FSDP) are named, and the
device can run it. ``"auto"`` values the config decides (batch sizes, learning rate, optimizer
and warmup settings, precision, gradient clipping) are filled in here, as the Trainer would, so
the resolved values are visible in ``env.json``; the model-dependent ones (bucket sizes) stay
``"auto"`` for the Trainer's DeepSpeed integration.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from nbtrain.config import Config
from nbtrain.errors import ConfigError, did_you_mean

ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD_DEVICES = ("none", "cpu", "nvme")
FSDP_OPTIONS = (
    "full_shard",
    "shard_grad_op",
    "hybrid_shard",
    "hybrid_shard_zero2",
    "no_shard",
    "offload",
    "auto_wrap",
)


def read_settings_file(path: Any, key: str) -> dict[str, Any]:
    """A JSON or YAML file (or a mapping) as a dict; one paragraph when it cannot be read."""
    if isinstance(path, dict):
        return dict(path)
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"{key}: the file {str(path)!r} does not exist (looked in {str(p.resolve().parent)!r}). "
            f"Give the path of your {key} config file, relative to the folder you run from, or "
            "write the settings inline as a mapping.",
            field=key,
        )
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(
                f"{key}: {p.name} is not valid JSON ({e}). JSON has no comments and no trailing "
                "commas; a .yaml file may have both.",
                field=key,
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(
                f"{key}: {p.name} does not parse as YAML{where}.", field=key
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{key}: {p.name} must hold a mapping of settings, not {type(data).__name__}.",
            field=key,
        )
    return data


def trainer_values(cfg: Config, precision: str, world: int) -> dict[str, Any]:
    """The values DeepSpeed's ``"auto"`` entries stand for, from the config."""
    ta = cfg.training_args
    return {
        "train_micro_batch_size_per_gpu": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "train_batch_size": cfg.per_device_train_batch_size
        * cfg.gradient_accumulation_steps
        * world,
        "gradient_clipping": cfg.max_grad_norm,
        "optimizer.params.lr": cfg.learning_rate,
        "optimizer.params.betas": [ta.get("adam_beta1", 0.9), ta.get("adam_beta2", 0.999)],
        "optimizer.params.eps": ta.get("adam_epsilon", 1e-8),
        "optimizer.params.weight_decay": cfg.weight_decay,
        "scheduler.params.warmup_min_lr": 0,
        "scheduler.params.warmup_max_lr": cfg.learning_rate,
        "fp16.enabled": precision == "fp16",
        "bf16.enabled": precision == "bf16",
    }


# Entries whose value the config decides: a number that disagrees is an error.
_MUST_MATCH = {
    "train_micro_batch_size_per_gpu": "batch_size (per_device_train_batch_size)",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "train_batch_size": "batch_size x gradient_accumulation_steps x processes",
}


def _get(d: dict[str, Any], dotted: str) -> Any:
    node: Any = d
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = d
    for part in parents:
        node = node[part]
    node[last] = value


def resolve_deepspeed(
    cfg: Config,
    *,
    world: int,
    precision: str,
    device_kind: str,
    total_steps: int | None = None,
) -> dict[str, Any] | None:
    """The checked DeepSpeed config with the config's ``"auto"`` values filled, or None.

    Raises:
        ConfigError: missing or unparsable file, bad ZeRO stage or offload device, batch sizes
            that disagree with the config, QLoRA with ZeRO-3, DeepSpeed with FSDP, no CUDA.
    """
    source = cfg.training_args.get("deepspeed")
    if source in (None, "", False):
        return None
    ds = json.loads(json.dumps(read_settings_file(source, "deepspeed")))  # a private copy
    zero = ds.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        raise ConfigError("deepspeed: zero_optimization must be a mapping.", field="deepspeed")
    stage = zero.get("stage", 0)
    if stage not in ZERO_STAGES:
        raise ConfigError(
            f"deepspeed: zero_optimization.stage is {stage!r}; DeepSpeed's ZeRO stages are "
            "0 (off), 1 (optimizer states), 2 (+ gradients) and 3 (+ parameters).",
            field="deepspeed",
        )
    for part in ("offload_optimizer", "offload_param"):
        dev = _get(zero, f"{part}.device")
        if dev is not None and dev not in OFFLOAD_DEVICES:
            raise ConfigError(
                f"deepspeed: zero_optimization.{part}.device is {dev!r}; expected one of "
                f"{', '.join(OFFLOAD_DEVICES)}.{did_you_mean(str(dev), OFFLOAD_DEVICES)}",
                field="deepspeed",
            )
    if _get(zero, "offload_param.device") not in (None, "none") and stage != 3:
        raise ConfigError(
            f"deepspeed: offload_param needs ZeRO stage 3 (this config has stage {stage}); "
            "use offload_optimizer with stages 1-2.",
            field="deepspeed",
        )
    values = trainer_values(cfg, precision, world)
    for key, theirs in values.items():
        ours = _get(ds, key)
        if ours == "auto":
            _set(ds, key, theirs)
        elif key in _MUST_MATCH and ours is not None and ours != theirs:
            if key == "train_micro_batch_size_per_gpu" and cfg.auto_find_batch_size:
                continue  # the Trainer shrinks the batch itself
            raise ConfigError(
                f"deepspeed: {key} is {ours} but the config gives {theirs} "
                f"({_MUST_MATCH[key]}, {world} process{'es' if world != 1 else ''}). Write "
                f'"{key}": "auto" in the DeepSpeed file so one place decides, or change the '
                "config to match.",
                field="deepspeed",
            )
    for key in ("fp16.enabled", "bf16.enabled"):
        # "auto" precision is decided on the device; the parent of a launch cannot know it
        if precision != "auto" and _get(ds, key) is True and not values[key]:
            raise ConfigError(
                f"deepspeed: {key} is true but precision is {precision}; write "
                f'"enabled": "auto" or set precision: {key.split(".")[0]}.',
                field="deepspeed",
            )
    if total_steps is not None:  # known once the data is read: what the Trainer fills later
        warm = cfg.warmup_steps or round(cfg.warmup_ratio * total_steps)
        for key, value in (
            ("scheduler.params.total_num_steps", total_steps),
            ("scheduler.params.warmup_num_steps", warm),
        ):
            if _get(ds, key) == "auto":
                _set(ds, key, value)
    if stage == 3 and cfg.quantization in ("4bit", "8bit"):
        raise ConfigError(
            f"deepspeed: QLoRA (quantization: {cfg.quantization}) with ZeRO stage 3 is not "
            "supported here: ZeRO-3 shards the frozen quantized weights, which bitsandbytes "
            "cannot gather. Use ZeRO stage 2 (the LoRA adapters are small), or drop "
            "quantization.",
            field="deepspeed",
        )
    if cfg.training_args.get("fsdp") not in (None, False, "", []):
        raise ConfigError(
            "deepspeed and fsdp are both set; they are two ways to shard a model and only one "
            "can run. Keep one of them.",
            field="deepspeed",
        )
    if device_kind != "cuda":
        raise ConfigError(
            "deepspeed: DeepSpeed trains on CUDA GPUs, and none is visible here (this is "
            f"{device_kind}). The config checked out; run it on a GPU machine with "
            "`accelerate launch -m nbtrain run config.yaml`, or remove deepspeed to train with "
            "processes: N (DDP) on this machine.",
            field="deepspeed",
        )
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "deepspeed: the deepspeed package is not installed; pip install deepspeed (it "
            "compiles its CUDA ops on first use), or remove deepspeed from the config.",
            field="deepspeed",
        )
    return ds


def check_fsdp(cfg: Config, *, world: int, device_kind: str) -> dict[str, Any] | None:
    """The checked ``fsdp_config`` (a file read into a mapping), or None without FSDP."""
    fsdp = cfg.training_args.get("fsdp")
    if fsdp in (None, False, "", []):
        if cfg.training_args.get("fsdp_config"):
            raise ConfigError(
                "fsdp_config is set but fsdp is not; add fsdp: full_shard (or remove fsdp_config).",
                field="fsdp_config",
            )
        return None
    options = (
        fsdp.split()
        if isinstance(fsdp, str)
        else list(fsdp)
        if isinstance(fsdp, list)
        else ["full_shard"]
    )
    for opt in options:
        if opt not in FSDP_OPTIONS:
            raise ConfigError(
                f"fsdp: {opt!r} is not an FSDP option; expected some of "
                f"{', '.join(FSDP_OPTIONS)}.{did_you_mean(str(opt), FSDP_OPTIONS)}",
                field="fsdp",
            )
    if cfg.quantization in ("4bit", "8bit"):
        raise ConfigError(
            f"fsdp with quantization: {cfg.quantization} is not supported here: FSDP must "
            "flatten the frozen quantized weights, which needs bitsandbytes' quant_storage "
            "matching the compute dtype. Use deepspeed ZeRO-2 for QLoRA on several GPUs, or "
            "drop quantization.",
            field="fsdp",
        )
    if world < 2:
        raise ConfigError(
            "fsdp shards the model across processes, and this run has one. Set processes: 2 "
            "or more, or start it with `accelerate launch --num_processes N -m nbtrain run`.",
            field="fsdp",
        )
    source = cfg.training_args.get("fsdp_config")
    settings = read_settings_file(source, "fsdp_config") if source else None
    if device_kind != "cuda":
        # Measured with accelerate 1.15 / torch 2.13: on CPU the state is MULTI_CPU, which
        # accelerate never turns into FSDP, so the run would silently be plain DDP with the
        # whole model in every process (full model.safetensors, no sharded checkpoint).
        raise ConfigError(
            f"fsdp: accelerate runs FSDP on GPUs only; on {device_kind} it would silently train "
            "plain DDP with the whole model in each process. The FSDP settings checked out: "
            "run them on GPUs, or remove fsdp to train with processes: N (DDP) here.",
            field="fsdp",
        )
    return settings


def check_before_launch(cfg: Config, *, world: int, device_kind: str, precision: str) -> None:
    """Everything checkable before processes start (the parent calls it; so does each run)."""
    resolve_deepspeed(cfg, world=world, precision=precision, device_kind=device_kind)
    check_fsdp(cfg, world=world, device_kind=device_kind)


def process_kwargs(
    cfg: Config,
    kwargs: dict[str, Any],
    *,
    task: str,
    world: int,
    precision: str,
    device_kind: str,
    total_steps: int,
) -> None:
    """Adjust TrainingArguments ``kwargs`` (in place) for DDP, DeepSpeed and FSDP."""
    if world > 1 and task != "causal-lm" and "average_tokens_across_devices" not in kwargs:
        # transformers 5 multiplies the loss by the process count, assuming the model divided
        # it by the item count of all processes; the classification, token, masked-LM and
        # seq2seq heads take a plain mean, so with 2 processes the gradient was doubled
        # (measured: train loss 1.27 vs 0.54 on one process with the same global batch).
        kwargs["average_tokens_across_devices"] = False
    ds = resolve_deepspeed(
        cfg, world=world, precision=precision, device_kind=device_kind, total_steps=total_steps
    )
    if ds is not None:
        kwargs["deepspeed"] = ds
    fsdp_config = check_fsdp(cfg, world=world, device_kind=device_kind)
    if fsdp_config is not None:
        kwargs["fsdp_config"] = fsdp_config
