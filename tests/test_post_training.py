"""Post-training on TRL (dpo, orpo, kto, grpo), the baseline evaluation and the arena.

Tiny GPT-2 (2 layers, hidden 32, a BPE tokenizer trained here) on preference data nbtrain
generates (``nbtrain.examples``): the chosen answer names the colour, the rejected one dodges.
The training tests are slow (TRL's import alone takes seconds); the config, inference and view
checks are fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from nbtrain.config import load_config
from nbtrain.errors import ConfigError, DataError
from nbtrain.examples import kto_rows, preference_rows, prompt_rows, vowel_reward
from tests.tiny_models import build_tiny_gpt2, events_of


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("m") / "gpt2")


def _cfg(gpt2: Path, runs: Path, name: str, rows: list, **kw) -> dict:
    return {
        "model": str(gpt2),
        "data": {"train": rows[8:], "eval": rows[:8]},
        "epochs": 3,
        "batch_size": 8,
        "lr": 5e-3,
        "runs_dir": str(runs),
        "name": name,
        "max_new_tokens": 3,
        "eval_samples": 2,
        **kw,
    }


# -- fast: config, inference, hooks, views ------------------------------------------------------
def my_reward(completions, **kw):
    return [1.0 for _ in completions]


def test_reward_functions_from_the_notebook_and_by_name() -> None:
    from nbtrain.config.refs import Ref

    cfg = load_config(
        {"model": "m", "data": {"train": "t.csv"}, "reward": [Ref("my_reward", my_reward)]}
    )
    assert cfg.reward[0].value is my_reward
    assert cfg.to_dict()["reward"] == ["{my_reward}"]  # config.yaml records the name
    by_name = load_config({"model": "m", "data": {"train": "t.csv"}, "rewards": "mod:fn"})
    assert by_name.reward == ["mod:fn"]
    with pytest.raises(ConfigError, match="is not a function"):
        load_config({"model": "m", "data": {"train": "t.csv"}, "reward": ["my_reward"]})


def test_tasks_are_inferred_from_the_columns() -> None:
    from nbtrain.engine.tasks import infer_task

    def infer(cols, **kw):
        return infer_task(cols, load_config({"model": "m", "data": {"train": "t"}, **kw}), [])

    assert infer(["prompt", "chosen", "rejected"]) == "dpo"
    assert infer(["chosen", "rejected"]) == "dpo"  # conversational, prompt inside
    assert infer(["prompt", "completion", "label"]) == "kto"
    assert infer(["prompt", "completion"]) == "causal-lm"  # no label: SFT
    assert infer(["prompt", "colour"], reward=["m:f"]) == "grpo"


def test_grpo_batch_must_hold_whole_groups() -> None:
    from nbtrain.engine.tasks.grpo import GRPO

    cfg = load_config(
        {"model": "m", "data": {"train": "t"}, "task": "grpo", "reward": [my_reward],
         "batch_size": 6, "num_generations": 4}
    )  # fmt: skip
    task = GRPO(cfg)
    task.funcs = [my_reward]
    with pytest.raises(ConfigError, match="multiple of num_generations"):
        task._task_args()
    with pytest.raises(ConfigError, match="needs reward functions"):
        GRPO(load_config({"model": "m", "data": {"train": "t"}})).prepare(None)


def length_penalty(completions, **kw):
    return [-len(c) / 100 for c in completions]


def test_grpo_generation_settings_and_reward_weights_reach_trl(tmp_path: Path) -> None:
    from nbtrain.engine.tasks import get_task
    from nbtrain.engine.tasks.grpo import reward_functions

    base = {"model": "m", "data": {"train": "t"}, "task": "grpo", "batch_size": 8,
            "reward": [my_reward, length_penalty], "num_generations": 4,
            "max_completion_length": 16, "temperature": 0.7}  # fmt: skip
    task = get_task("grpo", load_config({**base, "reward_weights": [1.0, 0.5]}))
    task.funcs = reward_functions(task.cfg.reward)
    kwargs = task.training_args({"eval_strategy": "epoch", "per_device_train_batch_size": 8})
    args = task.training_args_class()(output_dir=str(tmp_path), use_cpu=True, **kwargs)
    assert type(args).__name__ == "GRPOConfig"  # the names are the installed TRL's
    assert (args.num_generations, args.max_completion_length) == (4, 16)
    assert args.temperature == 0.7 and args.reward_weights == [1.0, 0.5]
    assert args.eval_on_start  # the baseline before training
    one = get_task("grpo", load_config({**base, "reward_weights": [1.0]}))
    one.funcs = reward_functions(one.cfg.reward)
    with pytest.raises(ConfigError, match="one weight per function"):
        one.training_args({"per_device_train_batch_size": 8})


def test_reward_functions_receive_only_the_arguments_they_name() -> None:
    from nbtrain.engine.tasks.grpo import reward_functions

    def two(completions, prompts):
        return [len(c) + len(p) for c, p in zip(completions, prompts)]

    (fn,) = reward_functions([two])
    assert fn(prompts=["ab"], completions=["c"], completion_ids=[[1]], trainer_state=None) == [3]
    assert fn.__name__ == "two"  # TRL logs rewards/<name>/mean
    (imported,) = reward_functions(["nbtrain.examples:vowel_reward"])
    assert imported(completions=["aa", "xy"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="cannot import"):
        reward_functions(["nbtrain.examples:nope"])


def test_trl_args_are_checked_against_the_config_class() -> None:
    from nbtrain.engine.tasks.preference import check_trl_args

    @dataclass
    class FakeConfig:
        beta: float = 0.1
        loss_type: list = field(default_factory=list)

    assert check_trl_args({"loss_type": ["ipo"]}, FakeConfig, "dpo") == {"loss_type": ["ipo"]}
    with pytest.raises(ConfigError, match="Did you mean 'loss_type'"):
        check_trl_args({"loss_typ": "ipo"}, FakeConfig, "dpo")


def test_eval_before_training_defaults_per_task() -> None:
    from nbtrain.engine.tasks import get_task

    base = {"model": "m", "data": {"train": "t"}}
    on = {"eval_strategy": "epoch"}
    assert get_task("dpo", load_config(base)).training_args(dict(on)).get("eval_on_start")
    sft = get_task("causal-lm", load_config(base))
    assert "eval_on_start" not in sft.training_args(dict(on))
    asked = get_task("causal-lm", load_config({**base, "eval_before_training": True}))
    assert asked.training_args(dict(on))["eval_on_start"] is True
    assert "eval_on_start" not in asked.training_args({"eval_strategy": "no"})  # no eval data
    off = get_task("grpo", load_config({**base, "eval_before_training": False}))
    assert "eval_on_start" not in off.training_args(dict(on))


def test_samples_table_shows_chosen_rejected_and_rewards() -> None:
    from nbtrain.display.html import model_outputs
    from nbtrain.display.state import RunState
    from nbtrain.display.text import sample_line
    from nbtrain.events import Evaluated

    state = RunState()
    sample = {"prompt": "Q: sky?", "output": "blue", "chosen": " blue", "rejected": " no <idea>"}
    state.update(Evaluated(step=4, epoch=1.0, metrics={"loss": 0.3}, details={"samples": [sample]}))
    html = model_outputs(state)
    assert "samples at step 4" in html and "rejected" in html and "no &lt;idea&gt;" in html
    assert "reward" not in html  # only the columns samples carry
    grpo = {"prompt": "p", "output": "o", "reward": 0.5, "rewards": {"vowel_reward": 0.5}}
    state.update(Evaluated(step=5, epoch=1.0, metrics={"loss": 0.3}, details={"samples": [grpo]}))
    html = model_outputs(state)
    assert "vowel_reward 0.5000" in html and ">0.5000<" in html
    assert "rejected: 'no <idea>'" in sample_line(sample)
    assert sample_line(grpo).endswith("reward 0.500")


def test_arena_view_text_and_html() -> None:
    from nbtrain.display.arena import ArenaView
    from nbtrain.engine.arena import ArenaResult, Contender

    view = ArenaView(
        ArenaResult(
            prompts=["Q: sky?", "Q: <snow>?"],
            contenders=[
                Contender("base", "base model /m", "causal-lm", ["x", "y"]),
                Contender("dpo-run", "run runs/dpo-run", "dpo", ["blue", "white"]),
            ],
            settings={"max_new_tokens": 3, "do_sample": False},
        )
    )
    text = repr(view)
    assert "dpo-run | white" in text and "max_new_tokens=3" in text
    html = view._repr_html_()
    assert html.count("<tr>") == 3 and "&lt;snow&gt;" in html and "dpo" in html
    assert view.to_records()[1] == {"prompt": "Q: <snow>?", "base": "y", "dpo-run": "white"}


def test_arena_magic_generates_and_rejects_bad_flags(gpt2: Path, tmp_path: Path) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    import nbtrain

    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "nbtrain")
        with pytest.raises(UsageError, match="at least one run"):
            ip.run_line_magic("nbtrain", "arena")
        with pytest.raises(UsageError, match=r"unknown flag '--promts'.*--prompts"):
            ip.run_line_magic("nbtrain", "arena a --promts p")
        with pytest.raises(UsageError, match="no notebook variable 'nope'"):
            ip.run_line_magic("nbtrain", "arena a --prompts nope")
        with pytest.raises(UsageError, match="give prompts"):
            ip.run_line_magic("nbtrain", "arena /no/such/model")
        ip.user_ns["ps"] = ["Q: colour of sky? A:", "Q: colour of snow? A:"]
        with pytest.raises(UsageError, match="neither a run"):
            ip.run_line_magic("nbtrain", "arena /no/such/model --prompts ps --max-new-tokens 2")
        with pytest.raises(UsageError, match="whole number"):
            ip.run_line_magic("nbtrain", f"arena {gpt2} --prompts ps --max-new-tokens two")
        line = f"arena {gpt2} {gpt2} --prompts ps --max-new-tokens 2 --runs-dir {tmp_path}"
        view = ip.run_line_magic("nbtrain", line)
        assert view.prompts == ip.user_ns["ps"] and view.settings["max_new_tokens"] == 2
        assert view.models == ["gpt2", "gpt2 (2)"]
        direct = nbtrain.arena([str(gpt2)], prompts=ip.user_ns["ps"], max_new_tokens=2)
        assert view.outputs["gpt2"] == view.outputs["gpt2 (2)"] == direct.outputs["gpt2"]
    finally:
        # A shell left behind would make later tests see IPython where a script has none.
        InteractiveShell.clear_instance()


def test_conversational_preference_data_goes_through_the_chat_template() -> None:
    import datasets

    from nbtrain.engine.data import RawData
    from nbtrain.engine.tasks import get_task
    from tests.tiny_models import CHAT_TEMPLATE, bpe_tokenizer, corpus

    def conv(r: dict, with_prompt: bool) -> dict:
        p = [{"role": "user", "content": r["prompt"]}]
        c, j = ({"role": "assistant", "content": r[k]} for k in ("chosen", "rejected"))
        if with_prompt:
            return {"prompt": p, "chosen": [c], "rejected": [j]}
        return {"chosen": [*p, c], "rejected": [*p, j]}  # the prompt inside the conversations

    rows = preference_rows(6)
    tok = bpe_tokenizer(corpus(), ["<|endoftext|>"], eos_token="<|endoftext|>")  # no template
    for with_prompt in (True, False):
        data = datasets.Dataset.from_list([conv(r, with_prompt) for r in rows])
        cfg = load_config(
            {
                "model": "m",
                "data": {"train": "t", "chat_template": CHAT_TEMPLATE},
                "eval_samples": 1,
            }
        )
        task = get_task("dpo", cfg)
        prepared = task.prepare(RawData(data.select(range(2, 6)), data.select(range(2)), "t", "e"))
        assert task.chat and "conversations (chat template)" in prepared.notices[0]
        tokenized = task.tokenize(prepared.eval, tok, 64)
        first = tok.decode(tokenized[0]["input_ids"])  # the dry run's view: prompt + chosen
        assert first == f"<|user|>{rows[0]['prompt']}<|end|><|assistant|>{rows[0]['chosen']}<|end|>"
        prompts, chosen = task.sample_prompts()  # implicit prompt: all turns but the answer
        assert prompts == [[{"role": "user", "content": rows[0]["prompt"]}]]
        assert chosen == [rows[0]["chosen"]]
        task.on_evaluate(tiny_gpt2(tok), tok, SimpleNamespace(per_device_eval_batch_size=2))
        (sample,) = task.last_details["samples"]
        assert sample["prompt"] == f"user: {rows[0]['prompt']}"  # to read
        assert sample["messages"] == prompts[0]  # for the arena's chat templates
    assert tok.chat_template == CHAT_TEMPLATE  # set on the tokenizer TRL and final/ get
    bare = get_task("dpo", load_config({"model": "m", "data": {"train": "t"}}))
    bare.prepare(RawData(data, None, "t", None))
    plain = bpe_tokenizer(corpus(), ["<|endoftext|>"], eos_token="<|endoftext|>")
    with pytest.raises(DataError, match="no chat template"):
        bare.tokenize(bare.prepared.train, plain, 64)


def tiny_gpt2(tok, seed: int = 0):
    """A GPT-2 (2 layers, hidden 32) in memory, random weights from ``seed``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        eos_token_id=tok.eos_token_id)  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def test_arena_keeps_a_column_for_each_model_of_the_same_name() -> None:
    import nbtrain
    from tests.tiny_models import bpe_tokenizer, corpus

    tok = bpe_tokenizer(corpus(), ["<|endoftext|>"], eos_token="<|endoftext|>")
    a, b = tiny_gpt2(tok, 0), tiny_gpt2(tok, 1)
    prompts = ["Q: colour of sky? A:", "Q: colour of snow? A:"]
    view = nbtrain.arena([(a, tok), (b, tok)], prompts=prompts, max_new_tokens=4)
    assert view.models == ["GPT2LMHeadModel", "GPT2LMHeadModel (2)"]  # two columns, not one
    alone = [nbtrain.arena([(m, tok)], prompts=prompts, max_new_tokens=4) for m in (a, b)]
    assert alone[0].outputs["GPT2LMHeadModel"] != alone[1].outputs["GPT2LMHeadModel"]
    assert view.outputs["GPT2LMHeadModel"] == alone[0].outputs["GPT2LMHeadModel"]
    assert view.outputs["GPT2LMHeadModel (2)"] == alone[1].outputs["GPT2LMHeadModel"]
    assert "GPT2LMHeadModel (2)" in view._repr_html_() and "GPT2LMHeadModel (2) |" in repr(view)


def test_arena_gives_a_chat_run_its_recorded_conversations(tmp_path: Path) -> None:
    import shutil

    import nbtrain
    from nbtrain.events import Evaluated, EventLog, RunStarted
    from tests.tiny_models import build_tiny_llama

    llama = build_tiny_llama(tmp_path / "llama")  # has a chat template
    run = tmp_path / "runs" / "chat-dpo"
    shutil.copytree(llama, run / "final")
    conv = [{"role": "user", "content": "colour of sky?"}]
    log = EventLog(run / "events.jsonl")
    log(RunStarted(run="chat-dpo", task="dpo"))
    sample = {"prompt": "user: colour of sky?", "output": "x", "messages": conv}  # as recorded
    log(Evaluated(step=4, epoch=1.0, details={"samples": [sample]}))
    view = nbtrain.arena(["chat-dpo"], runs_dir=tmp_path / "runs", max_new_tokens=4)
    assert view.prompts == ["user: colour of sky?"]
    chat = nbtrain.arena([llama], prompts=[conv], max_new_tokens=4).outputs["llama"]
    text = nbtrain.arena([llama], prompts=["user: colour of sky?"], max_new_tokens=4)
    assert chat != text.outputs["llama"]  # the template changes what this model writes
    assert view.outputs["chat-dpo"] == chat


def test_arena_takes_a_lora_adapter_folder(gpt2: Path, tmp_path: Path) -> None:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import nbtrain

    tok = AutoTokenizer.from_pretrained(gpt2)
    torch.manual_seed(1)
    lora = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    with warnings.catch_warnings():  # peft reads transformers' renamed checkpointing attribute
        warnings.simplefilter("ignore", FutureWarning)
        tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2), lora).eval()
    tuned.save_pretrained(tmp_path / "final")  # what a LoRA run keeps in final/ or a checkpoint
    tok.save_pretrained(tmp_path / "final")
    prompts = ["Q: colour of sky? A:", "Q: colour of snow? A:"]
    view = nbtrain.arena([str(gpt2), tmp_path / "final"], prompts=prompts, max_new_tokens=4)
    assert view.models == ["gpt2", "final"]
    assert [c.task for c in view.result.contenders] == ["causal-lm", "causal-lm"]
    in_memory = nbtrain.arena([(tuned, tok)], prompts=prompts, max_new_tokens=4)
    assert view.outputs["final"] == in_memory.outputs[in_memory.models[0]]
    assert view.outputs["final"] != view.outputs["gpt2"]  # the adapter is on
    assert "LoRA adapter" in view.result.contenders[1].source


def test_reference_model_is_one_frozen_copy_without_lora_and_none_with_it(gpt2: Path) -> None:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nbtrain.engine.tasks import get_task

    def ref_of(task: str, model, **kw):
        cfg = load_config({"model": "m", "data": {"train": "t"}, **kw})
        return get_task(task, cfg).trainer_kwargs({"model": model}).get("ref_model")

    model = AutoModelForCausalLM.from_pretrained(gpt2)
    for task in ("dpo", "kto"):
        ref = ref_of(task, model)
        assert ref is not None and ref is not model and not ref.training
        assert not any(p.requires_grad for p in ref.parameters())
        assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
        assert all(
            a.data_ptr() != b.data_ptr() for a, b in zip(ref.parameters(), model.parameters())
        )
    assert ref_of("orpo", model) is None  # ORPO has no reference
    assert ref_of("dpo", model, trl_args={"precompute_ref_log_probs": True}) is None
    with warnings.catch_warnings():  # peft reads transformers' renamed checkpointing attribute
        warnings.simplefilter("ignore", FutureWarning)
        lora = get_peft_model(
            model, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True)
        )
    assert ref_of("dpo", lora) is None  # the adapter-disabled model is the reference


# -- slow: training -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dpo_run(gpt2: Path, tmp_path_factory: pytest.TempPathFactory):
    import warnings

    import nbtrain

    runs = tmp_path_factory.mktemp("runs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = nbtrain.finetune(_cfg(gpt2, runs, "dpo", preference_rows(48)), display="none")
    run.warnings = [  # what a notebook would show as red boxes under the cell
        f"{w.category.__name__}: {w.message}"
        for w in caught
        if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))
    ]
    return run, runs


@pytest.mark.slow
def test_a_dpo_run_shows_no_library_warnings(dpo_run) -> None:
    # TRL toggles gradient checkpointing through transformers' deprecated names at every step
    run, _ = dpo_run
    assert run.warnings == []


@pytest.mark.slow
def test_dpo_learns_the_rule(dpo_run) -> None:
    run, _ = dpo_run
    assert run.status == "finished"
    notices = [e.message for e in events_of(run.output_dir, "notice")]
    assert any("inferred from the data: dpo" in m for m in notices)
    evals = events_of(run.output_dir, "eval")
    assert evals[0].step == 0  # eval_before_training: the base model's score first
    assert evals[0].metrics["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    margins = [e.metrics["rewards/margins"] for e in evals]
    assert margins == sorted(margins) and margins[-1] > 0.5
    assert evals[-1].metrics["rewards/accuracies"] > 0.8
    assert not any(k.startswith("logits/") for e in evals for k in e.metrics)  # filtered
    logs = [e.values for e in events_of(run.output_dir, "log")]
    assert any("rewards/chosen" in v and "rewards/rejected" in v for v in logs)
    samples = evals[-1].details["samples"]
    assert [s["chosen"] for s in samples] == [r["chosen"] for r in preference_rows(2)]
    assert all(isinstance(s["output"], str) and s["rejected"] for s in samples)
    card = (run.output_dir / "card.html").read_text()
    assert "rewards/margins" in card and "Generated samples" in card and "rejected" in card
    assert not (run.output_dir / "README.md").exists()  # no TRL model card in the run folder


@pytest.mark.slow
def test_arena_compares_base_model_and_run(dpo_run, gpt2: Path) -> None:
    import nbtrain

    run, runs = dpo_run
    view = nbtrain.arena([str(gpt2), "dpo", run], runs_dir=runs, max_new_tokens=3)
    assert view.prompts == [r["prompt"] for r in preference_rows(2)]  # the run's sample prompts
    assert view.models == ["gpt2", "dpo", "dpo (2)"]  # the run by name and as a RunResult
    assert view.outputs["dpo"] == [s["output"] for s in run_samples(run)]  # greedy, same text
    assert view.outputs["dpo (2)"] == view.outputs["dpo"]
    assert "dpo" in view._repr_html_() and "max_new_tokens=3" in repr(view)


def run_samples(run) -> list[dict]:
    return events_of(run.output_dir, "eval")[-1].details["samples"]


@pytest.mark.slow
def test_dpo_with_lora_uses_the_adapter_disabled_model_as_reference(gpt2: Path, runs_dir) -> None:
    import nbtrain

    cfg = _cfg(gpt2, runs_dir, "dpo-lora", preference_rows(40), epochs=2, lr=2e-2)
    cfg["lora"] = {"r": 4, "target_modules": ["c_attn"]}
    seen = {}

    from transformers import TrainerCallback

    class Peek(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen["adapters"] = sorted(model.peft_config)

    run = nbtrain.finetune(cfg, display="none", callbacks=[Peek()])
    assert run.status == "finished"
    assert seen["adapters"] == ["default"]  # no "ref" copy of the adapter, no second model
    assert (run.output_dir / "final" / "adapter_config.json").is_file()
    evals = events_of(run.output_dir, "eval")
    assert evals[-1].metrics["rewards/margins"] > evals[0].metrics["rewards/margins"]


@pytest.mark.slow
def test_dpo_resume_gives_the_weights_of_a_straight_run(gpt2: Path, tmp_path: Path) -> None:
    import torch
    from transformers import TrainerCallback

    import nbtrain

    class InterruptAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                raise KeyboardInterrupt

    def cfg(runs: Path) -> dict:
        c = _cfg(gpt2, runs, "r", preference_rows(40), epochs=2, load_best_model_at_end=False)
        return {**c, "save_total_limit": None}

    straight = nbtrain.finetune(cfg(tmp_path / "a"), display="none")
    with pytest.raises(nbtrain.RunInterrupted):
        nbtrain.finetune({**cfg(tmp_path / "b"), "callbacks": [InterruptAt()]}, display="none")
    resumed = nbtrain.finetune(cfg(tmp_path / "b"), display="none")
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    starts = [e for e in events_of(resumed.output_dir, "start")]
    assert starts[-1].resumed_from.endswith("checkpoint-4")
    evals = [e.step for e in events_of(resumed.output_dir, "eval")]
    assert evals.count(0) == 1 and 4 not in evals  # the baseline once, not again on resume


@pytest.mark.slow
@pytest.mark.parametrize("task", ["orpo", "kto"])
def test_orpo_and_kto_run_with_their_metrics(task: str, gpt2: Path, runs_dir: Path) -> None:
    import nbtrain

    rows = kto_rows(40) if task == "kto" else preference_rows(40)
    run = nbtrain.finetune(
        {**_cfg(gpt2, runs_dir, task, rows, epochs=2), "task": task}, display="none"
    )
    assert run.status == "finished"
    evals = events_of(run.output_dir, "eval")
    assert evals[0].step == 0
    keys = {"orpo": ["log_odds_ratio", "nll_loss", "rewards/margins"], "kto": ["kl"]}[task]
    for k in [*keys, "rewards/chosen", "rewards/rejected"]:
        assert k in evals[-1].metrics, k
    assert evals[-1].metrics["rewards/margins"] > evals[0].metrics["rewards/margins"]
    assert evals[-1].details["samples"]


@pytest.mark.slow
def test_grpo_raises_the_mean_reward(gpt2: Path, runs_dir: Path) -> None:
    import nbtrain

    run = nbtrain.finetune(
        {
            "model": str(gpt2),
            "data": {"train": prompt_rows(16), "eval": prompt_rows(4)},
            "reward": [vowel_reward],
            "beta": 0.02,  # a KL penalty: TRL loads the reference and reports kl
            "max_steps": 24,
            "batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 6,
            "lr": 3e-2,
            "warmup_ratio": 0,
            "logging_steps": 1,
            "eval_strategy": "steps",
            "eval_steps": 24,
            "eval_samples": 2,
            "max_new_tokens": 6,
            "runs_dir": str(runs_dir),
            "name": "grpo",
        },
        display="none",
    )
    assert run.status == "finished"
    rewards = [e.values["reward"] for e in events_of(run.output_dir, "log") if "reward" in e.values]
    assert len(rewards) == 24
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, rewards
    logs = [e.values for e in events_of(run.output_dir, "log")]
    assert all("rewards/vowel_reward/mean" in v and "kl" in v for v in logs if "reward" in v)
    assert logs[-1]["kl"] > 0  # the policy moved away from the reference
    evals = events_of(run.output_dir, "eval")
    assert [e.step for e in evals] == [0, 24]
    sample = evals[-1].details["samples"][0]
    assert sample["rewards"]["vowel_reward"] == vowel_reward([sample["output"]])[0]


@pytest.mark.slow
def test_dry_run_reports_preference_data(gpt2: Path, runs_dir: Path) -> None:
    from nbtrain.engine.dryrun import dry_run

    cfg = load_config({**_cfg(gpt2, runs_dir, "dry", preference_rows(24)), "lora": {"r": 4}})
    report = dry_run(cfg)
    assert report.task == "dpo" and report.train_rows == 16
    assert report.examples[0]["n_tokens"] > 0  # prompt + chosen, as the model reads them
    from nbtrain.display.report import Report

    assert "note: dpo data: prompt, chosen, rejected as text" in Report(report).text()
    assert not (runs_dir / "dry").exists()


def test_form_has_the_post_training_section_and_reads_reward_refs() -> None:
    from nbtrain.config.refs import Ref
    from nbtrain.ui.spec import sections, values_to_raw

    group = [s.key for s in sections()["Post-training"]]
    assert {"beta", "reward", "num_generations", "max_completion_length", "trl_args"} <= set(group)
    raw, errors = values_to_raw(
        {"reward": "{my_reward}, pkg.mod:fn", "num_generations": "8"}, {"my_reward": my_reward}
    )
    assert not errors
    ref, name = raw["reward"]
    assert isinstance(ref, Ref) and ref.value is my_reward and name == "pkg.mod:fn"
    _, errors = values_to_raw({"reward": "{missing}"}, {})
    assert "names no function" in errors["reward"]


@pytest.mark.slow
def test_arena_generates_with_seq2seq_and_causal_models(gpt2: Path, tmp_path: Path) -> None:
    import nbtrain
    from tests.tiny_models import build_tiny_t5

    t5 = build_tiny_t5(tmp_path / "t5", ["translate colour of sky", "blue sky white snow"])
    view = nbtrain.arena([t5, gpt2], prompts=["colour of sky", "colour of snow"],
                         max_new_tokens=3, do_sample=True, seed=1)  # fmt: skip
    assert [c.task for c in view.result.contenders] == ["seq2seq", "causal-lm"]
    assert all(len(view.outputs[m]) == 2 for m in view.models)
    assert view.settings == {"max_new_tokens": 3, "do_sample": True, "temperature": 1.0,
                             "top_p": 1.0, "seed": 1}  # fmt: skip
    again = nbtrain.arena([gpt2], prompts=["colour of sky", "colour of snow"],
                          max_new_tokens=3, do_sample=True, seed=1)  # fmt: skip
    assert again.outputs["gpt2"] == view.outputs["gpt2"]  # same seed, same samples


def test_views_star_the_reward_of_a_grpo_run() -> None:
    from nbtrain.display.state import RunState
    from nbtrain.events import Evaluated

    state = RunState()
    state.update(Evaluated(step=0, epoch=0.0, metrics={"loss": 0.0, "reward": 0.2}))
    state.update(Evaluated(step=6, epoch=1.0, metrics={"loss": 0.1, "reward": 0.6}))
    assert state.best_metric == ("reward", True) and state.best_index == 1
