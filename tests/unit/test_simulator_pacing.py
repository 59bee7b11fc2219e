"""Time compression, the simulated clock file, and the spreadsheet export the simulator writes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from connectors.sdk import event_id_for
from connectors.simulator import SimulatedEvent, YearModel
from connectors.simulator.channels import Channel, write_export
from connectors.simulator.profile import SPREADSHEET
from connectors.simulator.runner import ClockFile, Pace, play, year_seconds
from connectors.spreadsheet.importer import record_id_for
from connectors.spreadsheet.mapping import ColumnMapping, MappedRow
from connectors.spreadsheet.reader import read_table
from events.directory import Directory
from services.timesource import file_now

CST = timezone(timedelta(hours=8))
START = datetime(2022, 1, 1, tzinfo=CST)


def test_a_year_in_ten_minutes_runs_about_a_simulated_day_per_wall_second_and_a_half() -> None:
    pace = Pace.of(duration_min=10, year=2022)
    assert pace.speed == pytest.approx(365 * 86_400 / 600)
    assert pace.wall_seconds(timedelta(days=365)) == pytest.approx(600)
    assert pace.wall_seconds(timedelta(days=1)) == pytest.approx(600 / 365)


def test_a_leap_year_is_one_day_longer() -> None:
    assert year_seconds(2024) - year_seconds(2022) == 86_400
    assert Pace.of(duration_min=1, year=2024).wall_seconds(timedelta(days=366)) == pytest.approx(60)


def test_speed_is_simulated_seconds_per_wall_second() -> None:
    pace = Pace.of("3600")
    assert pace.speed == 3600
    assert pace.wall_seconds(timedelta(hours=2)) == pytest.approx(2)
    # About one publishing window per wall second.
    assert pace.window == timedelta(hours=1)


def test_max_speed_never_waits_and_publishes_in_two_week_windows() -> None:
    pace = Pace.of("max")
    assert pace.speed is None
    assert pace.wall_seconds(timedelta(days=200)) == 0
    assert pace.window == timedelta(days=14)


@pytest.mark.parametrize(("speed", "minutes"), [("0", None), ("-5", None), (None, 0.0)])
def test_a_speed_or_duration_that_is_not_positive_is_refused(
    speed: str | None, minutes: float | None
) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pace.of(speed, minutes)


def test_the_clock_file_holds_an_iso_time_with_offset_that_the_hubs_time_source_reads(tmp_path: Path) -> None:
    clock = ClockFile(tmp_path / "sim" / "now.txt")
    moment = datetime(2022, 3, 7, 9, 30, tzinfo=CST)
    clock.write(moment)
    assert clock.path.read_text() == "2022-03-07T09:30:00+08:00"
    assert file_now(clock.path)() == moment.astimezone(UTC)


class Recording:
    """A channel that keeps what it was given and the clock file's content at that moment."""

    def __init__(self, name: str, clock: Path) -> None:
        self.name = name
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.batches: list[tuple[datetime, list[SimulatedEvent]]] = []

    async def publish(self, events: Sequence[SimulatedEvent]) -> None:
        now = datetime.fromisoformat(self.clock.read_text())
        self.batches.append((now, list(events)))
        self.counts.update(e.unit for e in events)

    async def close(self) -> None:
        return None


def first_days(days: int) -> list[SimulatedEvent]:
    end = START + timedelta(days=days)
    out: list[SimulatedEvent] = []
    for event in YearModel(3).events():
        if event.publish_at >= end:
            break
        out.append(event)
    return out


def test_playing_paces_the_wall_clock_and_never_shows_a_time_ahead_of_what_was_published(
    tmp_path: Path,
) -> None:
    events = first_days(4)
    end = START + timedelta(days=4)
    clock = ClockFile(tmp_path / "now.txt")
    recording = {name: Recording(name, clock.path) for name in ("gateway", "sdk", "spreadsheet")}
    channels: dict[str, Channel] = dict(recording)
    # Four simulated days in 0.8 s of wall time, in windows of a fifth of a simulated day.
    pace = Pace(speed=4 * 86_400 / 0.8, window=timedelta(hours=4.8))
    began = time.monotonic()
    summary = asyncio.run(play(events, channels, pace, start=START, end=end, clock=clock))
    elapsed = time.monotonic() - began
    assert elapsed >= 0.75
    assert summary.events == len(events) > 100
    assert summary.windows == 20
    published = [e for c in recording.values() for _, batch in c.batches for e in batch]
    assert sorted(e.event_id for e in published) == sorted(e.event_id for e in events)
    for channel in recording.values():
        for shown, batch in channel.batches:
            # The hub may only see a moment once every event published before it was acknowledged.
            assert shown <= min(e.publish_at for e in batch)
    assert datetime.fromisoformat(clock.path.read_text()) == end


def test_the_spreadsheet_export_imports_back_to_exactly_the_models_filings(tmp_path: Path) -> None:
    directory = Directory.load()
    filings = [e for e in first_days(40) if e.channel == SPREADSHEET]
    assert filings
    path = tmp_path / "export.xlsx"
    write_export(path, filings, directory)
    mapping = ColumnMapping.load(directory)
    table = read_table(path)
    columns = mapping.resolve(table.headers)
    for event, row in zip(filings, table.rows, strict=True):
        mapped = mapping.map_row(row, columns, event.unit)
        assert isinstance(mapped, MappedRow), mapped
        assert mapped.subject == event.subject
        assert mapped.time == event.time
        assert mapped.data == dict(event.data)
        assert event_id_for(event.unit, record_id_for("case.filed.v1", mapped.subject)) == event.event_id
