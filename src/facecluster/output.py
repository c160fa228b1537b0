"""Records to stdout: JSON (one object or JSON lines), CSV; tables go to stderr for people.

    emit_json({"accuracy": 0.99})          # one object
    emit_jsonl([{"id": 1}, {"id": 2}])     # one object per line
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _default(obj: Any) -> Any:
    # numpy scalars and Paths reach the output layer often enough to handle them once here.
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=_default, ensure_ascii=False) + "\n")


def emit_jsonl(records: Iterable[Mapping[str, Any]]) -> None:
    """Print one JSON object per line on stdout."""
    for record in records:
        sys.stdout.write(json.dumps(record, default=_default, ensure_ascii=False) + "\n")


def emit_csv(records: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> None:
    """Print CSV with a header row on stdout; nested values are JSON-encoded."""
    writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow(
            {k: json.dumps(v, default=_default) if isinstance(v, (list, dict, tuple)) else v for k, v in record.items()}
        )


def counted(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number, for summaries on stderr.

        counted(1, "person", "people")   # '1 person'
        counted(3, "cluster")            # '3 clusters'
    """
    return f"{n} {one if n == 1 else (many or one + 's')}"
