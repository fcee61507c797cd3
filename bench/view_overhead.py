"""The live view's overhead: the same training steps of MiniLM on SST-2, view off vs. on.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/view_overhead.py [--steps 200] [--data DIR]

Two measures, in one process:

* ``ratio``: training time (the run's own ``duration_s``) with the HTML view on, divided by the
  same run with no view. On a shared machine this is noisy by a few percent either way.
* ``in_view``: seconds spent inside the view's event handler (layout, figures, the display
  update) over the training time of the view-on run: the overhead itself, with no noise from
  other processes. Goal: <= 3 %.

Outside a kernel there is no frontend, so the view's display function does what IPython's
does with each frame: build the mimebundle (HTML + text) and serialize it to JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


class KernelLikeDisplay:
    """``display(obj, display_id=True)`` as a kernel does it: mimebundle to JSON, per frame."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.frames = 0

    def __call__(self, obj):
        self.update(obj)
        return self

    def update(self, obj) -> None:
        msg = {"data": {"text/html": obj._repr_html_(), "text/plain": repr(obj)}}
        self.bytes_sent += len(json.dumps(msg))
        self.frames += 1


class Timed:
    """Wraps a renderer and adds up the time spent in it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __call__(self, ev) -> None:
        t0 = time.perf_counter()
        self.inner(ev)
        self.seconds += time.perf_counter() - t0


def one_run(data: Path, steps: int, runs_dir: Path, name: str, view) -> float:
    import nbtrain

    captured = {}

    def on_event(ev) -> None:
        if ev.type == "end":
            captured["duration"] = ev.duration_s

    nbtrain.finetune(
        {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            # Training steps only: evaluation time would dilute the view's share.
            "data": {
                "train": f"csv:{data / 'train.tsv'}",
                "eval_split": 0.0,
                "text": "sentence",
                "label": "label",
            },
            "max_steps": steps,
            "batch_size": 16,
            "max_length": 64,
            "eval_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 5,
            "runs_dir": str(runs_dir),
            "name": name,
        },
        display=view if view is not None else "none",
        on_event=on_event,
        restart=True,
    )
    return float(captured["duration"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--data", type=Path, default=SST2)
    args = ap.parse_args()
    if not (args.data / "train.tsv").exists():
        raise SystemExit(f"SST-2 not found in {args.data}; pass --data DIR with train.tsv, dev.tsv")

    from nbtrain.display.frontend import Frontend
    from nbtrain.display.live import HtmlRenderer

    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        one_run(args.data, 5, runs, "warmup", None)  # caches, lazy imports, thread pools
        off = one_run(args.data, args.steps, runs, "off", None)
        sink = KernelLikeDisplay()
        view = HtmlRenderer(display=sink, frontend=Frontend.JUPYTER, write_card=False)
        timed = Timed(view)
        on = one_run(args.data, args.steps, runs, "on", timed)
    result = {
        "steps": args.steps,
        "train_s_view_off": round(off, 2),
        "train_s_view_on": round(on, 2),
        "ratio_on_off": round(on / off, 4),
        "in_view_s": round(timed.seconds, 3),
        "in_view_fraction": round(timed.seconds / on, 4),
        "frames": sink.frames,
        "figures": view.figures,
        "bytes_per_frame": sink.bytes_sent // max(1, sink.frames),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
