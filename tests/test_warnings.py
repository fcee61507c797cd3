"""Nothing nbtrain calls prints warnings or progress bars into the user's cell.

JupyterLab shows every warning as a red box under the cell: pyarrow's ``null_placement``
FutureWarning (Dataset.sort), transformers' ``is_gradient_checkpointing`` deprecation (read by
peft), tqdm bars from saving and loading weights. A user's own code may still warn.
"""

from __future__ import annotations

import logging
import warnings

import pytest

import nbtrain


@pytest.mark.slow
def test_a_run_resume_and_predict_leave_no_warnings_or_bars(fast_cfg, capfd):
    from transformers import TrainerCallback

    class InterruptAt2(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt

    cfg = {
        **fast_cfg,
        "epochs": 1,
        "lora": {"r": 4},
        "gradient_checkpointing": True,
        "report_to": "tensorboard",
    }
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a warning shown once per session counts too
        with pytest.raises(nbtrain.RunInterrupted):
            nbtrain.finetune({**cfg, "callbacks": [InterruptAt2()]}, display="none")
        result = nbtrain.finetune(cfg, display="none")  # resumes, evaluates, saves final/
        loaded = nbtrain.load_run(result.name, fast_cfg["runs_dir"])
        loaded.predict(["a lovely film"])  # loads final/ from disk
    assert result.status == "finished"
    hidden = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
    shown = [  # what a notebook shows: Python hides these categories when libraries raise them
        f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if not issubclass(w.category, hidden)
    ]
    assert not shown, "\n".join(shown)
    out = capfd.readouterr()
    assert "it/s]" not in out.err + out.out, out.err[-2000:]  # no tqdm bar


class _Keep(logging.Handler):
    """Records the messages that reach transformers' root logger's handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(record.getMessage())


@pytest.fixture
def transformers_warnings():
    """transformers at its default verbosity (WARNING): other tests may have lowered it."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    yield
    hf_logging.set_verbosity(old)


def test_transformers_log_lines_of_a_run_go_to_its_folder_not_the_cell(
    tmp_path, capfd, transformers_warnings
):
    # A causal-LM run with load-best: transformers logs three warnings from inside train()
    # (pad token aligned, mtime, "missing keys ['lm_head.weight']" for tied weights). They
    # showed as stderr under every such cell; they belong in the run folder.
    from tests.tiny_models import build_tiny_gpt2, instruction_rows

    gpt2 = build_tiny_gpt2(tmp_path / "gpt2")
    rows = instruction_rows(32)
    capfd.readouterr()
    run = nbtrain.finetune(
        {
            "model": str(gpt2),
            "data": {"train": rows[8:], "eval": rows[:8]},
            "epochs": 2,
            "batch_size": 8,
            "runs_dir": str(tmp_path / "runs"),
            "name": "clm",
            "max_new_tokens": 2,
        },
        display="none",
    )
    assert run.status == "finished"
    err = capfd.readouterr().err
    assert "[transformers]" not in err, err[-2000:]
    log = (run.output_dir / "library.log").read_text()
    # The routing is what is tested: a line transformers logs from inside train() is in the
    # run's folder and not on stderr. Which lines transformers emits is its business: in full
    # CI runs the load-best "missing keys" line was absent 2 times in 4 (cause not found yet),
    # while the pad-token line, logged from the same thread in the same train(), never was.
    assert "WARNING transformers.trainer_utils: The tokenizer has new PAD" in log, log


def test_library_log_keeps_other_threads_and_errors(tmp_path, transformers_warnings):
    import logging
    import threading

    from nbtrain.engine.library_log import library_log_to

    logger = logging.getLogger("transformers.nbtrain_test")
    root = logging.getLogger("transformers")
    keep = _Keep()
    seen = keep.seen
    root.addHandler(keep)
    try:
        with library_log_to(tmp_path / "library.log"):
            logger.warning("from the run")
            logger.error("an error stays visible")
            other = threading.Thread(target=lambda: logger.warning("from another thread"))
            other.start()
            other.join()
        logger.warning("after the run")
    finally:
        root.removeHandler(keep)
    assert seen == ["an error stays visible", "from another thread", "after the run"]
    assert (
        "WARNING transformers.nbtrain_test: from the run" in (tmp_path / "library.log").read_text()
    )


def test_quiet_loading_in_one_thread_keeps_other_threads_warnings(transformers_warnings):
    """A background run loading a model while another run trains: the loader's warnings are
    dropped, the trainer's are not, and transformers' level is the same afterwards however
    the two loads overlap (a save-and-restore of the global level left it at ERROR)."""
    import logging
    import threading

    from transformers.utils import logging as hf_logging

    from nbtrain.engine.library_log import quiet_transformers

    root = logging.getLogger("transformers")
    logger = logging.getLogger("transformers.nbtrain_test")
    keep = _Keep()
    seen = keep.seen
    root.addHandler(keep)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def loader_a() -> None:
        with quiet_transformers():
            a_in.set()
            b_in.wait(5)
            logger.warning("from loader a")
        a_out.set()

    def loader_b() -> None:
        a_in.wait(5)
        with quiet_transformers():
            b_in.set()
            a_out.wait(5)  # a leaves first: b's exit is the last
            other = threading.Thread(target=lambda: logger.warning("from a training thread"))
            other.start()
            other.join()
            logger.warning("from loader b")

    threads = [threading.Thread(target=loader_a), threading.Thread(target=loader_b)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        logger.warning("after both")
    finally:
        root.removeHandler(keep)
    assert hf_logging.get_verbosity() == hf_logging.WARNING
    assert seen == ["from a training thread", "after both"]
