"""`deepspeed:` and `fsdp:` are checked before any process starts (no GPU or deepspeed needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nbtrain.config import load_config
from nbtrain.engine import distributed
from nbtrain.errors import ConfigError

# The DeepSpeed config of the usual transformers tutorial (ZeRO-2, "auto" everywhere).
TUTORIAL_DS = {
    "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
    "bf16": {"enabled": "auto"},
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
    },
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
        },
    },
    "zero_optimization": {
        "stage": 2,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
        "allgather_bucket_size": 2e8,
        "reduce_bucket_size": "auto",
        "overlap_comm": True,
    },
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
}


def cfg_of(tmp_path: Path, ds=None, **kw):
    if ds is not None:
        path = tmp_path / "ds_config.json"
        path.write_text(json.dumps(ds) if not isinstance(ds, str) else ds)
        kw["deepspeed"] = str(path)
    base = {"model": "m", "data": {"train": "t.csv"}, "batch_size": 8, "lr": 3e-5}
    return load_config({**base, **kw})


@pytest.fixture
def deepspeed_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "deepspeed" else real(n, *a)
    )


def resolve(cfg, device="cuda", world=2, precision="fp16"):
    return distributed.resolve_deepspeed(
        cfg, world=world, precision=precision, device_kind=device, total_steps=100
    )


def test_tutorial_ds_config_autos_are_filled(tmp_path, deepspeed_installed):
    cfg = cfg_of(tmp_path, TUTORIAL_DS, gradient_accumulation_steps=2, warmup_ratio=0.1)
    ds = resolve(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == 8 * 2 * 2  # micro x accumulation x processes
    assert ds["optimizer"]["params"]["lr"] == 3e-5
    assert ds["optimizer"]["params"]["betas"] == [0.9, 0.999]
    assert ds["scheduler"]["params"]["total_num_steps"] == 100
    assert ds["scheduler"]["params"]["warmup_num_steps"] == 10
    assert ds["fp16"]["enabled"] is True and ds["bf16"]["enabled"] is False
    assert ds["zero_optimization"]["reduce_bucket_size"] == "auto"  # the model decides: HF fills
    assert json.loads((tmp_path / "ds_config.json").read_text()) == TUTORIAL_DS  # file untouched


def test_yaml_ds_config_reads(tmp_path, deepspeed_installed):
    path = tmp_path / "ds.yaml"
    path.write_text("zero_optimization:\n  stage: 3\ntrain_micro_batch_size_per_gpu: auto\n")
    cfg = load_config({"model": "m", "data": {"train": "t.csv"}, "deepspeed": str(path)})
    assert resolve(cfg)["train_micro_batch_size_per_gpu"] == cfg.per_device_train_batch_size


@pytest.mark.parametrize(
    ("ds", "kw", "message"),
    [
        ("{not json", {}, r"ds_config.json is not valid JSON"),
        ({"zero_optimization": {"stage": 4}}, {}, r"stage is 4; DeepSpeed's ZeRO stages are 0"),
        (
            {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpux"}}},
            {},
            r"Did you mean 'cpu'",
        ),
        ({"train_micro_batch_size_per_gpu": 16}, {}, r"is 16 but the config gives 8"),
        ({"train_batch_size": 8}, {}, r"train_batch_size is 8 but the config gives 16"),
        ({"fp16": {"enabled": True}}, {}, r"fp16.enabled is true but precision is bf16"),
        (
            {"zero_optimization": {"stage": 3}},
            {"quantization": "4bit", "lora": {"r": 8}},
            r"QLoRA \(quantization: 4bit\) with ZeRO stage 3",
        ),
        ({"zero_optimization": {"stage": 2}}, {"fsdp": "full_shard"}, r"deepspeed and fsdp"),
    ],
)
def test_bad_ds_configs_are_named(tmp_path, deepspeed_installed, ds, kw, message):
    with pytest.raises(ConfigError, match=message):
        resolve(cfg_of(tmp_path, ds, **kw), precision="bf16")


def test_missing_file_and_cpu_and_no_package(tmp_path, monkeypatch):
    cfg = load_config({"model": "m", "data": {"train": "t.csv"}, "deepspeed": "nope.json"})
    with pytest.raises(ConfigError, match=r"the file 'nope.json' does not exist"):
        resolve(cfg)
    good = cfg_of(tmp_path, TUTORIAL_DS)
    with pytest.raises(ConfigError, match=r"DeepSpeed trains on CUDA GPUs.*checked out"):
        resolve(good, device="cpu")
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None)
    with pytest.raises(ConfigError, match="pip install deepspeed"):
        resolve(good)


def test_launch_checks_deepspeed_before_starting(tmp_path):
    from nbtrain.engine.launch import check_launch

    with pytest.raises(ConfigError, match="stage is 5"):
        check_launch(cfg_of(tmp_path, {"zero_optimization": {"stage": 5}}, processes=2))


def fsdp_cfg(**kw):
    return load_config({"model": "m", "data": {"train": "t.csv"}, **kw})


def test_fsdp_checks(tmp_path):
    check = distributed.check_fsdp
    assert check(fsdp_cfg(), world=2, device_kind="cpu") is None
    with pytest.raises(ConfigError, match="Did you mean 'full_shard'"):
        check(fsdp_cfg(fsdp="full_shrd"), world=2, device_kind="cuda")
    with pytest.raises(ConfigError, match="this run has one"):
        check(fsdp_cfg(fsdp="full_shard"), world=1, device_kind="cuda")
    with pytest.raises(ConfigError, match="fsdp_config is set but fsdp is not"):
        check(fsdp_cfg(fsdp_config={"min_num_params": 10}), world=2, device_kind="cuda")
    with pytest.raises(ConfigError, match="quantization: 8bit is not supported"):
        check(
            fsdp_cfg(fsdp="full_shard", quantization="8bit", lora={"r": 4}),
            world=2,
            device_kind="cuda",
        )
    path = tmp_path / "fsdp.yaml"
    path.write_text("transformer_layer_cls_to_wrap: [BertLayer]\n")
    got = check(fsdp_cfg(fsdp="full_shard auto_wrap", fsdp_config=str(path)), world=2,
                device_kind="cuda")  # fmt: skip
    assert got == {"transformer_layer_cls_to_wrap": ["BertLayer"]}
    # accelerate 1.15 never turns MULTI_CPU into FSDP: on CPU it would silently be DDP
    with pytest.raises(ConfigError, match="FSDP on GPUs only"):
        check(fsdp_cfg(fsdp="full_shard"), world=2, device_kind="cpu")


def test_fsdp_settings_reach_the_training_arguments(tmp_path):
    """fsdp passes through to TrainingArguments as written; fsdp_config arrives as the checked
    mapping read from its file, not the file name."""
    from nbtrain.engine.training_args import translate

    path = tmp_path / "fsdp.yaml"
    path.write_text("transformer_layer_cls_to_wrap: [LlamaDecoderLayer]\nmin_num_params: 0\n")
    cfg = fsdp_cfg(fsdp="full_shard auto_wrap", fsdp_config=str(path))
    kwargs = translate(
        cfg, output_dir=str(tmp_path / "out"), has_eval=False, metric_for_best_model=None,
        greater_is_better=None, precision="bf16", logging_steps=10,
    )  # fmt: skip
    distributed.process_kwargs(
        cfg, kwargs, task="causal-lm", world=2, precision="bf16", device_kind="cuda",
        total_steps=10,
    )  # fmt: skip
    assert kwargs["fsdp"] == "full_shard auto_wrap"
    assert kwargs["fsdp_config"] == {
        "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "min_num_params": 0,
    }
