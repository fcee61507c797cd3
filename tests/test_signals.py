"""A real Ctrl-C (SIGINT) sent to a training process: the first stops at the end of the step and
saves a resumable checkpoint; a second one aborts the step in progress at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nbtrain.events import read_events
from nbtrain.runs import newest_complete

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import nbtrain
    from transformers import TrainerCallback

    cfg, slow_step, pause = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

    class Slow(TrainerCallback):
        # The step after `slow_step` takes `pause` seconds: time to send the signals in.
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == slow_step:
                print("SLOW", state.global_step, flush=True)
                time.sleep(pause)

    try:
        nbtrain.finetune({**cfg, "callbacks": [Slow()]}, display="none")
    except nbtrain.RunInterrupted as e:
        print("INTERRUPTED", e.checkpoint, flush=True)
        sys.exit(3)
    print("FINISHED", flush=True)
    """
)


def _start(tmp_path: Path, fast_cfg: dict, slow_step: int, pause: float) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cfg = {**fast_cfg, "epochs": 50, "eval_strategy": "no", "save_strategy": "no"}
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(cfg), str(slow_step), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_line(proc: subprocess.Popen, prefix: str, timeout: float = 300) -> str:
    t0 = time.time()
    seen = []
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    proc.kill()
    raise AssertionError(f"no {prefix!r} line; the child printed:\n{''.join(seen)[-3000:]}")


def test_first_ctrl_c_stops_at_the_step_end_and_saves(fast_cfg, runs_dir, tmp_path):
    pause = 4.0
    proc = _start(tmp_path, fast_cfg, slow_step=2, pause=pause)
    _wait_for_line(proc, "SLOW 2")  # step 3 has begun
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    line = _wait_for_line(proc, "INTERRUPTED")
    assert proc.wait(60) == 3
    assert time.time() - sent >= pause * 0.5  # it let step 3 finish instead of dropping it
    run_dir = runs_dir / "tiny"
    assert line.split()[1].endswith("checkpoint-3")
    ckpt = newest_complete(run_dir)
    assert ckpt is not None and ckpt.step == 3  # the step in progress, finished and saved
    end = [e for e in read_events(run_dir) if e.type == "end"][-1]
    assert end.status == "interrupted" and end.resume_checkpoint.endswith("checkpoint-3")


def test_second_ctrl_c_aborts_the_step_in_progress(fast_cfg, runs_dir, tmp_path):
    pause = 300.0  # a step that would take five minutes
    proc = _start(tmp_path, fast_cfg, slow_step=2, pause=pause)
    _wait_for_line(proc, "SLOW 2")
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # the second: stop now
    _wait_for_line(proc, "INTERRUPTED", timeout=120)
    assert proc.wait(60) == 3
    assert time.time() - sent < pause / 2  # it did not wait for the step
    ckpt = newest_complete(runs_dir / "tiny")
    assert ckpt is not None and ckpt.step == 2  # the last finished step: still resumable
