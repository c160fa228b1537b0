"""Records to stdout: JSON (one object or JSON lines), CSV; tables go to stderr for people.

    emit_json({"accuracy": 0.99})          # one object
    emit_jsonl([{"id": 1}, {"id": 2}])     # one object per line
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _default(obj: Any) -> Any:
    # numpy scalars and Paths reach the output layer often enough to handle them once here.
    # tolist first: numpy arrays have ``item`` too, but it only works for one element.
    if hasattr(obj, "tolist"):
        return finite(obj.tolist())
    if hasattr(obj, "item"):
        return finite(obj.item())
    return str(obj)


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None`` (lists, tuples and dicts walked).

    ``json.dumps`` would write them as the bare words NaN/Infinity, which is not JSON: strict
    parsers (jq, JavaScript) reject the whole line. Example: ``finite({"loss": float("nan")})`` ->
    ``{"loss": None}``.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj: Any, ascii_only: bool = False) -> str:
    """``obj`` as one line of strict JSON: ``dumps({"d": float("nan")})`` -> ``'{"d": null}'``.

    ``ascii_only`` writes non-ASCII characters as ``\\uXXXX`` escapes (the same JSON, any encoding).
    """
    # allow_nan=False: a non-finite float that slipped past ``finite`` is a bug, not output.
    return json.dumps(finite(obj), default=_default, ensure_ascii=ascii_only, allow_nan=False)


def stdout_is_utf8() -> bool:
    """Whether stdout encodes every character (``False`` in a Latin-1 locale or with
    ``PYTHONIOENCODING=ascii``): JSON is then escaped, so a name like "Zoë Ñúñez" never stops the output
    half-way with UnicodeEncodeError (and the CLI makes other text backslash-escape)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    return encoding in ("utf8", "utf8sig")


def csv_cell(value: Any) -> Any:
    """One CSV cell: nested values as JSON, NaN/infinity and ``None`` as an empty cell.

    Example: ``csv_cell([1, 2])`` -> ``'[1, 2]'``; ``csv_cell(float("nan"))`` -> ``''``.
    """
    if isinstance(value, (list, dict, tuple)):
        return dumps(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        value = value.item()
    value = finite(value)
    return "" if value is None else value


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (non-finite floats as ``null``)."""
    sys.stdout.write(dumps(obj, not stdout_is_utf8()) + "\n")


def emit_jsonl(records: Iterable[Mapping[str, Any]]) -> None:
    """Print one JSON object per line on stdout (non-finite floats as ``null``)."""
    ascii_only = not stdout_is_utf8()
    for record in records:
        sys.stdout.write(dumps(record, ascii_only) + "\n")


def emit_csv(records: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """Print CSV with a header row on stdout (cells as ``csv_cell`` writes them)."""
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({k: csv_cell(v) for k, v in record.items()})


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number, for summaries on stderr.

        counted(1, "person", "people")   # '1 person'
        counted(3, "cluster")            # '3 clusters'
    """
    return f"{n} {one if n == 1 else (many or one + 's')}"
