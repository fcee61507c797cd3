"""The config schema: dataclasses whose field metadata drives validation, docs and the form.

Standard library only. Each field's metadata holds:

- ``help``: one sentence shown in errors, docs and the widget form;
- ``group``: the form section (Model, Data, Training, Evaluation & saving, Precision & memory,
  LoRA, Logging);
- ``kind``: how a value is checked and coerced (``int``, ``float``, ``bool``, ``str``,
  ``choice``, ``str_list``, ``any``, ``source``);
- optional ``choices``, ``minimum``/``maximum`` (``exclusive_minimum``), ``aliases`` (other
  spellings users write, e.g. ``epochs``), ``common`` (shown up front in the form), ``nullable``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from nbtrain.config.refs import Ref, describe

TASKS = (
    "text-classification",
    "causal-lm",
    "masked-lm",
    "seq2seq",
    "token-classification",
    "dpo",
    "orpo",
    "kto",
    "grpo",
)
#: Post-training tasks (on TRL): they start from a causal LM and evaluate before training.
POST_TRAINING_TASKS = ("dpo", "orpo", "kto", "grpo")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
STRATEGIES = ("auto", "no", "steps", "epoch")
SAVE_STRATEGIES = ("auto", "no", "steps", "epoch", "best")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "warmup_stable_decay",
)
# The optimizers the tutorial names; any other name the installed transformers knows is
# accepted too (checked against ``OptimizerNames`` when a run starts).
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "adafactor",
    "sgd",
    "adagrad",
    "paged_adamw_8bit",
    "lion_8bit",
)
REPORTERS = (
    "none",
    "tensorboard",
    "wandb",
    "mlflow",
    "trackio",
    "comet_ml",
    "clearml",
    "neptune",
    "dvclive",
    "codecarbon",
    "swanlab",
    "all",
)
PROBLEM_TYPES = ("auto", "single_label", "multi_label", "regression")
DISPLAYS = ("auto", "html", "widgets", "text", "none")
DIRECTIONS = ("auto", "maximize", "minimize")
SWEEP_KEEP = ("best", "models", "all")
#: ``learning_rate: find`` runs the LR finder first and trains with its suggestion.
LR_FIND = "find"


def opt(
    default: Any = None,
    help: str = "",
    *,
    group: str,
    kind: str,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    aliases: tuple[str, ...] = (),
    common: bool = False,
    nullable: bool = True,
    default_factory: Any = MISSING,
) -> Any:
    """A dataclass field with nbtrain's metadata."""
    meta = {
        "help": help,
        "group": group,
        "kind": kind,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "aliases": aliases,
        "common": common,
        "nullable": nullable,
    }
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    """Where the examples come from and which columns hold what."""

    train: Any = opt(
        None,
        "Training data: a hub dataset ('imdb', 'yelp_review_full:train[:2000]'), a local file "
        "(.csv .tsv .json .jsonl .parquet .txt, optionally prefixed 'csv:'), a folder, or a "
        "notebook object ({df}).",
        group="Data",
        kind="source",
        common=True,
    )
    eval: Any = opt(
        None,
        "Evaluation data, in the same forms as train. Left out: a seeded, stratified "
        "eval_split of train is held out.",
        group="Data",
        kind="source",
        common=True,
    )
    text: Any = opt(
        "text",
        "Column with the input text (a name, or a 0-based position for headerless files).",
        group="Data",
        kind="column",
        common=True,
        nullable=False,
    )
    text_pair: Any = opt(
        None,
        "Optional second text column for sentence-pair tasks (NLI, paraphrase).",
        group="Data",
        kind="column",
    )
    label: Any = opt(
        "label",
        "Column with the label (a name, or a 0-based position for headerless files).",
        group="Data",
        kind="column",
        common=True,
        nullable=False,
    )
    eval_split: float = opt(
        0.1,
        "Share of train held out for evaluation when no eval data is given (0 to disable).",
        group="Data",
        kind="float",
        minimum=0.0,
        maximum=0.5,
        nullable=False,
    )
    max_length: int | None = opt(
        None,
        "Truncate inputs to this many tokens (default: the model's limit, at most 512). "
        "Batches are padded only to their longest example.",
        group="Data",
        kind="int",
        minimum=1,
        aliases=("max_seq_length", "max_len"),
        common=True,
    )
    header: bool | None = opt(
        None,
        "Whether CSV/TSV files have a header line (default: guessed; false when columns are "
        "given by position).",
        group="Data",
        kind="bool",
    )
    label_names: list[str] | None = opt(
        None,
        "Names for integer labels 0..K-1 (shown in metrics and predictions).",
        group="Data",
        kind="str_list",
    )
    problem_type: str = opt(
        "auto",
        "auto (from the labels), single_label, multi_label (labels are lists) or regression "
        "(float labels).",
        group="Data",
        kind="choice",
        choices=PROBLEM_TYPES,
        nullable=False,
    )
    limit: int | None = opt(
        None,
        "Use only the first N training examples (a quick check on a big dataset).",
        group="Data",
        kind="int",
        minimum=1,
    )
    train_on: str = opt(
        "response",
        "causal-lm instruction/chat data: compute the loss on the response (assistant) tokens "
        "only, or on all tokens.",
        group="Data",
        kind="choice",
        choices=("response", "all"),
        nullable=False,
    )
    packing: bool | None = opt(
        None,
        "Concatenate texts and cut them into blocks of max_length (default: yes for causal-lm "
        "plain text, no for masked-lm).",
        group="Data",
        kind="bool",
    )
    mlm_probability: float = opt(
        0.15,
        "masked-lm: share of tokens masked in each batch.",
        group="Data",
        kind="float",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
        nullable=False,
    )
    chat_template: str | None = opt(
        None,
        "causal-lm chat data (a messages column): a Jinja chat template to use when the "
        "tokenizer has none, or to replace its own.",
        group="Data",
        kind="str",
    )


@dataclass
class LoraConfig:
    """LoRA adapters via peft (the model stays frozen; only adapters and the head train)."""

    r: int = opt(
        8,
        "Rank of the LoRA update matrices.",
        group="LoRA",
        kind="int",
        minimum=1,
        nullable=False,
        common=True,
    )
    alpha: float = opt(
        16,
        "LoRA scaling (alpha / r multiplies the update).",
        group="LoRA",
        kind="float",
        exclusive_minimum=True,
        minimum=0,
        nullable=False,
        aliases=("lora_alpha",),
        common=True,
    )
    dropout: float = opt(
        0.05,
        "Dropout on the LoRA input.",
        group="LoRA",
        kind="float",
        minimum=0,
        maximum=1,
        nullable=False,
        aliases=("lora_dropout",),
    )
    target_modules: Any = opt(
        "auto",
        "Module names to adapt, or 'auto' for the attention projections of the architecture.",
        group="LoRA",
        kind="str_list",
        nullable=False,
        common=True,
    )
    bias: str = opt(
        "none",
        "Which biases train: none, all or lora_only.",
        group="LoRA",
        kind="choice",
        choices=("none", "all", "lora_only"),
        nullable=False,
    )
    modules_to_save: list[str] | None = opt(
        None,
        "Extra modules trained in full (the classifier head is added for you).",
        group="LoRA",
        kind="str_list",
    )
    peft_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "group": "LoRA",
            "kind": "training_args",
            "help": "Other fields of peft's LoraConfig (use_dora, use_rslora, init_lora_weights, "
            "layers_to_transform, rank_pattern, ...), checked against the installed peft; "
            "they may also be written directly under lora:.",
        },
    )


@dataclass
class SweepConfig:
    """A hyperparameter search: each trial is a run in ``runs/<name>/trial-K/``."""

    trials: int = opt(
        10,
        "How many trials to run (finished and pruned ones count; failed ones are retried).",
        group="Sweep",
        kind="int",
        minimum=1,
        aliases=("n_trials",),
        nullable=False,
    )
    metric: str | None = opt(
        None,
        "The metric to optimise, e.g. eval_accuracy (default: the task's main metric, the one "
        "that picks the best checkpoint).",
        group="Sweep",
        kind="str",
    )
    direction: str = opt(
        "auto",
        "maximize or minimize the metric (auto: from its name; loss, mse, perplexity... are "
        "minimised).",
        group="Sweep",
        kind="choice",
        choices=DIRECTIONS,
        nullable=False,
    )
    params: dict[str, Any] = opt(
        None,
        "The search space: config key -> {low, high} (floats; log: true for a log scale; ints "
        "when both bounds are whole numbers) or a list of choices.",
        group="Sweep",
        kind="sweep_params",
        nullable=False,
        default_factory=dict,
    )
    prune: bool = opt(
        True,
        "Stop trials whose intermediate evaluations fall below the median of earlier trials.",
        group="Sweep",
        kind="bool",
        nullable=False,
    )
    startup_trials: int | None = opt(
        None,
        "Trials that are never pruned, to give the median a base (default: a third of trials, "
        "1 to 5).",
        group="Sweep",
        kind="int",
        minimum=0,
    )
    keep: str = opt(
        "best",
        "What stays on disk of an ended trial: best (the best trial's final model only), models "
        "(every trial's final model) or all (checkpoints too). Checkpoints of a finished or "
        "pruned trial are removed unless all: only an unfinished trial resumes from them.",
        group="Sweep",
        kind="choice",
        choices=SWEEP_KEEP,
        nullable=False,
    )
    seed: int | None = opt(
        None,
        "Seed of the TPE sampler (default: the config's seed).",
        group="Sweep",
        kind="int",
    )


@dataclass
class Config:
    """A fine-tuning run. Every field has a default except ``model`` and ``data.train``."""

    # -- Model -------------------------------------------------------------------------------
    model: Any = opt(
        None,
        "Hub model id or local folder (or a model object from the notebook).",
        group="Model",
        kind="model",
        common=True,
    )
    tokenizer: Any = opt(
        None,
        "Tokenizer id or folder, or a tokenizer object (default: the model's).",
        group="Model",
        kind="model",
        aliases=("processing_class",),
    )
    task: str | None = opt(
        None,
        "What to train; inferred from the data and model when left out.",
        group="Model",
        kind="choice",
        choices=TASKS,
        common=True,
    )
    name: str | None = opt(
        None,
        "Run name: its folder under runs_dir. Re-running the same name and config resumes it.",
        group="Model",
        kind="str",
        common=True,
    )
    runs_dir: str = opt(
        "runs",
        "Folder that holds one sub-folder per run.",
        group="Model",
        kind="str",
        nullable=False,
    )
    trust_remote_code: bool = opt(
        False,
        "Allow a hub model to run its own Python code. Off unless you trust the model's author.",
        group="Model",
        kind="bool",
        nullable=False,
    )
    ignore_mismatched_sizes: bool = opt(
        False,
        "Re-initialise a pretrained classifier head whose label count differs from the data's.",
        group="Model",
        kind="bool",
        nullable=False,
    )
    data: DataConfig = field(
        default_factory=DataConfig, metadata={"group": "Data", "kind": "section"}
    )

    # -- Training ----------------------------------------------------------------------------
    num_train_epochs: float = opt(
        3.0,
        "Passes over the training data.",
        group="Training",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
        aliases=("epochs", "num_epochs"),
        common=True,
        nullable=False,
    )
    per_device_train_batch_size: int = opt(
        16,
        "Training examples per step on each device.",
        group="Training",
        kind="int",
        minimum=1,
        aliases=("batch_size", "train_batch_size"),
        common=True,
        nullable=False,
    )
    learning_rate: float | str = opt(
        5e-5,
        "Peak learning rate, or 'find' to run the LR finder first and train with its suggestion.",
        group="Training",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
        maximum=1.0,
        aliases=("lr",),
        common=True,
        nullable=False,
    )
    weight_decay: float = opt(
        0.01,
        "Decoupled weight decay (AdamW); a mild cure for overfitting.",
        group="Training",
        kind="float",
        minimum=0,
        maximum=1,
        common=True,
        nullable=False,
    )
    warmup_ratio: float = opt(
        0.1,
        "Share of the training steps used for linear learning-rate warmup.",
        group="Training",
        kind="float",
        minimum=0,
        maximum=1,
        nullable=False,
    )
    warmup_steps: int = opt(
        0,
        "Warmup steps (overrides warmup_ratio when > 0).",
        group="Training",
        kind="int",
        minimum=0,
        nullable=False,
    )
    lr_scheduler_type: str = opt(
        "linear",
        "Learning-rate schedule after warmup.",
        group="Training",
        kind="choice",
        choices=SCHEDULERS,
        aliases=("scheduler", "lr_scheduler"),
        nullable=False,
    )
    gradient_accumulation_steps: int = opt(
        1,
        "Steps whose gradients add up before one optimizer update (a bigger effective batch "
        "in the same memory).",
        group="Training",
        kind="int",
        minimum=1,
        aliases=("grad_accum",),
        nullable=False,
    )
    max_steps: int = opt(
        -1,
        "Stop after this many optimizer updates (overrides epochs when > 0).",
        group="Training",
        kind="int",
        minimum=-1,
        nullable=False,
    )
    optim: str = opt(
        "adamw_torch_fused",
        "Optimizer: adamw_torch_fused (one fused kernel over all parameters: 2-5x faster steps "
        "than adamw_torch on CPU, same maths), adamw_torch, adamw_8bit (bitsandbytes, GPU), "
        "adafactor, ...",
        group="Training",
        kind="choice",
        choices=OPTIMIZERS,
        aliases=("optimizer",),
        nullable=False,
    )
    max_grad_norm: float = opt(
        1.0,
        "Gradient clipping norm (0 disables).",
        group="Training",
        kind="float",
        minimum=0,
        nullable=False,
    )
    label_smoothing_factor: float = opt(
        0.0,
        "Label smoothing for classification (a cure for over-confidence).",
        group="Training",
        kind="float",
        minimum=0,
        maximum=1,
        nullable=False,
    )
    seed: int = opt(
        42,
        "Random seed for initialisation, shuffling and dropout.",
        group="Training",
        kind="int",
        minimum=0,
        nullable=False,
    )
    group_by_length: bool = opt(
        True,
        "Batch examples of similar length together (far less padding, same accuracy).",
        group="Training",
        kind="bool",
        nullable=False,
    )

    # -- Evaluation & saving -----------------------------------------------------------------
    eval_strategy: str = opt(
        "auto",
        "When to evaluate: auto (each epoch when there is eval data), no, steps, epoch.",
        group="Evaluation & saving",
        kind="choice",
        choices=STRATEGIES,
        aliases=("evaluation_strategy",),
        common=True,
        nullable=False,
    )
    eval_steps: float | None = opt(
        None,
        "Evaluate every N steps (or a ratio of all steps when < 1) with eval_strategy: steps.",
        group="Evaluation & saving",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
    )
    save_strategy: str = opt(
        "auto",
        "When to checkpoint: auto (follows eval_strategy), no, steps, epoch, best.",
        group="Evaluation & saving",
        kind="choice",
        choices=SAVE_STRATEGIES,
        nullable=False,
    )
    save_steps: float | None = opt(
        None,
        "Checkpoint every N steps with save_strategy: steps.",
        group="Evaluation & saving",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
    )
    save_total_limit: int | None = opt(
        2,
        "Keep at most this many checkpoints (the best and the newest are always kept).",
        group="Evaluation & saving",
        kind="int",
        minimum=1,
    )
    load_best_model_at_end: bool | None = opt(
        None,
        "Finish with the best checkpoint's weights (default: yes when evaluating).",
        group="Evaluation & saving",
        kind="bool",
        common=True,
    )
    metric_for_best_model: str | None = opt(
        None,
        "Metric that picks the best checkpoint (default: the task's, e.g. accuracy).",
        group="Evaluation & saving",
        kind="str",
    )
    greater_is_better: bool | None = opt(
        None,
        "Whether a larger metric_for_best_model is better (default: from its name).",
        group="Evaluation & saving",
        kind="bool",
    )
    early_stopping_patience: int | None = opt(
        None,
        "Stop after this many evaluations without improvement (a cure for overfitting).",
        group="Evaluation & saving",
        kind="int",
        minimum=1,
    )
    resume_from_checkpoint: str | None = opt(
        None,
        "Continue from this checkpoint folder: an older one of this run (the newer ones are "
        "replaced) or one a plain Trainer wrote. Left out: re-running a run resumes its newest.",
        group="Evaluation & saving",
        kind="str",
    )
    per_device_eval_batch_size: int | None = opt(
        None,
        "Evaluation examples per step (default: twice the training batch).",
        group="Evaluation & saving",
        kind="int",
        minimum=1,
        aliases=("eval_batch_size",),
    )
    generation_max_new_tokens: int = opt(
        32,
        "causal-lm / seq2seq: tokens generated per example at evaluation and by run.generate.",
        group="Evaluation & saving",
        kind="int",
        minimum=1,
        aliases=("generate_max_new_tokens", "max_new_tokens"),
        nullable=False,
    )
    eval_before_training: bool | None = opt(
        None,
        "Evaluate once at step 0, so every curve starts from the base model's score (default: "
        "yes for dpo, orpo, kto and grpo, no for the other tasks).",
        group="Evaluation & saving",
        kind="bool",
        aliases=("eval_on_start", "baseline"),
    )
    eval_samples: int = opt(
        3,
        "causal-lm / seq2seq: generated samples from eval prompts recorded at each evaluation "
        "(0 for none; 0 also keeps text-classification's example predictions, with their "
        "text, out of the events).",
        group="Evaluation & saving",
        kind="int",
        minimum=0,
        nullable=False,
    )

    # -- Precision & memory ------------------------------------------------------------------
    precision: str = opt(
        "auto",
        "auto (bf16 where the GPU has it, fp16 on older GPUs; on a CPU bf16 autocast where it "
        "has bf16 instructions and the model is 128+ wide, else fp32), fp32, fp16, bf16. "
        "fp16: true / bf16: true are read as this.",
        group="Precision & memory",
        kind="choice",
        choices=PRECISIONS,
        common=True,
        nullable=False,
    )
    freeze_embeddings: bool = opt(
        False,
        "Keep the input word embeddings fixed: ~15% faster steps and half the optimizer state "
        "on BERT-size models, at a small accuracy cost on some data (measured in "
        "docs/performance.md).",
        group="Precision & memory",
        kind="bool",
        nullable=False,
    )
    gradient_checkpointing: bool = opt(
        False,
        "Recompute activations in the backward pass: much less memory, ~30% slower.",
        group="Precision & memory",
        kind="bool",
        nullable=False,
    )
    auto_find_batch_size: bool = opt(
        False,
        "The Trainer's own out-of-memory retry (batch x 0.9, effective batch not kept). Off, "
        "nbtrain halves the batch and doubles accumulation on out-of-memory by itself.",
        group="Precision & memory",
        kind="bool",
        nullable=False,
    )
    torch_compile: bool = opt(
        False,
        "Compile the model with torch.compile (faster steps after a slow first one).",
        group="Precision & memory",
        kind="bool",
        nullable=False,
    )
    cpu_threads: int | None = opt(
        None,
        "torch threads for CPU training (default: the cores other processes leave free at the "
        "start, so a busy machine does not stall every step; the view says what was picked). "
        "Not part of the run's identity.",
        group="Precision & memory",
        kind="int",
        minimum=1,
        aliases=("threads",),
    )
    attn_implementation: str = opt(
        "auto",
        "Attention kernels: auto (eager for BERT-family encoders on CPU, measured faster than "
        "sdpa there; transformers' choice elsewhere), eager, sdpa, flash_attention_2, "
        "flex_attention.",
        group="Precision & memory",
        kind="choice",
        choices=("auto", "eager", "sdpa", "flash_attention_2", "flex_attention"),
        aliases=("attention",),
        nullable=False,
    )
    sparse_embeddings: bool | None = opt(
        None,
        "Update only the word-embedding rows each batch uses (sparse gradient, AdamW on those "
        "rows; unused rows wait instead of drifting on old momentum). Default: on for full "
        "fine-tuning with AdamW on CPU, where it makes steps faster at the same accuracy "
        "(docs/performance.md); false for the dense update.",
        group="Precision & memory",
        kind="bool",
    )
    quantization: str = opt(
        "none",
        "Load the frozen base model in 4bit or 8bit (QLoRA: needs lora, bitsandbytes and a "
        "CUDA GPU).",
        group="Precision & memory",
        kind="choice",
        choices=("none", "4bit", "8bit"),
        aliases=("load_in",),
        nullable=False,
    )

    processes: int = opt(
        1,
        "Train in N processes (DDP through accelerate's notebook_launcher: one per GPU, or "
        "gloo processes on CPU). Under `accelerate launch` the launcher decides instead.",
        group="Precision & memory",
        kind="int",
        minimum=1,
        nullable=False,
    )

    # -- Logging -----------------------------------------------------------------------------
    logging_steps: float | None = opt(
        None,
        "Log the training loss every N steps (default: about 100 points per run).",
        group="Logging",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
    )
    report_to: Any = opt(
        None,
        "Also log to: none, tensorboard (in runs/NAME/tensorboard), wandb, mlflow, ... (a name or "
        "a list).",
        group="Logging",
        kind="str_list",
        choices=REPORTERS,
        nullable=False,
        default_factory=lambda: ["none"],
    )
    parallel: bool = opt(
        False,
        "A background run starts at once even while another run of this kernel trains (by "
        "default runs queue and train one at a time). Not part of the run's identity.",
        group="Logging",
        kind="bool",
        nullable=False,
    )
    display: str = opt(
        "auto",
        "How the run shows itself: auto (from the frontend), html, widgets, text or none. Not "
        "part of the run's identity.",
        group="Logging",
        kind="choice",
        choices=DISPLAYS,
        nullable=False,
    )
    logging_dir: str | None = opt(
        None,
        "TensorBoard folder: each run logs to <logging_dir>/<run name>, so tensorboard "
        "--logdir <logging_dir> shows them side by side (default: <run>/tensorboard).",
        group="Logging",
        kind="str",
    )

    # -- Post-training (dpo, orpo, kto, grpo on TRL) ------------------------------------------
    beta: float | None = opt(
        None,
        "dpo/kto/grpo: weight of the KL penalty to the reference model; orpo: weight of the "
        "odds-ratio term (default: TRL's, 0.1; grpo 0.0).",
        group="Post-training",
        kind="float",
        minimum=0,
        common=True,
    )
    reward: Any = opt(
        None,
        "grpo: reward functions from the notebook, e.g. [{my_reward}, {length_penalty}], or "
        "'module:function' names. Each is called as f(completions, prompts=..., **columns) and "
        "returns one number per completion; the rewards add up.",
        group="Post-training",
        kind="callables",
        aliases=("rewards", "reward_funcs"),
        common=True,
    )
    reward_weights: Any = opt(
        None,
        "grpo: one weight per reward function (default: all 1).",
        group="Post-training",
        kind="float_list",
    )
    num_generations: int = opt(
        4,
        "grpo: completions sampled per prompt (the group whose rewards are compared). The "
        "batch size must be a multiple of it.",
        group="Post-training",
        kind="int",
        minimum=2,
        nullable=False,
        common=True,
    )
    max_completion_length: int = opt(
        32,
        "grpo: tokens generated per completion.",
        group="Post-training",
        kind="int",
        minimum=1,
        nullable=False,
        common=True,
    )
    temperature: float = opt(
        1.0,
        "grpo: sampling temperature of the completions.",
        group="Post-training",
        kind="float",
        minimum=0,
        exclusive_minimum=True,
        nullable=False,
    )
    trl_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "group": "Post-training",
            "kind": "trl_args",
            "help": "Other fields of the task's TRL config (DPOConfig, ORPOConfig, KTOConfig, "
            "GRPOConfig), e.g. loss_type: ipo; checked against the installed TRL when a run "
            "starts.",
        },
    )

    # -- LoRA --------------------------------------------------------------------------------
    lora: LoraConfig | None = field(default=None, metadata={"group": "LoRA", "kind": "lora"})

    # -- Sweep: a hyperparameter search over the rest of the config ----------------------------
    sweep: SweepConfig | None = field(
        default=None,
        metadata={
            "group": "Sweep",
            "kind": "sweep",
            "help": "A hyperparameter search over this config (trials, metric, params); each "
            "trial is a run in runs/<name>/trial-K/ (docs/experiments.md).",
        },
    )

    # -- Anything else TrainingArguments takes (adam_beta1, dataloader_num_workers, ...) ------
    training_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "group": "Advanced",
            "kind": "training_args",
            "help": "Other TrainingArguments fields, passed through after a check against the "
            "installed transformers (they may also be written at the top level).",
        },
    )

    # -- Runtime objects: not saved to config.yaml, not part of a run's identity -------------
    callbacks: list[Any] = field(
        default_factory=list,
        metadata={
            "group": "Runtime",
            "kind": "runtime",
            "help": "TrainerCallback objects added to the Trainer.",
        },
    )
    compute_metrics: Any = field(
        default=None,
        metadata={
            "group": "Runtime",
            "kind": "runtime",
            "help": "A function(EvalPrediction) -> dict replacing the task's metrics.",
        },
    )
    model_init: Any = field(
        default=None,
        metadata={
            "group": "Runtime",
            "kind": "runtime",
            "help": "A function model_init() or model_init(trial) returning the model to train "
            "(the Trainer's model_init); model: still names the tokenizer's checkpoint.",
        },
    )
    trainer_class: Any = field(
        default=None,
        metadata={
            "group": "Runtime",
            "kind": "runtime",
            "help": "A Trainer subclass to use (e.g. one with a custom compute_loss).",
        },
    )
    class_weights: Any = field(
        default=None,
        metadata={
            "group": "Training",
            "kind": "float_list",
            "help": "Per-class loss weights for imbalanced classification: one number per "
            "class, or auto (n / (classes x count) from the training labels).",
        },
    )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain YAML-able data (runtime objects left out)."""
        return config_to_dict(self)


RUNTIME_FIELDS = frozenset(f.name for f in fields(Config) if f.metadata.get("kind") == "runtime")


def schema_fields(cls: type = Config) -> list[Any]:
    """The dataclass fields of a schema section, in declaration order."""
    return list(fields(cls))


def alias_map(cls: type) -> dict[str, str]:
    """Map every alias of a section's fields to the canonical field name."""
    out = {}
    for f in fields(cls):
        for a in f.metadata.get("aliases", ()) or ():
            out[a] = f.name
    return out


def config_to_dict(cfg: Any, *, keep_objects: bool = False) -> dict[str, Any]:
    """A config as plain data: what ``config.yaml`` holds (runtime objects left out)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        kind = f.metadata.get("kind")
        value = getattr(cfg, f.name)
        if kind == "runtime":
            if keep_objects and value not in (None, []):
                out[f.name] = value
            continue
        if kind == "sweep":
            if value is not None:  # absent from config.yaml (and identity) of a plain run
                out[f.name] = config_to_dict(value, keep_objects=keep_objects)
            continue
        if kind == "sweep_params":
            out[f.name] = dict(value)
            continue
        if kind in ("section", "lora"):
            out[f.name] = (
                None if value is None else config_to_dict(value, keep_objects=keep_objects)
            )
            if kind == "lora" and value is not None:
                # peft's own field names sit beside nbtrain's, as users wrote them.
                out[f.name].update(out[f.name].pop("peft_args", None) or {})
            continue
        if kind in ("training_args", "trl_args"):
            out[f.name] = dict(value)
            continue
        if kind == "callables" and value is not None and not keep_objects:
            out[f.name] = [v if isinstance(v, str) else callable_name(v) for v in value]
            continue
        if not keep_objects and not _plain(value):
            value = describe(value)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def callable_name(value: Any) -> str:
    """How a function from the notebook is written in config.yaml: ``{name}``."""
    if isinstance(value, Ref):
        return describe(value)
    return "{" + getattr(value, "__name__", type(value).__name__) + "}"


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False
