"""Shared fixtures: tiny models built from a config, tokenizers built locally, no hub."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSITIVE = ["good", "great", "fine", "lovely", "superb", "wonderful", "happy", "brilliant"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "boring", "dull", "sad", "horrible"]
FILLER = [
    "the",
    "movie",
    "was",
    "a",
    "film",
    "plot",
    "acting",
    "really",
    "very",
    "story",
    "and",
    "it",
    "this",
    "quite",
    "ending",
    "cast",
]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SST2 = SHARED / "data" / "sst2"


def make_texts(
    n: int, seed: int = 0, labels: tuple[str, str] = ("neg", "pos")
) -> list[tuple[str, str]]:
    """Sentences whose label is carried by a sentiment word: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = i % 2
        word = rng.choice(POSITIVE if lab else NEGATIVE)
        words = rng.sample(FILLER, rng.randint(2, 9)) + [word]
        rng.shuffle(words)
        rows.append((" ".join(words), labels[lab]))
    return rows


def make_wordpiece_tokenizer(vocab: list[str], model_max_length: int = 64):
    """A BERT-style fast tokenizer built in memory from a word list (no files, no hub)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    ids = {w: i for i, w in enumerate(vocab)}
    core = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def build_tiny_bert(folder: Path, *, num_labels: int | None = None, hidden_size: int = 32) -> Path:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        set(POSITIVE + NEGATIVE + FILLER)
    )
    vocab += [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)
    ]
    tok = make_wordpiece_tokenizer(vocab)
    tok.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
    )
    import torch

    torch.manual_seed(0)
    if num_labels:
        config.num_labels = num_labels
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config)
        model.config.architectures = ["BertModel"]
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with its own WordPiece tokenizer, saved as a local folder."""
    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    out = {}
    for split, n, seed in (("train", 96, 0), ("dev", 32, 1)):
        path = folder / f"{split}.csv"
        lines = ["text,label"] + [f"{t},{lab}" for t, lab in make_texts(n, seed)]
        path.write_text("\n".join(lines) + "\n")
        out[split] = path
    return out


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def fast_cfg(tiny_bert: Path, sentiment_csv: dict[str, Path], runs_dir: Path) -> dict:
    """A config that trains the tiny BERT for a few steps in about a second."""
    return {
        "model": str(tiny_bert),
        "data": {"train": str(sentiment_csv["train"]), "eval": str(sentiment_csv["dev"])},
        "epochs": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "runs_dir": str(runs_dir),
        "name": "tiny",
        "save_total_limit": None,
        # Fixed, not from the load: tests compare separate runs bit for bit (background vs
        # foreground), and a thread count picked from a busy machine changes float sums. (A
        # resume reuses its run's count by itself: test_cpu_speed.py.)
        "cpu_threads": min(2, os.cpu_count() or 1),
    }


@pytest.fixture(autouse=True)
def _leaves_no_run_behind():
    """A test ends with no nbtrain thread of its own still training, and transformers' log
    level as it found it: a leftover run or a changed level silences another test's warnings
    (CI once lost a "missing keys" line to one)."""
    import sys
    import threading
    import time

    def levels() -> int | None:
        hf = sys.modules.get("transformers.utils.logging")
        return hf.get_verbosity() if hf else None

    before = {t.ident for t in threading.enumerate()}
    level = levels()
    yield
    deadline = time.monotonic() + 30
    while True:
        left = [
            t.name
            for t in threading.enumerate()
            if t.name.startswith("nbtrain-run") and t.ident not in before and t.is_alive()
        ]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"the test left background runs training: {left}"
    if level is not None:
        assert levels() == level, f"transformers' verbosity changed from {level} to {levels()}"
