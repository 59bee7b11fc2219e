"""`liandong worker` with the event catalog of another release: `python -m tests.release_worker DIR`.

A rolling upgrade deploys the gateway (or a publishing agency's connector) before the workers, and
for a while records written with a new schema revision reach a worker that does not know it. This
runs the real worker, unchanged, with the schemas in DIR instead of events/schemas, to play that
older worker in tests/integration/test_faults.py.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from events.catalog import SCHEMA_ROOT, Catalog


def previous_release(into: Path) -> Path:
    """The catalog of the release before case.filed.v1 revision 2 (the parties' fields), in `into`."""
    root = into / "schemas-previous-release"
    shutil.copytree(SCHEMA_ROOT, root)
    (root / "case.filed.v1" / "2.avsc").unlink()
    return root


def use_schemas(root: Path) -> None:
    """Make `Catalog.load()` read `root` in this process (every caller uses the default root)."""
    load = Catalog.load.__func__  # type: ignore[attr-defined]

    def older(cls: type[Catalog], path: Path = root) -> Catalog:
        loaded: Catalog = load(cls, path)
        return loaded

    Catalog.load = classmethod(older)  # type: ignore[assignment, method-assign]


def main(argv: list[str]) -> int:
    use_schemas(Path(argv[0]))
    from services.cli import main as liandong

    return liandong(["worker"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
