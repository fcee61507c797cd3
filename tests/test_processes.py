"""Several processes: the checks before notebook_launcher, `processes: 2` from a notebook, and
`accelerate launch -m nbtrain run` end to end on CPU (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from nbtrain.config import load_config
from nbtrain.errors import ConfigError
from nbtrain.events import read_events

ROOT = Path(__file__).resolve().parents[1]


def cfg_of(**kw):
    base = {"model": "some/model", "data": {"train": "train.csv"}}
    base.update(kw)
    return load_config(base)


# -- checks before launching -----------------------------------------------------------------


def test_processes_is_a_config_key_and_a_magic_flag():
    assert cfg_of(processes=2).processes == 2
    with pytest.raises(ConfigError, match="processes"):
        cfg_of(processes=0)
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    with pytest.raises(UsageError, match="processes"):
        shell.run_cell_magic("finetune", "--processes 0", "model: m\ndata: {train: t.csv}\n")


def test_more_processes_than_cores_is_refused(monkeypatch):
    from nbtrain.engine import launch

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"processes: 3 but this machine has 2 CPU cores"):
        launch.check_launch(cfg_of(processes=3))
    plan = launch.check_launch(cfg_of(processes=2))
    assert (plan.device, plan.start_method) == ("cpu", "fork")


def _fake_gpu(monkeypatch, initialised: bool):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialised)


def test_gpu_count_and_initialised_cuda_are_named(monkeypatch):
    import torch

    from nbtrain.engine import launch

    _fake_gpu(monkeypatch, initialised=False)
    with pytest.raises(ConfigError, match="has 2 GPUs"):
        launch.check_launch(cfg_of(processes=4))

    class OnGpu(torch.nn.Module):
        def parameters(self, recurse=True):
            yield types.SimpleNamespace(is_cuda=True)

    _fake_gpu(monkeypatch, initialised=True)
    with pytest.raises(ConfigError, match=r"`my_model` is on the GPU\. Fix: restart the kernel"):
        launch.check_launch(cfg_of(processes=2), namespace={"my_model": OnGpu(), "x": 1})
    with pytest.raises(ConfigError, match="a model or tensor moved to cuda"):
        launch.check_launch(cfg_of(processes=2), namespace={"x": 1})
    _fake_gpu(monkeypatch, initialised=False)
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    with pytest.raises(ConfigError, match="bitsandbytes was imported"):
        launch.check_launch(cfg_of(processes=2))


def test_spawn_names_what_cannot_be_pickled(monkeypatch):
    from transformers import TrainerCallback

    from nbtrain.engine import launch

    class Local(TrainerCallback):  # a class defined in a function: pickle cannot find it
        pass

    cfg = cfg_of(processes=2, callbacks=[Local()], compute_metrics=lambda p: {})
    assert launch.check_launch(cfg).start_method == "fork"  # fork: nothing is pickled
    monkeypatch.setattr(launch, "_start_method", lambda: "spawn")
    with pytest.raises(ConfigError, match="callbacks, compute_metrics cannot be pickled"):
        launch.check_launch(cfg)


def test_processes_disagreeing_with_accelerate_launch(monkeypatch):
    from nbtrain.engine.launch import check_world, wants_launch

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not wants_launch(cfg_of(processes=2))  # already launched: no second launch
    check_world(cfg_of(processes=2))
    with pytest.raises(ConfigError, match="launched with 2 processes"):
        check_world(cfg_of(processes=4))


def test_ddp_keeps_the_loss_scale_of_mean_loss_heads():
    from nbtrain.engine.distributed import process_kwargs

    kw: dict = {}
    process_kwargs(
        cfg_of(), kw, task="text-classification", world=2, precision="fp32",
        device_kind="cpu", total_steps=10,
    )  # fmt: skip
    assert kw == {"average_tokens_across_devices": False}
    kw = {}
    process_kwargs(
        cfg_of(), kw, task="causal-lm", world=2, precision="fp32", device_kind="cpu",
        total_steps=10,
    )  # fmt: skip
    assert kw == {}


# -- the real thing (slow: several processes on 2 shared cores) --------------------------------


def _tiny_task(tmp_path: Path, tiny_bert_cls: Path) -> dict:
    import pandas as pd

    from tests.conftest import make_texts

    pd.DataFrame(make_texts(256, seed=1), columns=["text", "label"]).to_csv(
        tmp_path / "train.csv", index=False
    )
    pd.DataFrame(make_texts(64, seed=2), columns=["text", "label"]).to_csv(
        tmp_path / "dev.csv", index=False
    )
    return {
        "model": str(tiny_bert_cls),
        "data": {"train": str(tmp_path / "train.csv"), "eval": str(tmp_path / "dev.csv")},
        "epochs": 2,
        "lr": 5e-3,
        "runs_dir": str(tmp_path / "runs"),
        "save_strategy": "epoch",
    }


def _check_run(run_dir: Path, *, n_train: int, epochs: int, starts: int = 1) -> dict:
    """One event log with its starts and one finished end, a card, and global samples/s."""
    events = list(read_events(run_dir))
    kinds = [e.type for e in events]
    assert kinds.count("start") == starts and kinds.count("end") == 1, kinds
    end = next(e for e in events if e.type == "end")
    assert end.status == "finished"
    assert (run_dir / "card.html").is_file() and (run_dir / "final").is_dir()
    # samples/s counts every process: the whole data set over the training time
    runtime = end.metrics["train_runtime"]
    assert end.train_samples_per_second == pytest.approx(n_train * epochs / runtime, rel=0.05)
    card = (run_dir / "card.html").read_text()
    assert f"{end.train_samples_per_second:,.1f} samples/s" in card
    return end.metrics


def _accelerate(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    # `--cpu --num_processes 2` starts ONE process in accelerate 1.15 (several CPU processes
    # go through mpirun there); `--multi_gpu` starts 2 with torch's launcher, and on a machine
    # without GPUs each trains on CPU with gloo.
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
    ]
    cmd += ["-m", "nbtrain", *args]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _single(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")  # 2 shared cores
    env.pop("WORLD_SIZE", None)
    out = subprocess.run(
        [sys.executable, "-m", "nbtrain", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _make_unfinished(run_dir: Path) -> str:
    """Drop final/ and every checkpoint but the oldest: the run resumes from that one."""
    shutil.rmtree(run_dir / "final")
    ckpts = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for c in ckpts[1:]:
        shutil.rmtree(c)
    return ckpts[0].name


@pytest.fixture(scope="module")
def tiny_bert_cls(tmp_path_factory):
    from tests.conftest import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("m") / "tiny-bert")


@pytest.mark.slow
def test_accelerate_launch_end_to_end(tmp_path: Path, tiny_bert_cls: Path) -> None:
    task = _tiny_task(tmp_path, tiny_bert_cls)
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump({**task, "name": "ddp", "batch_size": 4}))
    # checkpoints every 16 steps, so one of them is early enough to go on from in 2 processes
    one_cfg = {
        **task,
        "name": "one",
        "batch_size": 8,
        "save_strategy": "steps",
        "save_steps": 16,
        "save_total_limit": None,
    }
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one_cfg))
    out = _accelerate(["run", "ddp.yaml"], tmp_path)
    assert (out.stdout + out.stderr).count("Training ddp:") == 1  # rank 0 reports, rank 1 is silent
    runs = tmp_path / "runs"
    assert [p.name for p in runs.iterdir()] == ["ddp"]  # one run folder
    ddp = _check_run(runs / "ddp", n_train=256, epochs=2)
    start = next(e for e in read_events(runs / "ddp") if e.type == "start")
    assert start.batch_size == 8 and start.total_steps == 64  # 4 per process x 2 processes

    _single(["run", "one.yaml"], tmp_path)  # the same global batch (8) in one process
    one = _check_run(runs / "one", n_train=256, epochs=2)
    print("accuracy 2 processes x 4 / 1 process x 8:", ddp["eval_accuracy"], one["eval_accuracy"])
    assert ddp["eval_accuracy"] >= 0.9 and one["eval_accuracy"] >= 0.9
    assert abs(ddp["eval_accuracy"] - one["eval_accuracy"]) <= 0.05
    # with the gradient doubled by transformers' loss scaling the train loss was ~2x one process's
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=0.3)
    assert ddp["eval_loss"] == pytest.approx(one["eval_loss"], abs=0.4)

    # A checkpoint two processes wrote resumes in one process, and vice versa.
    kept = _make_unfinished(runs / "ddp")
    _single(["run", "ddp.yaml"], tmp_path)
    starts = [e for e in read_events(runs / "ddp") if e.type == "start"]
    assert starts[-1].resumed_from.endswith(kept)
    assert (runs / "ddp" / "final").is_dir()
    kept = _make_unfinished(runs / "one")
    _accelerate(["run", "one.yaml"], tmp_path)
    starts = [e for e in read_events(runs / "one") if e.type == "start"]
    assert starts[-1].resumed_from.endswith(kept) and starts[-1].batch_size == 16
    ends = [e for e in read_events(runs / "one") if e.type == "end"]
    assert ends[-1].status == "finished" and (runs / "one" / "final").is_dir()
    assert ends[-1].step == 32 > int(kept.split("-")[1])  # it trained on in 2 processes
    steps = [e.step for e in read_events(runs / "one") if e.type == "log"]
    assert steps[-1] == 32


NOTEBOOK_CELLS = [
    "%load_ext nbtrain",
    "import pandas as pd\n"
    "from transformers import TrainerCallback\n"
    "train_df = pd.read_csv('train.csv')\n"
    "class Seen(TrainerCallback):  # defined in a cell: fork passes it on, no pickling\n"
    "    pass\n"
    "callbacks = [Seen()]",
    "%%finetune nb-ddp --processes 2 --display html\n"
    "model: {model}\n"
    "data: {{train: {{train_df}}, eval: dev.csv}}\n"
    "callbacks: {{callbacks}}\n"
    "epochs: 2\nbatch_size: 4\nlr: 5e-3\nruns_dir: runs\n",
    "print(run.status, run.metrics['eval_accuracy'], run.checkpoints[-1].step)",
]


@pytest.mark.slow
def test_processes_2_from_a_notebook(tmp_path: Path, tiny_bert_cls: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    _tiny_task(tmp_path, tiny_bert_cls)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(c.format(model=tiny_bert_cls) if "{model}" in c else c)
        for c in NOTEBOOK_CELLS
    ]
    spec = tmp_path / "jupyter" / "kernels" / "nbtrain-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(tmp_path / "jupyter")
    client = nbclient.NotebookClient(
        nb, kernel_name="nbtrain-test", timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},
    )  # fmt: skip
    client.execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    status, acc, step = printed.split()
    assert status == "finished" and float(acc) >= 0.9 and int(step) == 64  # 256/(4x2) x 2
    # The parent's live view showed the children's progress and metrics.
    view = nb.cells[2].outputs
    html = "".join(o.get("data", {}).get("text/html", "") for o in view)
    assert "eval_accuracy" in html or "accuracy" in html, html[:500]
    assert "samples/s" in html
    run_dir = tmp_path / "runs" / "nb-ddp"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["nb-ddp"]
    _check_run(run_dir, n_train=256, epochs=2)


@pytest.mark.slow
def test_stop_reaches_the_launched_processes(tmp_path: Path, tiny_bert_cls: Path) -> None:
    """A background `processes: 2` run's stop(): both processes stop at the same step (no hang in
    the next all-reduce), rank 0 saves a checkpoint there, and a re-run resumes from it."""
    import nbtrain
    from nbtrain.background import RUNS
    from nbtrain.runs import newest_complete, run_status

    cfg = {
        **_tiny_task(tmp_path, tiny_bert_cls),
        "name": "ddp-stop",
        "epochs": 50,
        "processes": 2,
        "save_strategy": "no",
    }

    def stop_at_step_5(ev):
        if ev.type == "step" and ev.step == 5:
            RUNS["ddp-stop"].stop()

    handle = nbtrain.finetune(cfg, display="none", on_event=stop_at_step_5, background=True)
    result = handle.wait(300)
    assert handle.done, "the processes did not stop"
    assert result.status == "stopped"
    run_dir = tmp_path / "runs" / "ddp-stop"
    ckpt = newest_complete(run_dir)
    assert ckpt is not None and 5 <= ckpt.step < 50 * 16  # saved where they stopped, not at the end
    assert run_status(run_dir).status == "stopped"
    end = [e for e in read_events(run_dir) if e.type == "end"]
    assert len(end) == 1 and end[0].resume_checkpoint.endswith(ckpt.path.name)


def _agree_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from nbtrain.engine.callbacks import EventCallback
    from nbtrain.engine.stop import StopController
    from nbtrain.events import EventBus

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        stop = StopController()
        cb = EventCallback(EventBus([]), task=None, stop=stop)
        seen = []
        for step in range(3):
            if rank == 1 and step == 1:
                stop.request("interrupted")  # only rank 1 got the Ctrl-C
            cb._agree_on_stop("cpu")
            seen.append(stop.reason)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_processes_agree_on_the_step_to_stop_at(tmp_path: Path) -> None:
    """One process's stop request reaches all of them at the same step, with its reason."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _agree_worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1] == [None, "interrupted", "interrupted"]


def _late_request_worker(rank: int, init_file: str, out_dir: str) -> None:
    from types import SimpleNamespace

    import torch.distributed as dist

    from nbtrain.engine.callbacks import EventCallback
    from nbtrain.engine.stop import StopController
    from nbtrain.events import EventBus

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        stop = StopController()
        cb = EventCallback(EventBus([]), task=None, stop=stop)
        real_all_reduce, step_now = dist.all_reduce, [0]

        def all_reduce_then_request(*args, **kwargs):
            out = real_all_reduce(*args, **kwargs)
            if rank == 1 and step_now[0] == 1:
                stop.request("stopped")  # the stop-file watcher fires just after the agreement
            return out

        dist.all_reduce = all_reduce_then_request
        decided = []
        for step in range(3):
            step_now[0] = step
            control = SimpleNamespace(
                should_save=False,
                should_evaluate=False,
                should_log=False,
                should_training_stop=False,
            )
            state = SimpleNamespace(global_step=step + 1, epoch=0.0, max_steps=10)
            cb.on_step_end(SimpleNamespace(world_size=2, device="cpu"), state, control)
            decided.append(control.should_training_stop)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps([decided, cb.stopping]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_request_after_the_agreement_waits_for_the_next_step(tmp_path: Path) -> None:
    """A stop request that lands on one process between the all-reduce and its own check must
    not end that process's loop alone (the others would hang or mismatch in the next
    all-reduce, as in the CI failure "Received data size doesn't match expected size")."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _late_request_worker,
        args=(str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1] == [[False, False, True], True]
