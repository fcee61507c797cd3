"""Write nbtrain's built-in demo data: short movie-review-like sentences from templates.

Every sentence is produced here from the phrase lists below with a fixed seed; nothing is taken
from a public dataset. Regenerate with ``python -m nbtrain.data._generate``.

The evaluation split is built from phrases the training split never uses, so its accuracy
measures what the model generalises (the pretrained MiniLM knows that "a chore to sit
through" is negative), not what it memorised. Contrast sentences ("Despite ..., ...") and
mild negations keep the task from being trivially separable by a single word.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

SUBJECTS = [
    "The film", "This movie", "The plot", "The acting", "The script", "The cast",
    "The director's latest", "The ending", "The soundtrack", "The dialogue", "The pacing",
    "The lead performance", "This sequel", "The cinematography", "The story", "The whole thing",
    "The second half", "The screenplay", "This comedy", "This thriller", "The animation",
    "The final act", "The premise", "This drama",
]  # fmt: skip

POSITIVE = [
    "is a delight from start to finish", "kept me on the edge of my seat",
    "is genuinely moving", "is sharp, funny and smart", "is beautifully made",
    "left the whole audience cheering", "is the best thing I have seen this year",
    "works on every level", "is warm and wonderfully acted", "earns every one of its tears",
    "is a real crowd-pleaser", "feels fresh and confident", "is gripping from the first scene",
    "surprised me in the best way", "is full of heart", "is clever and beautifully paced",
    "is an absolute joy", "stays with you long after the credits", "is funny and touching",
    "is a triumph", "is stunning to look at", "never puts a foot wrong",
    "is an instant favourite", "is tender, funny and true", "is thrilling and smart",
    "had me grinning the whole time", "is a gem", "is wonderfully inventive",
    "is a pleasure to watch", "deserves every award it gets", "is brilliantly written",
    "is moving and memorable", "is a charming little treat", "is exciting and heartfelt",
    "is superbly crafted", "is a masterpiece",
]  # fmt: skip

NEGATIVE = [
    "is a complete mess", "drags on far too long", "is dull and lifeless",
    "made me check my watch every five minutes", "is a waste of a talented cast",
    "falls flat at every turn", "is painfully predictable", "is loud, empty and boring",
    "never comes together", "is the worst thing I have seen this year", "is clumsy and tedious",
    "feels lazy and cynical", "is a chore to sit through", "put me to sleep",
    "is confusing and pointless", "is badly written", "wastes every good idea it has",
    "is a tired retread", "is an ugly, joyless slog", "is a total disappointment",
    "left me cold", "is embarrassingly bad", "insults the audience",
    "is shallow and forgettable", "is a mess from start to finish", "goes nowhere",
    "is lifeless and overlong", "is stiff and awkward", "is a dreary misfire",
    "is hard to sit through", "is awful", "is a dud", "is thoroughly tiresome",
    "is grim and charmless", "is flat and uninspired", "is an utter bore",
]  # fmt: skip

# Softer phrasings of each side, still clear to a reader.
SOFT_POSITIVE = [
    "is not perfect, but I liked it a lot", "is better than I expected",
    "is not bad at all", "is worth your time", "is quietly lovely",
    "is far from boring", "is not the mess I feared",
]  # fmt: skip
SOFT_NEGATIVE = [
    "is not very good", "is not worth your time", "is not as clever as it thinks",
    "is weaker than I hoped", "is not funny", "could have been so much better",
    "is far from great",
]  # fmt: skip

OPENERS_POS = [
    "Despite a slow start,", "Even with a thin plot,", "Although it runs a little long,",
    "It has a few rough edges, but", "I went in sceptical, and",
]  # fmt: skip
OPENERS_NEG = [
    "Despite a great cast,", "For all its big budget,", "Although it looks expensive,",
    "It starts well, but", "I wanted to love it, but",
]  # fmt: skip
CLOSERS_POS = [
    "I would happily watch it again.", "Go see it.", "Highly recommended.",
    "Bring your friends.", "", "", "",
]  # fmt: skip
CLOSERS_NEG = [
    "I want my two hours back.", "Skip it.", "Not recommended.", "Wait for something better.",
    "", "", "",
]  # fmt: skip

SEED = 1234
N_TRAIN = 640
N_EVAL = 160


def _split(items: list[str], rng: random.Random, held_out: float = 0.25) -> tuple[list, list]:
    items = list(items)
    rng.shuffle(items)
    k = max(1, round(len(items) * held_out))
    return items[k:], items[:k]


def _sentence(rng: random.Random, positive: bool, phrases: dict[str, list[str]]) -> str:
    side = "pos" if positive else "neg"
    subject = rng.choice(SUBJECTS)
    r = rng.random()
    predicate = rng.choice(phrases[f"soft_{side}"] if r < 0.15 else phrases[side])
    if r > 0.8:
        opener = rng.choice(OPENERS_POS if positive else OPENERS_NEG)
        subject = subject[0].lower() + subject[1:]
        text = f"{opener} {subject} {predicate}."
    else:
        text = f"{subject} {predicate}."
    closer = rng.choice(CLOSERS_POS if positive else CLOSERS_NEG)
    return f"{text} {closer}".strip()


def generate(seed: int = SEED) -> dict[str, list[tuple[str, str]]]:
    """The demo rows, ``{"train": [(text, label), ...], "eval": [...]}``."""
    rng = random.Random(seed)
    pools = {}
    for key, items in (
        ("pos", POSITIVE),
        ("neg", NEGATIVE),
        ("soft_pos", SOFT_POSITIVE),
        ("soft_neg", SOFT_NEGATIVE),
    ):
        pools[key] = _split(items, rng)
    out: dict[str, list[tuple[str, str]]] = {}
    for split, n, which in (("train", N_TRAIN, 0), ("eval", N_EVAL, 1)):
        phrases = {k: v[which] for k, v in pools.items()}
        rows, seen = [], set()
        while len(rows) < n:
            positive = len(rows) % 2 == 0
            text = _sentence(rng, positive, phrases)
            if text in seen:
                continue
            seen.add(text)
            rows.append((text, "positive" if positive else "negative"))
        rng.shuffle(rows)
        out[split] = rows
    return out


def write(folder: Path = Path(__file__).parent) -> list[Path]:
    paths = []
    for split, rows in generate().items():
        path = folder / f"demo_reviews_{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["text", "label"])
            w.writerows(rows)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write():
        print(p)
