"""`liandong up`: the whole hub on one machine, as a supervisor of child processes.

Order matters: the broker starts first and stops last, so that the worker and the API can
finish their in-flight batches and requests against it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from types import FrameType

from connectors.kafka.topics import ensure_topics
from events.catalog import Catalog, topic_for
from services.directory_sync import COMPACTED
from services.embedded_broker import EmbeddedBroker
from services.settings import Settings
from services.store import migrate


def _say(zh: str, en: str) -> None:
    print(f"[liandong] {zh} | {en}", flush=True)


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)  # polling a child that is still starting
    return False


def _stop_children(children: list[subprocess.Popen[bytes]], timeout_s: float = 20.0) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_up(settings: Settings) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if settings.kafka_bootstrap is None:
            broker = EmbeddedBroker(settings.broker_port, settings.data_dir / "broker.log")
            bootstrap = broker.start()
            _say(
                f"内嵌消息中间件 Tansu 已启动：{bootstrap}"
                "（仅内存存储：停止后事件即丢失，数据库中的投影保留）",
                f"embedded broker (Tansu) at {bootstrap}, pid {broker.pid}. MEMORY ONLY: events are "
                "lost when the hub stops; projections in the database are kept",
            )
        else:
            bootstrap = settings.kafka_bootstrap
            _say(f"使用外部 Kafka：{bootstrap}", f"using external Kafka at {bootstrap}")
        store_id = asyncio.run(migrate(settings))
        _say(
            f"数据库已就绪：{settings.redacted_database_url()}",
            f"store ready at {settings.redacted_database_url()} (instance {store_id})",
        )
        topics = {topic_for(f): settings.topic_partitions for f in Catalog.load().families}
        asyncio.run(ensure_topics(bootstrap, topics, settings.topic_replication, COMPACTED))

        env = {
            **os.environ,
            "LIANDONG_KAFKA_BOOTSTRAP": bootstrap,
            "LIANDONG_DATA_DIR": str(settings.data_dir),
        }
        env["LIANDONG_DATABASE_URL"] = settings.database_url
        for role in ("worker", "api"):
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "services.cli", role], env=env, start_new_session=True
                )
            )
        _say(
            f"流处理进程已启动，pid {children[0].pid}，指标 http://127.0.0.1:{settings.worker_web_port}/metrics",
            f"worker pid {children[0].pid}, metrics at http://127.0.0.1:{settings.worker_web_port}/metrics",
        )
        api = f"http://{settings.api_host}:{settings.api_port}"
        if not _wait_ready(f"{api}/readyz", children, 60):
            _say("启动失败", "a process failed to start; stopping")
            return 1
        _say(
            f"接口已就绪：{api}（文档 {api}/docs），pid {children[1].pid}",
            f"API ready at {api} (OpenAPI docs at {api}/docs), pid {children[1].pid}",
        )
        _say("按 Ctrl-C 停止", "press Ctrl-C to stop")
        while not stop.wait(0.5):
            if broker is not None and not broker.alive():
                _say("消息中间件意外退出", "the embedded broker exited unexpectedly; stopping")
                return 1
            for child in children:
                if child.poll() is not None:
                    _say(
                        f"子进程 {child.pid} 意外退出",
                        f"child {child.pid} exited with {child.returncode}; stopping",
                    )
                    return 1
        _say("正在停止", "stopping")
        return 0
    finally:
        _stop_children(children)
        if broker is not None:
            broker.stop()
        _say("已停止", "stopped")
