"""Learning curves of the post-training tasks on the tiny GPT-2 the tests use (CPU, offline).

    HF_HUB_OFFLINE=1 PYTHONPATH=. python bench/post_training_curves.py [dpo] [grpo]

dpo: 40 generated preference rows (``nbtrain.examples.preference_rows``) for training, 8 for
eval, 3 epochs, batch 8, lr 5e-3 (the settings of ``tests/test_post_training.py``): eval reward
accuracy and margin at each evaluation, from step 0 (``eval_before_training``).
grpo: 16 prompts, ``vowel_reward``, 24 steps of batch 8 (2 prompts x 4 generations), lr 3e-2,
beta 0.02: the mean reward of each step's completions as TRL logs it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(which: list[str]) -> None:
    import nbtrain
    from nbtrain.examples import preference_rows, prompt_rows, vowel_reward
    from tests.tiny_models import build_tiny_gpt2, events_of

    work = Path(tempfile.mkdtemp(prefix="nbtrain-bench-"))
    gpt2 = build_tiny_gpt2(work / "gpt2")
    if "dpo" in which:
        rows = preference_rows(48)
        t0 = time.time()
        run = nbtrain.finetune(
            {"model": str(gpt2), "data": {"train": rows[8:], "eval": rows[:8]}, "epochs": 3,
             "batch_size": 8, "lr": 5e-3, "runs_dir": str(work / "runs"), "name": "dpo",
             "eval_samples": 0},
            display="none",
        )  # fmt: skip
        print(f"dpo ({time.time() - t0:.0f} s wall)")
        for e in events_of(run.output_dir, "eval"):
            m = e.metrics
            print(f"  step {e.step:3d}  accuracy {m['rewards/accuracies']:.3f}  "
                  f"margin {m['rewards/margins']:.3f}  loss {m['loss']:.4f}")  # fmt: skip
    if "grpo" in which:
        t0 = time.time()
        run = nbtrain.finetune(
            {"model": str(gpt2), "data": {"train": prompt_rows(16), "eval_split": 0},
             "reward": [vowel_reward], "beta": 0.02, "max_steps": 24, "batch_size": 8,
             "num_generations": 4, "max_completion_length": 6, "lr": 3e-2, "warmup_ratio": 0,
             "logging_steps": 1, "save_strategy": "no", "runs_dir": str(work / "runs"),
             "name": "grpo"},
            display="none",
        )  # fmt: skip
        rewards = [
            e.values["reward"] for e in events_of(run.output_dir, "log") if "reward" in e.values
        ]
        print(f"grpo ({time.time() - t0:.0f} s wall): mean reward per step")
        print("  " + " ".join(f"{r:.2f}" for r in rewards))


if __name__ == "__main__":
    main(sys.argv[1:] or ["dpo", "grpo"])
