"""What a new user does when pasting the docs' examples (issue 19): each problem found that way
has a test here that failed before its fix."""

from __future__ import annotations

import html
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=_env(),
    )


def _cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nbtrain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=_env(),
    )


# -- 1. lazy names ----------------------------------------------------------------------------


def test_documented_names_resolve_after_plain_import_and_after_finetune_form():
    out = _python(
        """
        import json, sys
        import nbtrain
        got = {
            "read_events": callable(nbtrain.events.read_events),
            "set_default": callable(nbtrain.display.set_default),
            "detect_frontend": str(nbtrain.display.detect_frontend()),
            "list_runs": callable(nbtrain.runs.list_runs),
        }
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_line_magic("load_ext", "nbtrain")
        shell.run_line_magic("finetune_form", "sst2-bert")   # imports nbtrain.ui.form
        shell.run_line_magic("nbtrain", "checkpoints")       # imports nbtrain.ui.browser
        got["form"] = type(nbtrain.form).__name__
        got["form_result"] = type(nbtrain.form(widgets=False)).__name__
        got["browse"] = type(nbtrain.browse).__name__
        print(json.dumps(got))
        """
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["read_events"] and got["set_default"] and got["list_runs"]
    assert got["detect_frontend"].startswith("Frontend.")
    assert got["form"] == "function" and got["form_result"] == "FormFallback"
    assert got["browse"] == "function"


def test_plain_import_still_imports_no_submodule_it_does_not_need():
    out = _python(
        "import sys, nbtrain; print(sorted(m for m in sys.modules if m.startswith('nbtrain')))"
    )
    loaded = set(eval(out.stdout))  # a list of module names printed by repr
    assert loaded <= {"nbtrain", "nbtrain.errors", "nbtrain.version"}, loaded
    assert "estimate_memory" in dir(__import__("nbtrain")) and "events" in dir(
        __import__("nbtrain")
    )


# -- 2. trailing comments on magic lines ------------------------------------------------------


@pytest.fixture(scope="module")
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbtrain")
    return shell


def test_strip_comment_reads_a_line_as_a_shell_does():
    from nbtrain.magics import strip_comment

    assert strip_comment("sst2-lora   # re-running the cell resumes") == "sst2-lora"
    assert strip_comment("x --set data.train='a #1.csv'  # note") == "x --set data.train='a #1.csv'"
    assert strip_comment('x --set tag="#1"') == 'x --set tag="#1"'
    assert strip_comment("x --set tag=a#b") == "x --set tag=a#b"  # not at a word start
    assert strip_comment("# only a comment") == ""


def test_magic_lines_accept_a_trailing_comment(ip, fast_cfg):
    from IPython.core.error import UsageError

    from nbtrain.magics import View

    cfg = {k: v for k, v in fast_cfg.items() if k != "name"}
    # Each of these lines was refused before ("unrecognized arguments", "at most one run name").
    ip.run_cell_magic("finetune", "tiny --dry-run   # re-running the cell resumes", yaml.dump(cfg))
    form = ip.run_line_magic("finetune_form", "sst2-bert  # an empty form")
    assert form.config.name == "sst2-bert"
    view = ip.run_line_magic("nbtrain", f"runs --runs-dir {fast_cfg['runs_dir']}  # every run")
    assert isinstance(view, View)
    with pytest.raises(UsageError, match="at most one run name"):
        ip.run_line_magic("finetune_form", "one two  # two names are still refused")


def test_load_ext_with_a_trailing_comment_is_ipythons_to_parse():
    """IPython passes ``nbtrain  # ...`` to importlib as the module name: nbtrain cannot see it,
    so the docs write ``%load_ext nbtrain`` alone (tests/test_docs.py checks every page)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    with pytest.raises(ModuleNotFoundError, match="nbtrain  # instant"):
        shell.run_line_magic("load_ext", "nbtrain  # instant")


# -- 5. a failed run: its error printed once, nothing left on disk ----------------------------


@pytest.fixture
def bad_column_yaml(tmp_path, tiny_bert, sentiment_csv) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_bert),
                "data": {"train": str(sentiment_csv["train"]), "text": "txt"},
                "runs_dir": str(tmp_path / "runs"),
            }
        )
    )
    return path


MISSING = "the train data has no column 'txt'"


def test_cli_prints_a_data_error_once(bad_column_yaml, tmp_path):
    out = _cli("run", str(bad_column_yaml), cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    both = out.stdout + out.stderr
    assert both.count(MISSING) == 1, both
    assert "Traceback" not in both and "Run failed" not in both


@pytest.mark.slow
def test_cli_quiet_prints_a_data_error_once(bad_column_yaml, tmp_path):
    quiet = _cli("run", str(bad_column_yaml), "--quiet", cwd=tmp_path)
    assert quiet.returncode == 2 and (quiet.stdout + quiet.stderr).count(MISSING) == 1


def test_magic_prints_a_data_error_once(ip, bad_column_yaml, capsys):
    body = bad_column_yaml.read_text()
    for display in ("text", "none"):
        result = ip.run_cell(f"%%finetune bad --display {display}\n{body}")
        assert result.error_in_exec is not None  # the cell fails: "Run All" stops there
        captured = capsys.readouterr()
        both = captured.out + captured.err
        assert both.count(MISSING) == 1, (display, both)
        assert "Traceback" not in both


def test_errors_found_before_training_leave_nothing_on_disk(bad_column_yaml, tmp_path):
    import nbtrain

    with pytest.raises(nbtrain.DataError):
        nbtrain.finetune(bad_column_yaml, display="none")
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


# -- 6. estimate_memory from a config alone ---------------------------------------------------


def test_estimate_memory_from_a_config_alone(tiny_bert):
    import nbtrain
    from nbtrain.engine.memory import estimate_memory as engine_estimate
    from nbtrain.engine.model import SIMULATED

    est = nbtrain.estimate_memory({"model": str(tiny_bert)}, device="t4")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert est.params_total == sum(p.numel() for p in model.parameters())
    assert est.device == SIMULATED["t4"].label and est.fits is True
    lora = nbtrain.estimate_memory(f"model: {tiny_bert}\nlora: {{r: 4}}", device="a100")
    assert 0 < lora.params_trainable < lora.params_total
    with pytest.raises(nbtrain.ConfigError, match=r"not a known device.*t4"):
        nbtrain.estimate_memory({"model": str(tiny_bert)}, device="t5x")
    with pytest.raises(nbtrain.ConfigError, match="Could not load the model"):
        nbtrain.estimate_memory({"model": "no-such-org/no-such-model"})
    cfg = nbtrain.load_config({"model": str(tiny_bert), "data": {"train": "x.csv"}})
    with pytest.raises(nbtrain.ConfigError, match=r"nbtrain\.estimate_memory"):
        engine_estimate(cfg)  # used to be a raw transformers ValueError


# -- 7. predict keeps the user's label type ---------------------------------------------------


@pytest.mark.slow
def test_predict_returns_integer_labels_for_integer_data(tmp_path, tiny_bert, sentiment_csv):
    import nbtrain

    rows = [line.rsplit(",", 1) for line in sentiment_csv["train"].read_text().splitlines()[1:]]
    csv = tmp_path / "ints.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{5 if lab == 'pos' else 1}\n" for t, lab in rows))
    cfg = {
        "model": str(tiny_bert),
        "data": {"train": str(csv)},
        "epochs": 1,
        "lr": 1e-3,
        "runs_dir": str(tmp_path / "runs"),
        "name": "ints",
    }
    run = nbtrain.finetune(cfg, display="none")
    preds = run.predict(["superb great film", "awful dull plot"])
    assert all(type(p["label"]) is int for p in preds), preds
    assert {p["label"] for p in preds} <= {1, 5} and set(preds[0]["probs"]) == {1, 5}
    again = nbtrain.load_run("ints", runs_dir=cfg["runs_dir"]).predict("superb great film")
    assert type(again[0]["label"]) is int

    import pandas as pd

    df = pd.DataFrame({"text": [t for t, _ in rows], "label": [lab == "pos" for _, lab in rows]})
    flags = nbtrain.finetune({**cfg, "data": {"train": df}, "name": "bools"}, display="none")
    assert {type(p["label"]) for p in flags.predict(["superb great film", "dull"])} == {bool}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1], {0: 0, 1: 1}),
        ([5, 1], {0: 1, 1: 5}),  # mapped to class ids 0..1, reported as the user's 1 and 5
        ([True, False], {0: False, 1: True}),
        (["neg", "pos"], {0: "neg", 1: "pos"}),
    ],
)
def test_model_config_keeps_the_label_type_of_the_data(tiny_bert, values, expected):
    """The fast half of the check above: the model's ``id2label`` (what ``predict`` and the saved
    ``config.json`` report) holds the data's own label values, not their text."""
    import pandas as pd

    from nbtrain.config import Ref, load_config
    from nbtrain.engine.runner import prepare
    from nbtrain.events import EventBus

    df = pd.DataFrame({"text": [f"row {i} text" for i in range(20)], "label": values * 10})
    cfg = load_config(model=str(tiny_bert), data={"train": Ref("df", df), "eval_split": 0})
    kwargs = prepare(cfg, EventBus()).task.model_kwargs()
    assert kwargs["id2label"] == expected
    assert [type(v) for v in kwargs["id2label"].values()] == [type(v) for v in expected.values()]
    assert kwargs["label2id"] == {v: k for k, v in expected.items()}


# -- 3. resume promises are true, CLI included ------------------------------------------------


def _unnamed_yaml(tmp_path: Path, tiny_bert: Path, csv: Path, **extra) -> Path:
    path = tmp_path / "unnamed.yaml"
    cfg = {"model": str(tiny_bert), "data": {"train": str(csv)}, "lr": 1e-3, **extra}
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_cli_rerun_of_a_config_without_name_reuses_its_run(tmp_path, tiny_bert, sentiment_csv):
    config = _unnamed_yaml(tmp_path, tiny_bert, sentiment_csv["train"], epochs=1)
    first = _cli("run", str(config), "--quiet", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _cli("run", str(config), cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(list((tmp_path / "runs").iterdir())) == 1


@pytest.mark.slow
def test_cli_interrupt_of_an_unnamed_run_says_how_to_resume_and_that_works(
    tmp_path, tiny_bert, sentiment_csv
):
    config = _unnamed_yaml(
        tmp_path,
        tiny_bert,
        sentiment_csv["train"],
        epochs=400,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="no",
        batch_size=8,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nbtrain", "run", str(config)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 150
    runs = tmp_path / "runs"
    while time.time() < deadline and not list(runs.glob("*/checkpoint-*/nbtrain_complete.json")):
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    (run_dir,) = list(runs.iterdir())
    said = out + err
    # Said once, and it names the way that really resumes this run.
    assert said.count("progress saved in") == 1, said
    assert f"--name {run_dir.name}" in said, said
    assert "Run the same command again" not in said
    follow = subprocess.Popen(
        [sys.executable, "-m", "nbtrain", "run", str(config), "--name", run_dir.name],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The same config under that name resumes: its start line says from where.
    started = ""
    deadline = time.time() + 150
    while time.time() < deadline:
        line = follow.stderr.readline()
        if not line:
            break
        started += line
        if line.startswith("Training "):
            break
    follow.send_signal(signal.SIGINT)
    follow.communicate(timeout=120)
    assert "resumed from checkpoint-" in started, started


@pytest.mark.slow
def test_notebook_html_view_shows_a_data_error_once(bad_column_yaml, tmp_path):
    """In a real kernel the default view is HTML: the error is in the view, the cell's own error
    output is one line that points at it, and the cell still fails."""
    import nbformat

    from tests.docs_examples import execute

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext nbtrain"),
        nbformat.v4.new_code_cell("%%finetune bad\n" + bad_column_yaml.read_text()),
    ]
    execute(nb, tmp_path, timeout=300)
    outputs = nb.cells[1].outputs
    texts = [
        html.unescape(o.get("data", {}).get("text/html", ""))
        + o.get("text", "")
        + " ".join(o.get("traceback", []))
        for o in outputs
    ]
    # The live view redraws one display handle: its final state holds the message once.
    final_views = [o for o in outputs if o.output_type == "display_data"]
    assert final_views and MISSING in html.unescape(final_views[-1]["data"]["text/html"])
    (error,) = [o for o in outputs if o.output_type == "error"]
    assert (
        MISSING not in " ".join(error["traceback"]) and "see the message above" in error["evalue"]
    )
    assert sum(t.count(MISSING) for t in texts) == 1, texts
