"""The live view's overhead: the same training steps of MiniLM on SST-2, view off vs. on.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/view_overhead.py [--steps 200] [--data DIR]

Two measures, in one process:

* ``ratio``: training time (the run's own ``duration_s``) with the HTML view on, divided by the
  same run with no view. On a shared machine this is noisy by a few percent either way.
* ``in_view``: seconds spent inside the view's event handler (layout, curves, the display
  update) over the training time of the view-on run: the overhead itself, with no noise from
  other processes. Goal: <= 1 %.

``--renderers`` times one frame of the curves drawn three ways (inline SVG, matplotlib PNG,
Vega-Lite via Altair): why the live view draws SVG.

``--synthetic STEP_MS`` measures the view alone on a simulated run (steps of STEP_MS ms of busy
CPU, no model): the view's share when steps are as fast as on a GPU, in seconds, not hours.

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


def synthetic(steps: int, step_ms: float, log_every: int = 5, prepare_s: float = 2.0) -> dict:
    """The view alone, fed the events of a run whose steps take ``step_ms`` (no model).

    Busy-waits each step so the view competes for the CPU as it would with real training,
    then reports the share of the wall time spent inside the view.
    """
    from nbtrain.display.frontend import Frontend
    from nbtrain.display.live import HtmlRenderer
    from nbtrain.events import Evaluated, Logged, RunEnded, RunStarted, Stage, StepEnd

    sink = KernelLikeDisplay()
    view = HtmlRenderer(display=sink, frontend=Frontend.JUPYTER, write_card=False)
    timed = Timed(view)
    # Preparation (reading, tokenizing, loading the model) takes seconds in any real run;
    # the view shows it, and uses it to import matplotlib in the background.
    timed(Stage(name="load_model", status="start", detail="simulated"))
    time.sleep(prepare_s)
    timed(Stage(name="load_model", status="done"))
    t_start = time.perf_counter()
    timed(
        RunStarted(
            run="synthetic",
            total_steps=steps,
            num_epochs=1.0,
            batch_size=16,
            train_samples=steps * 16,
            config={},
        )
    )
    for step in range(1, steps + 1):
        until = time.perf_counter() + step_ms / 1000
        while time.perf_counter() < until:
            pass
        timed(StepEnd(step=step, epoch=step / steps, total_steps=steps))
        if step % log_every == 0:
            lr = 5e-5 * (1 - step / steps)
            timed(
                Logged(
                    step=step,
                    epoch=step / steps,
                    values={"loss": 0.7 / (1 + step / 50), "learning_rate": lr},
                )
            )
        if step % max(1, steps // 4) == 0:
            timed(
                Evaluated(
                    step=step,
                    epoch=step / steps,
                    metrics={"loss": 0.5 / (1 + step / 80), "accuracy": 0.5 + step / steps / 3},
                )
            )
    total = time.perf_counter() - t_start
    in_training = timed.seconds
    # The end turns the view into the card; every run writes a card, view or not, and
    # after training: not part of the view's training overhead.
    t_end = time.perf_counter()
    timed(RunEnded(step=steps, status="finished", duration_s=total))
    end_s = time.perf_counter() - t_end
    return {
        "mode": f"synthetic, {step_ms:g} ms/step",
        "steps": steps,
        "wall_s": round(total, 2),
        "in_view_s": round(in_training, 3),
        "in_view_fraction": round(in_training / total, 4),
        "end_card_s": round(end_s, 3),
        "frames": sink.frames,
        "bytes_per_frame": sink.bytes_sent // max(1, sink.frames),
    }


def renderers(points: int, repeat: int = 5) -> dict:
    """Seconds to draw the curves of a state with ``points`` logged steps: inline SVG (what the
    live view uses), a matplotlib PNG (the card's and the old live view's), Vega-Lite (Altair's
    spec, serialized: the frontend then renders it in JavaScript)."""
    from nbtrain.display.plots import curves_png
    from nbtrain.display.state import RunState
    from nbtrain.display.svg import curves_svg
    from nbtrain.events import Evaluated, Logged, RunStarted

    state = RunState()
    state.update(RunStarted(run="r", total_steps=points, num_epochs=1.0, batch_size=16))
    for s in range(1, points + 1):
        lr = 5e-5 * (1 - s / points)
        state.update(
            Logged(step=s, epoch=s / points, values={"loss": 1 / (1 + s / 50), "learning_rate": lr})
        )
        if s % max(1, points // 10) == 0:
            state.update(
                Evaluated(step=s, epoch=s / points, metrics={"loss": 0.5, "accuracy": 0.8})
            )

    def altair_spec() -> str:
        import altair as alt
        import pandas as pd

        rows = [{"step": s, "value": v, "series": "loss"} for s, v in state.train_loss]
        rows += [{"step": s, "value": v, "series": "lr"} for s, v in state.learning_rate]
        chart = (
            alt.Chart(pd.DataFrame(rows))
            .mark_line()
            .encode(x="step", y="value", color="series")
            .properties(width=300, height=180)
        )
        return json.dumps(chart.to_dict())

    out = {"points": points}
    for name, fn in (
        ("svg", lambda: curves_svg(state)),
        ("png_matplotlib", lambda: curves_png(state, dpi=100)),
        ("vegalite_altair", altair_spec),
    ):
        try:
            fn()  # imports and caches outside the timing
        except ImportError as e:
            out[name] = f"unavailable: {e}"
            continue
        t0 = time.perf_counter()
        for _ in range(repeat):
            data = fn()
        out[f"{name}_ms"] = round((time.perf_counter() - t0) / repeat * 1000, 2)
        out[f"{name}_bytes"] = len(data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--data", type=Path, default=SST2)
    ap.add_argument(
        "--synthetic",
        type=float,
        metavar="STEP_MS",
        help="measure the view alone on a simulated run with steps of STEP_MS milliseconds",
    )
    ap.add_argument(
        "--renderers",
        action="store_true",
        help="time one frame of the curves as SVG, PNG and Vega-Lite at 100 and 1000 points",
    )
    args = ap.parse_args()
    if args.renderers:
        print(json.dumps([renderers(100), renderers(1000)], indent=1))
        return
    if args.synthetic:
        print(json.dumps(synthetic(args.steps, args.synthetic), indent=1))
        return
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
        "bytes_per_frame": sink.bytes_sent // max(1, sink.frames),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
