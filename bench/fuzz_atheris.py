"""Coverage-guided fuzzing (atheris, libFuzzer) of the Avro decoder and the gateway's parser.

    .venv/bin/python -m bench.fuzz_atheris --runs 200000              # both targets
    .venv/bin/python -m bench.fuzz_atheris --runs 50000 --target decoder
    .venv/bin/python -m bench.fuzz_atheris --max-total-time 600       # ten minutes

The property is the same as the hypothesis tests in tests/fuzz/: `EventCodec.decode` raises
`DecodeError` and nothing else, and `parse_request` raises `IngestRejected` and nothing else. Any
other exception is a finding: libFuzzer stops, prints the input, writes it as `crash-*` into
`--artifacts` (re-run it with `--reproduce FILE`) and the command exits non-zero.

Our modules (`events.*`, `connectors.http_gateway.*`) are instrumented for coverage; fastavro is
compiled, so its branches are not seen, only its behaviour. The corpus starts from a valid record
and a valid request body of every catalog type, so mutations begin at the interesting end.
The first input byte picks the target and, for the decoder, the event type and the header shape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

try:
    import atheris  # type: ignore[import-untyped]
except ImportError:  # the smoke test skips with this message; the command says it too
    atheris = None

INSTALL_HINT = "atheris is not installed: pip install atheris (x86_64 Linux, Python < 3.13)"
UNIT = "shilou.enforcement-office"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class Targets:
    """The two fuzz targets, with everything they need built once, before fuzzing starts."""

    def __init__(self) -> None:
        from connectors.http_gateway.ingest import IngestRejected, Limits, parse_request
        from events.catalog import Catalog
        from events.directory import Directory
        from events.registry import LocalSchemaRegistry
        from events.serde import DecodeError, EventCodec

        self.catalog = Catalog.load()
        self.directory = Directory.load()
        self.codec = EventCodec(self.catalog, LocalSchemaRegistry())
        asyncio.run(self.codec.prepare())
        self.types = sorted(self.catalog.kinds)
        self.limits = Limits()
        self.now = datetime(2026, 11, 29, 12, tzinfo=UTC)
        self._decode_error = DecodeError
        self._rejected = IngestRejected
        self._parse = parse_request
        self.schema_ids = {t: self._schema_id(t) for t in self.types}

    def _schema_id(self, event_type: str) -> bytes:
        return self.valid_record(event_type)[0][1:5]

    def valid_record(self, event_type: str) -> tuple[bytes, list[tuple[str, bytes]]]:
        from events.envelope import Envelope
        from events.jsonavro import from_json
        from events.samples import sample_data

        kind = self.catalog.get(event_type)
        data = from_json(kind.latest, sample_data(kind.latest), "data", self.directory.knows)
        event = Envelope("0190f5b2-7c3e-7d1a-9b2f-3c4d5e6f7a8b", event_type, UNIT, "FZ-1", self.now, data)
        record = self.codec.encode(event)
        return record.value, record.headers

    def valid_body(self, event_type: str) -> bytes:
        from events.samples import sample_data

        kind = self.catalog.get(event_type)
        doc = {
            "specversion": "1.0",
            "id": "0190f5b2-7c3e-7d1a-9b2f-3c4d5e6f7a8b",
            "source": UNIT,
            "type": event_type,
            "subject": "FZ-1",
            "time": "2026-11-29T10:00:00+08:00",
            "data": sample_data(kind.latest),
        }
        return json.dumps(doc, ensure_ascii=False).encode()

    def decoder(self, data: bytes) -> None:
        """Byte 0: type and header shape. The rest: the value (with a valid 5-byte header prefixed,
        when the shape says so), or, for the last shape, a header value too."""
        if not data:
            return
        choice, rest = data[0], data[1:]
        event_type = self.types[choice % len(self.types)]
        headers: list[tuple[str, bytes]] = [
            ("ce_id", b"0190f5b2-7c3e-7d1a-9b2f-3c4d5e6f7a8b"),
            ("ce_source", UNIT.encode()),
            ("ce_type", event_type.encode()),
            ("ce_subject", b"FZ-1"),
            ("ce_time", b"2026-11-29T02:00:00+00:00"),
        ]
        shape = choice // len(self.types) % 3
        if shape == 0:
            value = b"\x00" + self.schema_ids[event_type] + rest
        elif shape == 1:
            value = rest
        else:
            cut = rest.find(b"|")
            header_value, value = (rest[:cut], rest[cut + 1 :]) if cut >= 0 else (rest, b"")
            headers[choice % len(headers)] = (headers[choice % len(headers)][0], header_value)
            value = b"\x00" + self.schema_ids[event_type] + value
        with contextlib.suppress(self._decode_error):
            self.codec.decode(value, headers)

    def gateway(self, data: bytes) -> None:
        """Byte 0: structured or batch mode. The rest: the request body."""
        if not data:
            return
        content_type = BATCH if data[0] & 1 else STRUCTURED
        with contextlib.suppress(self._rejected):
            self._parse(content_type, data[1:], UNIT, self.catalog, self.directory, self.limits, now=self.now)

    def seeds(self, target: str) -> list[bytes]:
        """A valid input of every type for the target; for `both`, with its selector byte last."""
        out: list[bytes] = []
        for i, event_type in enumerate(self.types):
            if target in ("decoder", "both"):
                value, _ = self.valid_record(event_type)
                out.append(bytes([i]) + value[5:] + (b"\x00" if target == "both" else b""))
            if target in ("gateway", "both"):
                body = self.valid_body(event_type)
                suffix = b"\x01" if target == "both" else b""
                out.append(b"\x00" + body + suffix)
                out.append(b"\x01[" + body + b"]" + suffix)
        return out


def one_input(targets: Targets, target: str) -> Callable[[bytes], None]:
    if target == "decoder":
        return targets.decoder
    if target == "gateway":
        return targets.gateway

    def both(data: bytes) -> None:
        # The last byte splits the work, so that a mutation of the first byte keeps its meaning.
        if data and data[-1] & 1:
            targets.gateway(data[:-1])
        else:
            targets.decoder(data[:-1])

    return both


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100_000, help="inputs to try (libFuzzer -runs)")
    parser.add_argument("--max-total-time", type=int, default=0, help="seconds; 0 = no limit")
    parser.add_argument("--target", choices=["decoder", "gateway", "both"], default="both")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer -seed, for a repeatable run")
    parser.add_argument("--artifacts", type=Path, default=Path("test-artifacts/fuzz"))
    parser.add_argument("--reproduce", type=Path, help="run one saved input (crash-*) and exit")
    args = parser.parse_args(argv)
    if atheris is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["events", "connectors"]):
        # Imported here to be instrumented; the targets use them.
        import connectors.http_gateway.ingest  # noqa: F401
        import events.jsonavro
        import events.serde  # noqa: F401
    targets = Targets()
    fuzz: Callable[[bytes], None] = one_input(targets, args.target)
    if args.reproduce is not None:
        fuzz(args.reproduce.read_bytes())
        print(f"{args.reproduce}: no finding", file=sys.stderr)
        return 0
    args.artifacts.mkdir(parents=True, exist_ok=True)
    corpus = Path(tempfile.mkdtemp(prefix="liandong-fuzz-corpus-"))
    for i, seed in enumerate(targets.seeds(args.target)):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    libfuzzer = [
        sys.argv[0],
        f"-runs={args.runs}",
        f"-seed={args.seed}",
        f"-artifact_prefix={args.artifacts}/",
        "-max_len=8192",
        "-print_final_stats=1",
        str(corpus),
    ]
    if args.max_total_time:
        libfuzzer.append(f"-max_total_time={args.max_total_time}")
    print(f"fuzzing {args.target}: {' '.join(libfuzzer[1:])}", file=sys.stderr)
    atheris.Setup(libfuzzer, fuzz)
    atheris.Fuzz()  # libFuzzer exits the process: 0 when the runs are done, non-zero on a finding
    return 0


if __name__ == "__main__":
    sys.exit(main())
