"""`liandong connectors list` and `status`, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "connectors", *args],
        env={**os.environ, "LIANDONG_DATA_DIR": str(tmp_path / "data"), "LIANDONG_DATABASE_URL": "", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_connectors_list_names_every_connector_and_what_is_configured(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.json"
    hooks.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "jb-mail",
                        "unit": "district.justice-bureau",
                        "email": "duban@example.gov.cn",
                        "smtp_host": "127.0.0.1",
                        "smtp_port": 2525,
                    }
                ]
            }
        )
    )
    listed = run(tmp_path, "list", LIANDONG_WEBHOOKS_FILE=str(hooks))
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[1] for line in listed.stdout.splitlines()]
    assert names == [
        "http-gateway",
        "kafka-sdk",
        "spreadsheet-import",
        "outbox-relay",
        "webhook",
        "email",
        "publication-feed",
    ]
    email_line = next(line for line in listed.stdout.splitlines() if " email " in line)
    assert email_line.startswith("✓")
    assert "jb-mail" in email_line
    webhook_line = next(line for line in listed.stdout.splitlines() if " webhook " in line)
    assert webhook_line.startswith("·")
    outbox_line = next(line for line in listed.stdout.splitlines() if " outbox-relay " in line)
    assert outbox_line.startswith("·")
    assert "LIANDONG_OUTBOX_DSN not set" in outbox_line


def test_connectors_status_succeeds_on_a_fresh_store(tmp_path: Path) -> None:
    status = run(tmp_path, "status")
    assert status.returncode == 0, status.stderr
    assert "http-gateway" in status.stdout


def test_a_webhook_file_naming_an_unset_secret_is_a_clear_configuration_error(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.json"
    hooks.write_text(
        json.dumps(
            {
                "targets": [
                    {
                        "name": "oa",
                        "unit": "district.justice-bureau",
                        "url": "https://oa.example/hook",
                        "secret_env": "NOPE_X",
                    }
                ]
            }
        )
    )
    failed = run(tmp_path, "list", LIANDONG_WEBHOOKS_FILE=str(hooks))
    assert failed.returncode == 2
    assert "NOPE_X is not set" in failed.stderr
