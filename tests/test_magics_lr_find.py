"""``%nbtrain lr_find CONFIG`` and ``%%finetune NAME --lr-find`` in a real IPython shell (a file of
its own, sorted after test_magics.py, so the shell singleton does not reach earlier tests)."""

from __future__ import annotations

import pytest
import yaml


@pytest.fixture(scope="module")
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    return shell


def test_magics_run_the_finder(ip, fast_cfg, monkeypatch, capsys):
    import nbtrain.engine.lr_find as engine_lr

    real = engine_lr.find_lr
    monkeypatch.setattr(engine_lr, "find_lr", lambda cfg, **kw: real(cfg, **{**kw, "steps": 15}))
    ip.user_ns["my_cfg"] = fast_cfg
    res = ip.run_line_magic("nbtrain", "lr_find my_cfg")
    assert res.suggestion > 0 and len(res.lrs) <= 15
    assert "Suggested learning_rate:" in capsys.readouterr().out
    ip.run_cell_magic(
        "finetune",
        "tiny --lr-find",
        yaml.safe_dump({k: v for k, v in fast_cfg.items() if k != "name"}),
    )
    assert ip.user_ns["lr"].suggestion > 0
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="neither a notebook variable"):
        ip.run_line_magic("nbtrain", "lr_find no_such_thing")
