"""Where training starts: from scratch, from the run's newest checkpoint, or from the checkpoint
``resume_from_checkpoint`` names (an older one of this run, or one a plain ``Trainer`` wrote).

Decided before anything is loaded, so a wrong path is a config error that changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbtrain.errors import ConfigError, did_you_mean
from nbtrain.events import read_events
from nbtrain.runs import MARKER, is_complete, list_checkpoints, newest_complete, remove_tree

#: The Notice kind that records an honoured ``resume_from_checkpoint`` in ``events.jsonl``.
NOTICE_KIND = "resume_from_checkpoint"


@dataclass
class StartPlan:
    """What ``trainer.train`` resumes from, and what goes first."""

    checkpoint: str | None = None
    requested: bool = False  # an explicit resume_from_checkpoint, honoured by this call
    remove: list[Path] = field(default_factory=list)  # newer checkpoints, the old final/
    message: str = ""

    def carry_out(self) -> None:
        """Remove what the resumed training replaces (call once the run folder is written)."""
        for path in self.remove:
            remove_tree(path)

    def notice_data(self) -> dict[str, Any]:
        return {"from": self.checkpoint, "removed": [p.name for p in self.remove]}


def plan_start(cfg: Any, run_dir: Path, existing: bool) -> StartPlan:
    """The start for ``cfg``'s run in ``run_dir`` (``existing``: a run to continue).

    Raises:
        ConfigError: the checkpoint does not exist, is incomplete, or would mix two trainings.
    """
    requested = getattr(cfg, "resume_from_checkpoint", None)
    if not requested:
        newest = newest_complete(run_dir) if existing else None
        return StartPlan(checkpoint=str(newest.path) if newest else None)
    ckpt = _find(str(requested), run_dir)
    inside = ckpt.parent == run_dir.resolve()
    if inside and not existing:
        raise ConfigError(
            f"resume_from_checkpoint: {ckpt.name} belongs to the run {run_dir.name!r}, which a "
            "restart replaces; leave out restart to resume from it.",
            field="resume_from_checkpoint",
        )
    if existing and _honoured(run_dir, ckpt):
        # The same cell again: the run went on from that checkpoint already; continue it.
        newest = newest_complete(run_dir)
        return StartPlan(checkpoint=str(newest.path) if newest else None)
    own = list_checkpoints(run_dir) if existing or inside else []
    if not inside and own:
        raise ConfigError(
            f"resume_from_checkpoint: the run {run_dir.name!r} already has checkpoints of its "
            f"own ({', '.join(c.path.name for c in own[-3:])}); continuing it from "
            f"{str(requested)!r}, outside the run, would mix two trainings. Give the run a new "
            "name, or restart it (--restart / restart=True).",
            field="resume_from_checkpoint",
        )
    step = _step_of(ckpt)
    newer = [c.path for c in own if c.step > step]
    final = run_dir / "final"
    remove = newer + ([final] if final.is_dir() else [])
    if inside:
        message = f"Resuming from {ckpt.name} (step {step}) of this run"
        if remove:
            message += (
                f"; the training after it is replaced: {', '.join(p.name for p in remove)} removed"
            )
        message += "."
    else:
        message = (
            f"Resuming from {ckpt} (step {step}, written outside nbtrain): its weights, "
            "optimizer, scheduler and step count; it is only read, the new checkpoints go to "
            f"{run_dir}."
        )
    return StartPlan(checkpoint=str(ckpt), requested=True, remove=remove, message=message)


def _find(requested: str, run_dir: Path) -> Path:
    path = Path(requested).expanduser()
    if not path.is_dir() and not path.is_absolute() and (run_dir / requested).is_dir():
        path = run_dir / requested  # "checkpoint-20": one of this run's
    if not path.is_dir():
        parent = path.parent if path.parent.is_dir() else None
        found = sorted(p.name for p in parent.glob("checkpoint-*")) if parent else []
        where = (
            f" {parent} holds: {', '.join(found[-6:])}.{did_you_mean(path.name, found)}"
            if found
            else ""
        )
        raise ConfigError(
            f"resume_from_checkpoint: {requested!r} does not exist (looked in {Path.cwd()}).{where}",
            field="resume_from_checkpoint",
        )
    path = path.resolve()
    if not is_complete(path):
        raise ConfigError(
            f"resume_from_checkpoint: {requested!r} is not a complete checkpoint "
            f"({_what_is_missing(path)}). Choose another one, or start from its weights "
            f"alone with model: {requested}.",
            field="resume_from_checkpoint",
        )
    return path


def _what_is_missing(path: Path) -> str:
    if (path.parent / "config.yaml").exists() and not (path / MARKER).exists():
        return "nbtrain's completion marker is missing: it was cut off while being saved"
    missing = [
        f
        for f in ("trainer_state.json", "optimizer.pt", "scheduler.pt")
        if not (path / f).is_file()
    ]
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        missing.insert(0, "the model weights")
    if missing:
        return "missing " + ", ".join(missing)
    return "a file in it is truncated or does not parse"


def _step_of(ckpt: Path) -> int:
    import json

    try:
        return int(json.loads((ckpt / "trainer_state.json").read_text()).get("global_step", 0))
    except (OSError, ValueError, TypeError):
        return 0


def _honoured(run_dir: Path, ckpt: Path) -> bool:
    """Whether this run already resumed from ``ckpt`` on request (recorded as a Notice)."""
    for ev in read_events(run_dir):
        if ev.type == "notice" and getattr(ev, "kind", "") == NOTICE_KIND:
            if (ev.data or {}).get("from") == str(ckpt):
                return True
    return False
