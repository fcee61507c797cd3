"""Nothing nbtrain calls prints warnings or progress bars into the user's cell.

JupyterLab shows every warning as a red box under the cell: pyarrow's ``null_placement``
FutureWarning (Dataset.sort), transformers' ``is_gradient_checkpointing`` deprecation (read by
peft), tqdm bars from saving and loading weights. A user's own code may still warn.
"""

from __future__ import annotations

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
