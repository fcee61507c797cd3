"""The tutorial's ``hp_space(trial)`` function read as a sweep's ``params:`` search space.

``Trainer.hyperparameter_search(hp_space=optuna_hp_space)`` takes a function that asks an Optuna
trial for each value. A sweep's ``params:`` holds the same search space as data
(``{learning_rate: {low: 1e-6, high: 1e-4, log: true}, batch_size: [16, 32]}``), which the
sweep stores with its study and shows in its panel. :func:`hp_space_params` calls the function
once with a recording trial (no Optuna needed) and returns that data. Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from nbtrain.errors import ConfigError


class _Suggested:
    """What a recording trial hands back: it stands for 'the value this trial would pick'."""

    def __init__(self, name: str, spec: Any) -> None:
        self.name, self.spec = name, spec

    def __repr__(self) -> str:
        return f"<suggestion {self.name}>"


class _RecordingTrial:
    """Takes ``suggest_*`` calls like ``optuna.trial.Trial`` and records the search space."""

    def __init__(self) -> None:
        self.calls: dict[str, Any] = {}

    def _record(self, name: str, spec: Any) -> _Suggested:
        self.calls[name] = spec
        return _Suggested(name, spec)

    def suggest_float(
        self,
        name: str,
        low: float,
        high: float,
        *,
        step: float | None = None,
        log: bool = False,
    ) -> _Suggested:
        if step is not None:
            raise ConfigError(
                f"sweep.hp_space: suggest_float({name!r}, ..., step={step}) has a step; write "
                "the values as a list of choices (suggest_categorical) instead.",
                field="sweep.hp_space",
            )
        spec: dict[str, Any] = {"low": float(low), "high": float(high)}
        if log:
            spec["log"] = True
        return self._record(name, spec)

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> _Suggested:
        if step != 1:
            return self._record(name, list(range(int(low), int(high) + 1, int(step))))
        spec: dict[str, Any] = {"low": int(low), "high": int(high)}
        if log:
            spec["log"] = True
        return self._record(name, spec)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> _Suggested:
        return self._record(name, list(choices))

    # Optuna 2's names, still in many tutorials.
    def suggest_uniform(self, name: str, low: float, high: float) -> _Suggested:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> _Suggested:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> _Suggested:
        n = round((high - low) / q)
        return self._record(name, [low + i * q for i in range(n + 1)])

    def __getattr__(self, attr: str) -> Any:
        raise ConfigError(
            f"sweep.hp_space: the function uses trial.{attr}, which a fixed search space "
            "cannot answer (only suggest_float, suggest_int and suggest_categorical). Write "
            "the search space as sweep.params instead.",
            field="sweep.hp_space",
        )


def hp_space_params(fn: Callable[[Any], Any]) -> dict[str, Any]:
    """``{config key: {low, high[, log]} | [choices]}`` from a tutorial ``hp_space(trial)``.

    The keys are those of the dict the function returns (TrainingArguments names, which the
    sweep maps onto config keys); a value returned as a constant becomes a single choice.

    Raises:
        ConfigError: not a function, a value computed from a suggestion (``2 ** trial.
            suggest_int(...)``), a space that depends on earlier answers, a float step.
    """
    if not callable(fn):
        raise ConfigError(
            f"sweep.hp_space: expected a function hp_space(trial) -> dict; got {type(fn).__name__}.",
            field="sweep.hp_space",
        )
    trial = _RecordingTrial()
    try:
        out = fn(trial)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"sweep.hp_space: calling it with a trial failed ({type(e).__name__}: {e}). A "
            "search space whose values depend on one another or are computed from a "
            "suggestion cannot be read as sweep.params; return trial.suggest_* results "
            "directly, or write sweep.params.",
            field="sweep.hp_space",
        ) from None
    if not isinstance(out, dict) or not out:
        raise ConfigError(
            "sweep.hp_space: the function must return a dict of TrainingArguments names to "
            f"trial.suggest_* values, e.g. {{'learning_rate': trial.suggest_float(...)}}; it "
            f"returned {out!r}.",
            field="sweep.hp_space",
        )
    params: dict[str, Any] = {}
    for key, value in out.items():
        if isinstance(value, _Suggested):
            params[str(key)] = value.spec
        elif value is None or isinstance(value, (str, int, float, bool)):
            params[str(key)] = [value]
        else:
            raise ConfigError(
                f"sweep.hp_space: the value for {key!r} ({value!r}) is not a trial.suggest_* "
                "result; return the suggestion itself.",
                field="sweep.hp_space",
            )
    return params
