"""Small data sets nbtrain generates itself, for the post-training examples and tests (offline).

The rule is fixed, so it is learnable by a tiny model in seconds: asked the colour of a thing,
the preferred answer names it (" blue"); the rejected one dodges (" I do not know").
"""

from __future__ import annotations

import random
from typing import Any

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red"}
DODGES = (" I do not know", " no idea", " maybe later", " ask someone else")


def _prompt(thing: str) -> str:
    return f"Q: colour of {thing}? A:"


def preference_rows(n: int = 64, seed: int = 0) -> list[dict[str, str]]:
    """``prompt``/``chosen``/``rejected`` rows for dpo and orpo."""
    rng = random.Random(seed)
    things = list(COLOURS)
    return [
        {
            "prompt": _prompt(things[i % len(things)]),
            "chosen": f" {COLOURS[things[i % len(things)]]}",
            "rejected": rng.choice(DODGES),
        }
        for i in range(n)
    ]


def kto_rows(n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    """``prompt``/``completion``/``label`` rows for kto: half desirable, half not."""
    out = []
    for row in preference_rows((n + 1) // 2, seed):
        out.append({"prompt": row["prompt"], "completion": row["chosen"], "label": True})
        out.append({"prompt": row["prompt"], "completion": row["rejected"], "label": False})
    return out[:n]


def prompt_rows(n: int = 32) -> list[dict[str, str]]:
    """``prompt`` rows (with the expected ``colour``) for grpo."""
    things = list(COLOURS)
    return [
        {"prompt": _prompt(things[i % len(things)]), "colour": COLOURS[things[i % len(things)]]}
        for i in range(n)
    ]


def vowel_reward(completions: list[Any], **kw: Any) -> list[float]:
    """A rule-based reward with a signal in every completion: the share of vowels among its
    letters (0 to 1). Untrained models write letter soup; GRPO raises this share quickly."""
    out = []
    for c in completions:
        text = c if isinstance(c, str) else " ".join(str(m.get("content", "")) for m in c)
        letters = [ch for ch in text.lower() if ch.isalpha()]
        out.append(sum(ch in "aeiou" for ch in letters) / len(letters) if letters else 0.0)
    return out


def colour_reward(completions: list[Any], colour: list[str], **kw: Any) -> list[float]:
    """1 when the completion names the expected colour (the data's ``colour`` column), else 0."""
    return [
        1.0 if col in (c if isinstance(c, str) else str(c)).lower() else 0.0
        for c, col in zip(completions, colour)
    ]
