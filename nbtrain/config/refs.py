"""References to notebook objects inside a config (``{df}`` in a cell)."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class Ref:
    """A value taken from the notebook namespace by name (``{name}`` in YAML).

    The name is what ``config.yaml`` records; the object itself never reaches disk.
    """

    name: str
    value: Any

    def __repr__(self) -> str:
        return "{" + self.name + "}"


def unwrap(value: Any) -> Any:
    """The object behind a :class:`Ref`, or the value itself."""
    return value.value if isinstance(value, Ref) else value


def describe(value: Any) -> str:
    """How an in-memory object is written in config.yaml and in messages."""
    if isinstance(value, Ref):
        return "{" + value.name + "}"
    cls = type(value)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and len(shape) == 2:
        return f"<{cls.__name__} {shape[0]}x{shape[1]}>"
    if isinstance(shape, dict):  # DatasetDict: {split: (rows, cols)}
        splits = ", ".join(f"{k} {v[0]}" for k, v in shape.items())
        return f"<{cls.__name__} {splits}>"
    n = getattr(value, "num_rows", None)
    if isinstance(n, int):
        return f"<{cls.__name__} {n} rows>"
    return f"<{cls.__module__.split('.')[0]}.{cls.__name__}>"


def fingerprint(value: Any) -> str | None:
    """A content hash for data objects, so a changed DataFrame is a changed config.

    Cheap enough to run on every cell execution: pandas hashes rows in C, ``datasets``
    objects carry their own fingerprint.
    """
    obj = unwrap(value)
    fp = getattr(obj, "_fingerprint", None)
    if isinstance(fp, str):
        return fp
    fps = getattr(obj, "values", None)
    if (
        hasattr(obj, "keys")
        and callable(getattr(obj, "keys", None))
        and hasattr(obj, "column_names")
    ):
        # DatasetDict: combine the splits' fingerprints.
        parts = [f"{k}:{getattr(obj[k], '_fingerprint', '')}" for k in sorted(obj.keys())]
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
    if fps is not None and hasattr(obj, "columns") and hasattr(obj, "index"):
        pd = sys.modules["pandas"]  # a DataFrame was passed in, so pandas is loaded
        h = pd.util.hash_pandas_object(obj, index=True).to_numpy()
        digest = hashlib.sha1(h.tobytes())
        digest.update("|".join(map(str, obj.columns)).encode())
        return digest.hexdigest()[:16]
    return None
