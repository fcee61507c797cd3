"""An image that shows in a notebook and saves to a file: what ``plot()`` methods return."""

from __future__ import annotations

from pathlib import Path


class PNGImage:
    """PNG bytes that display in a notebook (``_repr_png_``) and save to a file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.data)
        return path

    def __repr__(self) -> str:
        return f"<PNGImage {len(self.data):,} bytes>"
