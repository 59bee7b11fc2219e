"""Worker processes for integration tests: started for real, never outliving the test."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from services.embedded_broker import free_port
from services.worker.app import EXIT_FAULT_INJECTED
from tests.support import liandong


class Workers:
    """Starts worker processes and makes sure none outlives the test."""

    def __init__(self, tmp_path: Path, pg_url: str) -> None:
        self.tmp_path = tmp_path
        self.pg_url = pg_url
        self.started: list[subprocess.Popen[bytes]] = []
        self.stopped: set[int] = set()

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        self.stopped.add(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, "a worker must stop cleanly on SIGTERM"

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed."""
        self.stopped.add(process.pid)
        process.kill()
        process.wait(30)

    def assert_running(self) -> None:
        for process in self.started:
            code = process.poll()
            if code is not None and code != EXIT_FAULT_INJECTED and process.pid not in self.stopped:
                log = (self.tmp_path / f"worker-{self.started.index(process)}.log").read_text()[-3000:]
                raise AssertionError(f"worker exited with {code}:\n{log}")

    def start(self, bootstrap: str, **extra: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        log = (self.tmp_path / f"worker-{len(self.started)}.log").open("wb")
        env = {
            "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
            "LIANDONG_DATABASE_URL": self.pg_url,
            "LIANDONG_DATA_DIR": str(self.tmp_path / "data"),
            "LIANDONG_WORKER_WEB_PORT": str(port),
            "LIANDONG_TOPIC_PARTITIONS": "3",
            **extra,
        }
        process = liandong("worker", env=env, stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process, port

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
