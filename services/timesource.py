"""Where "now" comes from. Production reads the system clock; tests point the hub at a file that
holds an ISO timestamp, so clocks can be driven past their deadlines without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

Now = Callable[[], datetime]


def system_now() -> datetime:
    return datetime.now(UTC)


def file_now(path: Path) -> Now:
    def now() -> datetime:
        text = path.read_text(encoding="utf-8").strip()
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"{path}: the time must carry an offset")
        return moment.astimezone(UTC)

    return now


def time_source(spec: str) -> Now:
    return file_now(Path(spec.removeprefix("file:"))) if spec.startswith("file:") else system_now
