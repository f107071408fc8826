"""Atomic file writes: a reader (or a resumed study after ``kill -9``) never sees half a file; and how a
number is read from a record (a JSON or CSV value that may be missing): `number`, `present`,
`is_finite`, the one lenient reading every module uses."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside `path`, then rename it into place.

    The temporary name keeps `path`'s suffixes (Keras insists on ``.weights.h5``).

    The rename is atomic on POSIX, so `path` holds either its old or its complete new content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _jsonable(value: Any) -> Any:
    """numpy scalars -> Python; NaN/inf -> None (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any, first: tuple[str, ...] = ()) -> Path:
    """`obj` as indented JSON, keys sorted at every depth (NaN/inf as null), except that the top-level
    keys named in `first` come first, in that order (e.g. the table a reader should see first)."""
    obj = _sorted(_jsonable(obj))
    if first and isinstance(obj, dict):
        obj = {**{k: obj[k] for k in first if k in obj}, **{k: v for k, v in obj.items() if k not in first}}
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_json_dict(path: str | Path) -> dict:
    """The JSON object at `path`, or {} when it is missing, unreadable or not an object."""
    try:
        value = read_json(path)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def update_json(path: str | Path, **values: Any) -> dict:
    """Merge `values` into the JSON object at `path` (created if absent), atomically."""
    path = Path(path)
    data = read_json(path) if path.exists() else {}
    data.update(values)
    write_json(path, data)
    return data


# ---------------------------------------------------------------------- numbers in records
def number(value: Any) -> float:
    """`value` as a float; NaN when it is missing (None) or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def present(value: Any) -> bool:
    """A value a record treats as given: not None and not NaN."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def is_finite(value: Any) -> bool:
    """True for a value that reads as a finite number (`number`)."""
    return math.isfinite(number(value))
