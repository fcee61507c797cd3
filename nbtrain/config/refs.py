"""References to notebook objects inside a config (``{df}`` in a cell)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbtrain.errors import ConfigError, did_you_mean

_REF = re.compile(r"^\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}$")


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


def resolve_refs(value: Any, namespace: Mapping[str, Any], where: str = "") -> Any:
    """Replace every ``{name}`` value with the notebook object it names.

    YAML reads a bare ``{df}`` as the mapping ``{"df": None}``; a quoted ``"{df}"`` stays text.
    Both mean the variable ``df``. Plain values (text, numbers, paths, lists of them) are put in
    as they are, so ``config.yaml`` records them; other objects become :class:`~nbtrain.config.Ref`
    so the config records ``{df}`` and the object never reaches disk.
    """
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if inner is None and isinstance(key, str) and key.isidentifier():
                return _lookup(key, namespace, where)
        return {
            k: resolve_refs(v, namespace, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_refs(v, namespace, where) for v in value]
    if isinstance(value, str):
        m = _REF.match(value.strip())
        if m:
            return _lookup(m.group(1), namespace, where)
    return value


def _lookup(name: str, namespace: Mapping[str, Any], where: str) -> Any:
    if name not in namespace:
        names = user_names(namespace)
        hint = did_you_mean(name, names)
        if not hint and names:
            shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            hint = f" Variables in the notebook: {shown}."
        raise ConfigError(
            f"{where or 'config'}: {{{name}}} refers to a notebook variable, but there is no "
            f"variable named {name!r}.{hint} Define it in a cell above, or write a file path "
            "or hub name instead.",
            field=where or None,
        )
    obj = namespace[name]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if _plain(obj):
        return list(obj) if isinstance(obj, tuple) else obj
    return Ref(name, obj)


def _plain(obj: Any) -> bool:
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return True
    return isinstance(obj, (list, tuple)) and all(
        v is None or isinstance(v, (str, int, float, bool)) for v in obj
    )


def user_names(namespace: Mapping[str, Any]) -> list[str]:
    """The notebook's own variables: no ``_private`` names, no modules, no IPython internals."""
    import types

    return sorted(
        k
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in ("In", "Out", "exit", "quit", "get_ipython")
        and not isinstance(v, types.ModuleType)
    )
