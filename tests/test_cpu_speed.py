"""CPU speed defaults (docs/performance.md): threads from the load, eager attention for the BERT
family, row-wise word-embedding updates. Each is applied by default on CPU, can be turned
off, and says what it chose in a notice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

import nbtrain
from nbtrain.engine.cpu_speed import choose_threads, machine_load
from nbtrain.engine.row_adamw import RowAdamW, clip_grad_norm
from nbtrain.errors import ConfigError
from tests.test_resume import InterruptAt

# -- threads --------------------------------------------------------------------------------


def test_busy_machine_gets_fewer_threads_and_says_why():
    c = choose_threads(None, current=2, cores=2, load=6.0)
    assert c.threads == 1 and c.before == 2
    assert "other processes use 6.0 of its 2 cores" in c.message and "cpu_threads" in c.message
    c = choose_threads(None, current=8, cores=8, load=3.2)
    assert c.threads == 5  # the cores the load leaves free


def test_idle_machine_and_explicit_setting_keep_their_threads():
    idle = choose_threads(None, current=2, cores=2, load=0.3)
    assert idle.threads == 2 and idle.message is None
    unknown = choose_threads(None, current=2, cores=2, load=None)
    assert unknown.threads == 2 and unknown.message is None
    kept = choose_threads(2, current=2, cores=2, load=9.0)  # the user's word wins
    assert kept.threads == 2 and kept.message is None
    assert choose_threads(None, current=1, cores=2, load=0.0).threads == 1  # never raised


def test_load_counts_other_processes_not_this_one(monkeypatch):
    # A run started right after another one in the same kernel (or after its own tokenization)
    # sees a 1-minute load average of ~2 on 2 cores: itself. Only other processes count.
    from nbtrain.engine import cpu_speed

    clock = {"busy": 100.0, "own": 10.0}

    def sleep(s):  # in the window: this process used 1 core, the machine 1.5 cores in all
        clock["busy"] += 1.5 * s
        clock["own"] += 1.0 * s

    monkeypatch.setattr("time.sleep", sleep)
    monkeypatch.setattr("time.monotonic", lambda: clock["busy"])  # advances with busy time
    monkeypatch.setattr(cpu_speed, "_busy_cpu", lambda: clock["busy"])
    monkeypatch.setattr(cpu_speed, "_own_cpu", lambda: clock["own"])
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    _, load = cpu_speed.machine_load(0.2)
    # window: monotonic moved by 1.5 * 0.2; busy 0.3, own 0.2 -> others 0.1 / 0.3 s
    assert load == pytest.approx(0.1 / 0.3)
    assert choose_threads(None, current=2, cores=2, load=load).threads == 2


def test_machine_load_reads_this_machine():
    cores, load = machine_load()
    assert cores == os.cpu_count()
    if os.path.exists("/proc/stat"):
        assert 0.0 <= load <= cores + 0.5  # cores busy, not a load average


class _Probe:
    """Records, at the first optimizer step, what the run trains with."""

    def __init__(self):

        probe = self

        class CB(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                if "threads" in probe.seen:
                    return
                emb = model.get_input_embeddings().weight
                probe.seen.update(
                    threads=torch.get_num_threads(),
                    sparse_grad=emb.grad is not None and emb.grad.is_sparse,
                    optimizer=type(kw["optimizer"].optimizer).__name__
                    if hasattr(kw.get("optimizer"), "optimizer")
                    else type(kw.get("optimizer")).__name__,
                )

        self.seen: dict = {}
        self.callback = CB()


def _run(fast_cfg, name, **extra):
    probe, notices = _Probe(), []
    cfg = {**fast_cfg, "epochs": 1, "name": name, "callbacks": [probe.callback], **extra}
    r = nbtrain.finetune(cfg, display="none", on_event=notices.append)
    speed = [e.message for e in notices if e.type == "notice" and e.kind == "speed"]
    return r, probe.seen, speed


def test_busy_machine_trains_with_fewer_threads_and_gives_them_back(fast_cfg, monkeypatch):
    from nbtrain.engine import runner

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(runner, "machine_load", lambda: (2, 7.5))
        auto = {k: v for k, v in fast_cfg.items() if k != "cpu_threads"}  # the default: auto
        _, seen, speed = _run(auto, "busy")
        assert seen["threads"] == 1
        assert any("use 7.5 of its 2 cores" in m for m in speed)
        assert torch.get_num_threads() == 2  # the notebook gets its threads back
        _, seen, speed = _run(fast_cfg, "told", cpu_threads=2)
        assert seen["threads"] == 2 and not any("other processes use" in m for m in speed)
    finally:
        torch.set_num_threads(before)


def test_a_resume_trains_with_the_threads_its_run_started_with(fast_cfg, monkeypatch):
    """The automatic thread count follows the load, but a resume on a now-busy machine keeps
    the count its run started with: float sums depend on it, and a resumed run must equal an
    uninterrupted one bit for bit (seen in CI: 4 comparisons failed under load)."""
    from nbtrain.engine import runner
    from nbtrain.runs import run_env

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    load = {"now": 0.0}
    monkeypatch.setattr(runner, "machine_load", lambda: (2, load["now"]))
    auto = {k: v for k, v in fast_cfg.items() if k != "cpu_threads"}  # the default: auto
    try:
        straight, seen, _ = _run(auto, "straight")
        assert seen["threads"] == 2
        with pytest.raises(nbtrain.RunInterrupted):
            _run(auto, "cut", callbacks=[InterruptAt(2)])
        assert run_env(Path(fast_cfg["runs_dir"]) / "cut")["cpu_threads"] == 2
        load["now"] = 1.6  # the machine got busy: a new run would take 1 thread
        resumed, seen, speed = _run(auto, "cut")
        assert seen["threads"] == 2  # not the 1 a new run would take at this load
        a, b = straight.model.state_dict(), resumed.model.state_dict()
        assert [k for k in a if not torch.equal(a[k], b[k])] == []
        _, seen, _ = _run(auto, "fresh-busy")  # a new run at this load
        assert seen["threads"] == 1
        # told from the notebook to use 1 thread, a resume still takes the run's 2, and says so
        load["now"] = 0.0
        with pytest.raises(nbtrain.RunInterrupted):
            _run(auto, "cut2", callbacks=[InterruptAt(2)])
        torch.set_num_threads(1)
        _, seen, speed = _run(auto, "cut2")
        assert seen["threads"] == 2
        assert any("Resuming with the 2 torch threads this run trained with" in m for m in speed)
        assert torch.get_num_threads() == 1  # given back
    finally:
        torch.set_num_threads(before)


def test_cpu_threads_is_not_part_of_the_run_identity(fast_cfg):
    from nbtrain.config import load_config
    from nbtrain.engine.rundir import identity

    assert identity(load_config({**fast_cfg, "cpu_threads": 1})) == identity(load_config(fast_cfg))


# -- attention and row-wise embeddings: defaults on, and off --------------------------------


def test_cpu_defaults_eager_attention_and_row_wise_embeddings(fast_cfg):
    r, seen, speed = _run(fast_cfg, "defaults")
    assert r.model.config._attn_implementation == "eager"
    assert seen["sparse_grad"] and seen["optimizer"] == "RowAdamW"
    assert any("Eager attention" in m for m in speed)
    assert any("Row-wise word-embedding updates" in m for m in speed)
    # The model handed back trains with any optimizer: dense gradients again.
    assert r.model.get_input_embeddings().sparse is False


def test_each_default_turns_off(fast_cfg):
    r, seen, speed = _run(fast_cfg, "off", attn_implementation="sdpa", sparse_embeddings=False)
    assert r.model.config._attn_implementation == "sdpa"
    assert not seen["sparse_grad"] and seen["optimizer"] == "AdamW"
    assert not any("Eager" in m or "Row-wise" in m for m in speed)


def test_row_wise_and_dense_runs_train_to_the_same_result(fast_cfg):
    """Every tiny-BERT batch uses most of its small vocabulary, so the lazy rows barely differ:
    the two runs end at the same loss and accuracy within a tight tolerance."""
    rows, _, _ = _run(fast_cfg, "rows", epochs=2)
    dense, _, _ = _run(fast_cfg, "dense", epochs=2, sparse_embeddings=False)
    assert rows.metrics["train_loss"] == pytest.approx(dense.metrics["train_loss"], abs=2e-3)
    assert rows.metrics["eval_accuracy"] == pytest.approx(dense.metrics["eval_accuracy"], abs=0.07)
    a = rows.model.get_input_embeddings().weight.detach()
    b = dense.model.get_input_embeddings().weight.detach()
    assert (a - b).abs().max() < 5e-3


def test_sparse_embeddings_true_where_it_cannot_apply_is_a_config_error(fast_cfg):
    with pytest.raises(ConfigError, match="sparse_embeddings"):
        nbtrain.finetune(
            {**fast_cfg, "name": "lora", "sparse_embeddings": True, "lora": {"r": 4}},
            display="none",
        )
    with pytest.raises(ConfigError, match="sparse_embeddings"):
        nbtrain.finetune(
            {**fast_cfg, "name": "frozen", "sparse_embeddings": True, "freeze_embeddings": True},
            display="none",
        )


# -- the optimizer and the clip themselves ---------------------------------------------------


def _pair(seed=0):
    torch.manual_seed(seed)
    emb, lin = torch.nn.Embedding(12, 4), torch.nn.Linear(4, 1)
    return emb, lin


@pytest.mark.parametrize("fused", [True, False])
def test_row_adamw_is_adamw_when_every_row_is_used(fused):
    out = {}
    for kind in ("dense", "rows"):
        emb, lin = _pair()
        emb.sparse = kind == "rows"
        params = [*emb.parameters(), *lin.parameters()]
        cls = RowAdamW if kind == "rows" else torch.optim.AdamW
        opt = cls(params, lr=1e-2, weight_decay=0.01, fused=fused)
        norms = []
        for _ in range(4):
            x = torch.tensor([list(range(12)) + [3, 3]])
            (lin(emb(x)) ** 2).sum().backward()
            norms.append(float(clip_grad_norm(params, 0.5)))
            opt.step()
            opt.zero_grad()
        out[kind] = (emb.weight.detach().clone(), lin.weight.detach().clone(), norms)
    torch.testing.assert_close(out["rows"][0], out["dense"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["rows"][1], out["dense"][1], rtol=0, atol=1e-6)
    assert out["rows"][2] == pytest.approx(out["dense"][2], rel=1e-5)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_row_adamw_is_adamw_on_rows_used_within_the_momentum_window(wd):
    """Rows used a few steps ago keep moving on their momentum, exactly as under dense AdamW.
    With weight decay, a row not used yet gets its decay when first used, so the forward pass
    before that sees it undecayed: (1 - lr x wd) ** steps apart, 4e-4 here, 2e-4 over a whole
    SST-2 epoch at the defaults (lr 5e-5, wd 0.01)."""
    tol = 1e-6 if wd == 0 else 2e-3
    out = {}
    batches = [[0, 1, 2], [3, 4], [5], [5], [0, 6]]
    for kind in ("dense", "rows"):
        emb, lin = _pair()
        emb.sparse = kind == "rows"
        cls = RowAdamW if kind == "rows" else torch.optim.AdamW
        opt = cls([*emb.parameters(), *lin.parameters()], lr=1e-2, weight_decay=wd)
        for ids in batches:
            (lin(emb(torch.tensor([ids]))) ** 2).sum().backward()
            opt.step()
            opt.zero_grad()
        out[kind] = (emb.weight.detach().clone(), opt.state[emb.weight]["exp_avg"].clone())
    used = list(range(7))
    torch.testing.assert_close(out["rows"][0][used], out["dense"][0][used], rtol=0, atol=tol)
    torch.testing.assert_close(out["rows"][1], out["dense"][1], rtol=0, atol=tol / 10)


def test_row_adamw_window_rows_wait_and_catch_their_moments_up(monkeypatch):
    monkeypatch.setattr(RowAdamW, "MOMENTUM_TOLERANCE", 0.5)  # window: 7 steps at beta1 0.9
    emb, lin = _pair()
    emb.sparse = True
    opt = RowAdamW([*emb.parameters(), *lin.parameters()], lr=1e-2, weight_decay=0.0)
    (lin(emb(torch.tensor([[0, 1]]))) ** 2).sum().backward()
    opt.step()
    opt.zero_grad()
    m0 = opt.state[emb.weight]["exp_avg"][0].clone()
    untouched = emb.weight.detach()[5:].clone()
    for _ in range(12):  # row 0 unused for 12 steps: past the window, it waits
        (lin(emb(torch.tensor([[1, 2]]))) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    waited = emb.weight.detach()[0].clone()
    (lin(emb(torch.tensor([[1, 2]]))) ** 2).sum().backward()
    opt.step()
    opt.zero_grad()
    assert torch.equal(emb.weight.detach()[0], waited)  # outside the window: not moved
    assert torch.equal(emb.weight.detach()[5:], untouched)  # never used: never moved
    (lin(emb(torch.tensor([[0]]))) ** 2).sum().backward()
    g0 = emb.weight.grad.coalesce().values()[0].clone()
    opt.step()
    beta1 = 0.9
    expect = m0 * beta1**13 * beta1 + (1 - beta1) * g0  # dense AdamW's moment after zeros
    torch.testing.assert_close(opt.state[emb.weight]["exp_avg"][0], expect)


def test_clip_grad_norm_counts_sparse_rows_like_a_dense_gradient():
    emb, lin = _pair()
    x = torch.tensor([[0, 4, 4, 7]])
    (lin(emb(x)) ** 2).sum().backward()
    dense_grads = [p.grad.clone() for p in (*emb.parameters(), *lin.parameters())]
    want = torch.nn.utils.clip_grad_norm_([*emb.parameters(), *lin.parameters()], 0.1)
    clipped = [p.grad.clone() for p in (*emb.parameters(), *lin.parameters())]
    emb2, lin2 = _pair()
    emb2.sparse = True
    (lin2(emb2(x)) ** 2).sum().backward()
    got = clip_grad_norm([*emb2.parameters(), *lin2.parameters()], 0.1)
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    torch.testing.assert_close(emb2.weight.grad.to_dense(), clipped[0])
    torch.testing.assert_close(lin2.weight.grad, clipped[1])
    assert not torch.equal(clipped[0], dense_grads[0])  # the clip did act


# -- the dry run's time estimate times what the run trains ---------------------------------------


@pytest.mark.parametrize("defaults", [True, False])
def test_time_estimate_times_the_model_and_optimizer_the_run_uses(fast_cfg, monkeypatch, defaults):
    from nbtrain.config import load_config
    from nbtrain.engine import timing
    from nbtrain.engine.model import device_info
    from nbtrain.engine.prepare import prepare
    from nbtrain.events import EventBus

    extra = {} if defaults else {"attn_implementation": "sdpa", "sparse_embeddings": False}
    auto = {k: v for k, v in fast_cfg.items() if k != "cpu_threads"}  # the default: auto
    prep = prepare(load_config({**auto, **extra}), EventBus())
    model, _, optimizer, clip = timing._training_copy(prep, device_info(), "fp32")
    assert model.config._attn_implementation == ("eager" if defaults else "sdpa")
    assert model.get_input_embeddings().sparse is defaults
    assert (type(optimizer) is RowAdamW) is defaults
    assert (clip is clip_grad_norm) is defaults

    # ...and with the thread count the run would take at this load, given back afterwards.
    seen = []
    real = timing._measure
    monkeypatch.setattr(
        timing, "_measure", lambda *a: seen.append(torch.get_num_threads()) or real(*a)
    )
    monkeypatch.setattr("nbtrain.engine.cpu_speed.machine_load", lambda: (2, 7.5))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        est = timing.estimate_time(prep, device_info(), "fp32")
        assert seen == [1] and est.threads == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
