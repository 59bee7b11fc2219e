"""A few thousand coverage-guided runs of `bench.fuzz_atheris` (the decoder and the gateway's parser),
in a subprocess because libFuzzer ends the process it runs in. The long runs, and what they found,
are in docs/hostile-input.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

try:
    import atheris  # type: ignore[import-untyped]  # noqa: F401
except ImportError:
    pytest.skip(
        "atheris is not importable: pip install atheris (x86_64 Linux, Python < 3.13)",
        allow_module_level=True,
    )

RUNS = 3000


@pytest.mark.parametrize("target", ["decoder", "gateway"])
def test_a_few_thousand_coverage_guided_inputs_find_nothing(target: str, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fuzz_atheris",
            "--runs",
            str(RUNS),
            "--target",
            target,
            "--artifacts",
            str(artifacts),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = done.stderr + done.stdout
    assert done.returncode == 0, output[-4000:]
    assert f"Done {RUNS} runs" in output, output[-2000:]
    assert f"number_of_executed_units: {RUNS}" in output
    assert not list(artifacts.glob("crash-*")), "a crash input was written"
    # The corpus of valid inputs was loaded, so the runs started from the interesting end.
    assert "files found in" in output
