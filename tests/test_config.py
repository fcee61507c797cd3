"""Config schema: loading, aliases, tutorial vocabulary, errors, translation to TrainingArguments."""

from __future__ import annotations

import dataclasses

import pytest

import nbtrain
from nbtrain.config import Config, load_config, to_yaml
from nbtrain.engine.training_args import installed_training_fields, translate

BASE = "model: m\ndata: {train: t.csv}\n"


def _v(x) -> str:
    return getattr(x, "value", x)


def err(text: str) -> str:
    with pytest.raises(nbtrain.ConfigError) as info:
        load_config(BASE + text)
    msg = str(info.value)
    assert "\n" not in msg.strip(), "errors are one paragraph"
    assert "Traceback" not in msg
    return msg


def test_yaml_dict_and_kwargs_give_the_same_config():
    a = load_config(BASE + "epochs: 2\nlr: 2e-5\nbatch_size: 8\n")
    b = load_config(
        {
            "model": "m",
            "data": {"train": "t.csv"},
            "num_train_epochs": 2,
            "learning_rate": 2e-5,
            "per_device_train_batch_size": 8,
        }
    )
    c = load_config(model="m", epochs=2, lr=2e-5, batch_size=8, **{"data.train": "t.csv"})
    assert a == b == c
    assert a.learning_rate == pytest.approx(2e-5)  # YAML 1.1 reads 2e-5 as text; still a float
    assert isinstance(a.num_train_epochs, float)


def test_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(BASE + "max_length: 64\ntrain: other.csv\n")
    cfg = load_config(p)
    assert cfg.data.max_length == 64 and cfg.data.train == "other.csv"


def test_tutorial_vocabulary():
    cfg = load_config(
        BASE + "warmup_ratio: 0.1\nevaluation_strategy: epoch\nfp16: true\n"
        "group_by_length: false\nlogging_dir: tb\nreport_to: tensorboard\n"
        "tokenizer: tok\noutput_dir: results/exp1\n"
    )
    assert cfg.eval_strategy == "epoch"
    assert cfg.precision == "fp16"
    assert cfg.group_by_length is False
    assert cfg.report_to == ["tensorboard"]
    assert cfg.tokenizer == "tok"
    assert (cfg.runs_dir, cfg.name) == ("results", "exp1")
    assert load_config(BASE + "bf16: true").precision == "bf16"
    assert load_config(BASE + "report_to: [tensorboard, wandb]").report_to == [
        "tensorboard",
        "wandb",
    ]
    assert load_config(BASE + "train_sampling_strategy: group_by_length").group_by_length is True


def test_translation_is_accepted_by_the_installed_training_arguments(tmp_path):
    from transformers import TrainingArguments

    cfg = load_config(
        BASE + "warmup_ratio: 0.2\nevaluation_strategy: steps\neval_steps: 5\n"
        "group_by_length: true\nlogging_dir: tb\nreport_to: none\nadam_beta1: 0.8\n"
        "gradient_checkpointing: true\nlr_scheduler_type: cosine\n"
    )
    kw = translate(
        cfg,
        output_dir=str(tmp_path),
        has_eval=True,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        precision="fp32",
        logging_steps=3,
    )
    args = TrainingArguments(**kw)
    fields = installed_training_fields()
    if "warmup_ratio" in fields:
        assert args.warmup_ratio == pytest.approx(0.2)
    else:  # transformers 5: a float warmup_steps below 1 is a ratio
        assert args.warmup_steps == pytest.approx(0.2)
    assert _v(args.eval_strategy) == "steps" and args.eval_steps == 5
    if "train_sampling_strategy" in fields:
        assert args.train_sampling_strategy == "group_by_length"
    else:
        assert args.group_by_length is True
    assert args.adam_beta1 == pytest.approx(0.8)
    assert args.load_best_model_at_end and args.metric_for_best_model == "accuracy"
    assert _v(args.lr_scheduler_type) == "cosine"
    ckpt_field = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing"
    )
    assert getattr(args, ckpt_field) is True
    assert args.report_to in ([], ["none"], "none") or list(args.report_to) == []


def test_auto_strategies_without_eval(tmp_path):
    from transformers import TrainingArguments

    cfg = load_config(BASE)
    kw = translate(
        cfg,
        output_dir=str(tmp_path),
        has_eval=False,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        precision="fp32",
        logging_steps=1,
    )
    args = TrainingArguments(**kw)
    assert _v(args.eval_strategy) == "no"
    assert args.load_best_model_at_end is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: -1", ["learning_rate", "-1", "greater than 0"]),
        ("epochs: three", ["epochs", "'three'", "number"]),
        ("eval_strategy: sometimes", ["eval_strategy", "'sometimes'", "auto, no, steps, epoch"]),
        ("eval_strategy: epochs", ["Did you mean 'epoch'"]),
        (
            "learnin_rate: 0.1",
            ["Unknown config key 'learnin_rate'", "Did you mean 'learning_rate'"],
        ),
        ("batchsize: 8", ["Did you mean", "batch_size"]),
        ("lora: {rank: 8}", ["lora.rank", "Keys of 'lora'"]),
        ("precision: fp8", ["precision", "auto, fp32, fp16, bf16"]),
        ("batch_size: 0", ["batch_size", "at least 1"]),
        ("batch_size: 2.5", ["whole number"]),
        ("fp16: true\nbf16: true", ["fp16 and bf16"]),
        ("eval_strategy: steps", ["eval_steps"]),
        ("output_dir: x\ntraining_args: {output_dir: y}", ["managed by nbtrain"]),
        ("optim: adamw_tourch", ["optim", "Did you mean 'adamw_torch'"]),
        ("data: {train: t.csv, evall: d.csv}", ["data.evall", "Did you mean 'eval'"]),
        ("report_to: tensorbord", ["report_to", "tensorboard"]),
        ("adam_beta1: not a number", ["adam_beta1: 'not a number' is not valid", "a number"]),
        ("training_args: {dataloader_num_workers: 2.5}", ["whole number"]),
        ("dataloader_drop_last: maybe", ["dataloader_drop_last", "true/false"]),
        ("torch_compile_mode: 3", ["torch_compile_mode: 3", "text or null"]),
    ],
)
def test_errors_name_field_value_and_allowed(text, expected):
    msg = err(text)
    for part in expected:
        assert part in msg, msg


def test_pass_through_values_take_their_declared_types():
    cfg = load_config(
        "model: m\ndata: {train: t.csv}\nadam_epsilon: 1e-8\nadam_beta1: 1\n"
        "dataloader_num_workers: '2'\npush_to_hub: 'no'\nfsdp_config: {a: 1}\n"
    )
    assert cfg.training_args == {
        "adam_epsilon": 1e-8,  # YAML reads 1e-8 as text
        "adam_beta1": 1.0,
        "dataloader_num_workers": 2,
        "push_to_hub": False,
        "fsdp_config": {"a": 1},
    }


def test_yaml_syntax_error_has_line_number():
    with pytest.raises(nbtrain.ConfigError, match="line 3"):
        load_config("model: m\ndata: {train: x}\nepochs: [1\n")


def test_unsafe_yaml_is_rejected():
    with pytest.raises(nbtrain.ConfigError, match="safe_load"):
        load_config(BASE + "x: !!python/object/apply:os.system ['echo hi']\n")


def test_required_fields():
    with pytest.raises(nbtrain.ConfigError, match="model is required"):
        load_config("data: {train: x}")
    with pytest.raises(nbtrain.ConfigError, match=r"data\.train is required"):
        load_config("model: m")


def test_every_field_has_help_and_group():
    from nbtrain.config.schema import DataConfig, LoraConfig

    for cls in (Config, DataConfig, LoraConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("group"), f.name
            if f.metadata.get("kind") not in ("section", "lora"):
                assert f.metadata.get("help"), f.name


def test_yaml_round_trip():
    cfg = load_config(BASE + "epochs: 2\nlora: {r: 4}\nadam_beta2: 0.99\n")
    again = load_config(to_yaml(cfg))
    assert again == cfg
    assert again.lora.r == 4 and again.training_args == {"adam_beta2": 0.99}


def test_config_help_lists_fields():
    text = nbtrain.config_help()
    assert "learning_rate (also: lr)" in text and "data.max_length" in text


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import sys, nbtrain; heavy=[m for m in ('torch','transformers','datasets','peft',"
        "'matplotlib','ipywidgets') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dotted_keys_in_a_dict():
    cfg = load_config({"model": "m", "data": {"train": "t.csv"}, "data.eval": "e.csv", "lora.r": 4})
    assert cfg.data.train == "t.csv" and cfg.data.eval == "e.csv" and cfg.lora.r == 4


def test_display_key_is_checked_and_not_part_of_identity():
    from nbtrain.engine.rundir import identity

    assert load_config(BASE + "display: text").display == "text"
    assert "display" in err("display: fancy")
    assert identity(load_config(BASE + "display: none")) == identity(load_config(BASE))
