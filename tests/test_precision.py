"""Precision and hardware checks for simulated devices: CPU, T4-like, Ampere-like."""

from __future__ import annotations

import pytest

from nbtrain.config import load_config
from nbtrain.config.schema import Config, LoraConfig
from nbtrain.engine.model import (
    SIMULATED,
    DeviceInfo,
    check_hardware,
    device_info,
    has_bitsandbytes,
    resolve_precision,
    simulated_device,
)
from nbtrain.errors import ConfigError

CPU, T4, A100 = SIMULATED["cpu"], SIMULATED["t4"], SIMULATED["a100"]


@pytest.mark.parametrize(("dev", "want"), [(CPU, "fp32"), (T4, "fp16"), (A100, "bf16")])
def test_auto_precision_per_device(dev: DeviceInfo, want: str):
    assert resolve_precision("auto", dev) == want
    assert resolve_precision("fp32", dev) == "fp32"


def test_impossible_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU") as e:
        resolve_precision("fp16", CPU)
    assert e.value.field == "precision"
    with pytest.raises(ConfigError, match=r"bf16 is not supported by Tesla T4.*Ampere"):
        resolve_precision("bf16", T4)
    assert resolve_precision("fp16", T4) == "fp16"
    assert resolve_precision("bf16", A100) == "bf16"


def test_tf32_only_from_ampere():
    assert A100.tf32 and SIMULATED["h100"].tf32
    assert not T4.tf32 and not CPU.tf32


def test_simulated_device_is_scoped():
    real = device_info()
    with simulated_device("t4") as dev:
        assert device_info() is dev is T4
        with simulated_device(A100):
            assert device_info() is A100
        assert device_info() is T4
    assert device_info() == real


@pytest.mark.parametrize("optim", ["adamw_8bit", "paged_adamw_8bit", "lion_8bit"])
def test_bitsandbytes_optimizers_need_gpu_and_package(optim: str):
    cfg = Config(model="x", optim=optim)
    with pytest.raises(ConfigError, match="CUDA GPU") as e:
        check_hardware(cfg, CPU)
    assert e.value.field == "optim" and "adamw_torch" in str(e.value)
    if not has_bitsandbytes():
        with pytest.raises(ConfigError, match="bitsandbytes package") as e:
            check_hardware(cfg, A100)
        assert "CUDA GPU" not in str(e.value)  # the GPU is there; only the package is missing
    check_hardware(Config(model="x", optim="adafactor"), CPU)  # no error
    check_hardware(Config(model="x", optim="adamw_torch"), CPU)


def test_quantization_needs_gpu_bitsandbytes_and_lora(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match=r"quantization: 4bit.*CUDA GPU") as e:
        check_hardware(Config(model="x", quantization="4bit", lora=LoraConfig()), CPU)
    assert e.value.field == "quantization"
    # With the package present (as on a Colab GPU), a full fine-tune of a 4-bit model is refused.
    monkeypatch.setattr("nbtrain.engine.model.has_bitsandbytes", lambda: True)
    with pytest.raises(ConfigError, match="add a lora: section"):
        check_hardware(Config(model="x", quantization="8bit"), A100)
    check_hardware(Config(model="x", quantization="4bit", lora=LoraConfig()), A100)


def test_quantization_field_in_config():
    assert load_config({"model": "m", "data": {"train": "x.csv"}}).quantization == "none"
    cfg = load_config({"model": "m", "data": {"train": "x.csv"}, "quantization": "4bit"})
    assert cfg.quantization == "4bit"
    with pytest.raises(ConfigError, match="quantization"):
        load_config({"model": "m", "data": {"train": "x.csv"}, "quantization": "3bit"})


# -- the engine refuses before training -------------------------------------------------------


def _no_training(events: list) -> None:
    types = [e.type for e in events]
    assert "start" not in types and "log" not in types
    assert types[-1] == "end" and events[-1].status == "failed"


def test_run_refuses_bf16_on_a_t4_before_training(fast_cfg):
    import nbtrain

    events: list = []
    with simulated_device("t4"), pytest.raises(ConfigError, match="bf16 is not supported"):
        nbtrain.finetune(dict(fast_cfg, precision="bf16"), display="none", on_event=events.append)
    _no_training(events)


def test_run_refuses_fp16_and_8bit_optim_on_this_cpu(fast_cfg):
    import nbtrain

    if device_info().kind == "cuda":
        pytest.skip("this machine has a GPU")
    events: list = []
    with pytest.raises(ConfigError, match="fp16"):
        nbtrain.finetune(dict(fast_cfg, fp16=True), display="none", on_event=events.append)
    _no_training(events)
    events.clear()
    with pytest.raises(ConfigError, match="bitsandbytes"):
        nbtrain.finetune(
            dict(fast_cfg, optim="adamw_8bit", name="t8"),
            display="none",
            on_event=events.append,
        )
    _no_training(events)


def test_dry_run_reports_memory_and_refuses_the_impossible(fast_cfg):
    from nbtrain.config import load_config
    from nbtrain.preflight import inspect

    def dry_run(cfg):
        return inspect(cfg, timing=False)

    cfg = load_config(dict(fast_cfg, lora={"r": 4}))
    report = dry_run(cfg)
    text = report.text()
    assert "== Parameters and memory ==" in text
    assert "trainable" in text and "Peak memory estimate" in text
    assert "Parameters and memory" in report._repr_html_()
    with simulated_device("t4"), pytest.raises(ConfigError, match="bf16"):
        dry_run(load_config(dict(fast_cfg, precision="bf16")))
    with simulated_device("t4"):  # a T4: fp16 chosen, the estimate says so
        assert "(fp16)" in dry_run(cfg).text()


def test_bf16_on_a_cpu_trains_under_autocast_with_fp32_weights(fast_cfg):
    """``precision: bf16`` on a CPU: the forward runs under bf16 autocast (1.46x the samples/s
    of fp32 on this machine's AVX512-BF16 CPU at the same SST-2 accuracy, docs/performance.md)
    while the weights and the optimizer stay fp32."""
    import torch
    from transformers import TrainerCallback

    import nbtrain

    seen: dict = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            def hook(module, inputs, output):
                seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))
                seen.setdefault("dtype", torch.get_autocast_dtype("cpu"))
                seen.setdefault("out", output.dtype)

            linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
            linear.register_forward_hook(hook)

    r = nbtrain.finetune(
        {**fast_cfg, "name": "cpu-bf16", "epochs": 1, "precision": "bf16", "callbacks": [Probe()]},
        display="none",
    )
    assert r.status == "finished"
    assert seen == {"autocast": True, "dtype": torch.bfloat16, "out": torch.bfloat16}
    assert {p.dtype for p in r.model.parameters()} == {torch.float32}


CPU_BF16 = DeviceInfo("cpu", "CPU with AVX512-BF16", bf16=True, fp16=False)


def _bert(hidden: int):
    from transformers import BertConfig

    return BertConfig(hidden_size=hidden, num_attention_heads=2, intermediate_size=2 * hidden)


def test_auto_is_bf16_on_a_cpu_with_bf16_instructions_for_a_wide_enough_model():
    from transformers import T5Config

    from nbtrain.engine.model import CPU_BF16_MIN_HIDDEN

    wide, narrow = _bert(384), _bert(32)  # MiniLM's width; the tests' tiny BERT
    assert resolve_precision("auto", CPU_BF16, wide) == "bf16"
    assert resolve_precision("auto", CPU_BF16, T5Config(d_model=512)) == "bf16"
    # casts and per-op overhead outweigh the faster matmuls of a narrow model (0.91x at 32)
    assert resolve_precision("auto", CPU_BF16, narrow) == "fp32"
    assert resolve_precision("auto", CPU_BF16, _bert(CPU_BF16_MIN_HIDDEN - 2)) == "fp32"
    assert resolve_precision("auto", CPU_BF16, None) == "fp32"  # width unknown: no guess
    assert resolve_precision("auto", CPU, wide) == "fp32"  # emulated bf16 is slower
    assert resolve_precision("fp32", CPU_BF16, wide) == "fp32"  # asked for: kept


def test_cpu_bf16_detection_agrees_with_the_kernels_flags():
    from pathlib import Path

    from nbtrain.engine.model import cpu_has_bf16

    info = Path("/proc/cpuinfo")
    if not info.exists():
        pytest.skip("no /proc/cpuinfo here")
    flags = info.read_text().split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert cpu_has_bf16() == native
    assert device_info().kind != "cpu" or device_info().bf16 == native


def test_a_wide_model_on_a_bf16_cpu_trains_under_autocast_by_default(tmp_path, sentiment_csv):
    """``precision: auto`` (the default) on a CPU with bf16 instructions: autocast, fp32 weights,
    and a note in the view saying why and how to turn it off."""
    import torch
    from transformers import TrainerCallback

    import nbtrain
    from tests.conftest import build_tiny_bert

    seen: dict = {}

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            seen.setdefault("args_bf16", args.bf16)

        def on_train_begin(self, args, state, control, model=None, **kw):
            def hook(module, inputs, output):
                seen.setdefault("autocast", torch.is_autocast_enabled("cpu"))

            next(
                m for m in model.modules() if isinstance(m, torch.nn.Linear)
            ).register_forward_hook(hook)

    wide = build_tiny_bert(tmp_path / "wide", hidden_size=128)
    notices: list = []
    cfg = {
        "model": str(wide),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 1,
        "batch_size": 32,
        "runs_dir": str(tmp_path / "runs"),
        "cpu_threads": 1,
        "callbacks": [Probe()],
    }
    with simulated_device(CPU_BF16):
        r = nbtrain.finetune(cfg, display="none", on_event=notices.append)
    assert r.status == "finished"
    assert seen == {"args_bf16": True, "autocast": True}
    assert {p.dtype for p in r.model.parameters()} == {torch.float32}
    speed = [e.message for e in notices if e.type == "notice" and e.kind == "speed"]
    assert any("bf16 instructions" in m and "precision: fp32" in m for m in speed), speed

    seen.clear()
    notices.clear()
    with simulated_device(CPU_BF16):
        r = nbtrain.finetune(
            {**cfg, "name": "fp32", "precision": "fp32"}, display="none", on_event=notices.append
        )
    assert seen == {"args_bf16": False, "autocast": False}
    assert not any("bf16" in getattr(e, "message", "") for e in notices if e.type == "notice")


def test_timed_steps_and_the_lr_finder_run_in_the_precision_training_will(
    tmp_path, sentiment_csv, monkeypatch
):
    """The dry run's timed steps and the LR finder on a bf16 CPU run under bf16 autocast as
    the Trainer will: timed in fp32, the estimate was 1.5x too long for MiniLM here."""
    import torch

    import nbtrain
    from nbtrain.engine import model as model_mod
    from nbtrain.engine.model import autocast
    from tests.conftest import build_tiny_bert

    with autocast(CPU_BF16, "bf16"):
        assert (
            torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )
    for dev, precision in ((CPU_BF16, "fp32"), (CPU, "fp16"), (T4, "fp32")):
        with autocast(dev, precision):
            assert not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda")

    used: list[str] = []

    def spy(dev, precision):
        used.append(precision)
        return autocast(dev, precision)

    monkeypatch.setattr(model_mod, "autocast", spy)
    cfg = {
        "model": str(build_tiny_bert(tmp_path / "wide", hidden_size=128)),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "batch_size": 16,
        "runs_dir": str(tmp_path / "runs"),
    }
    with simulated_device(CPU_BF16):
        nbtrain.lr_find(cfg, steps=10)
        assert set(used) == {"bf16"}
        used.clear()
        report = nbtrain.inspect(cfg)
    assert report.time is not None, report.time_error
    assert used and set(used) == {"bf16"}
