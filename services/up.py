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
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from connectors.kafka.topics import ensure_topics
from events.catalog import Catalog, topic_for
from events.directory import Directory
from services.directory_sync import COMPACTED
from services.embedded_broker import EmbeddedBroker
from services.settings import Settings
from services.store import issue, migrate


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


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """`up --demo`: a simulated year played into the hub, its clocks following the simulated time."""

    minutes: float = 10.0
    seed: int = 2022
    year: int = 2022

    def clock_file(self, settings: Settings) -> Path:
        return settings.data_dir / "demo-clock.txt"

    def hub_env(self, settings: Settings) -> dict[str, str]:
        return {
            "LIANDONG_TIME_SOURCE": f"file:{self.clock_file(settings)}",
            # A wall second is about a simulated day: allow a day for the worker to project a receipt
            # before a passed threshold counts, and scan every wall second.
            "LIANDONG_ALERT_GRACE_S": "86400",
            "LIANDONG_CLOCK_SCAN_INTERVAL_MS": "1000",
        }

    def command(self, settings: Settings, api: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "services.cli",
            "simulate",
            "--seed",
            str(self.seed),
            "--year",
            str(self.year),
            "--duration-min",
            str(self.minutes),
            "--clock-file",
            str(self.clock_file(settings)),
            "--api",
            api,
            "--keys-file",
            str(settings.data_dir / "demo-keys.json"),
            "--summary",
            str(settings.data_dir / "demo-summary.json"),
            "--hub-metrics",
            f"http://127.0.0.1:{settings.worker_web_port}/metrics",
        ]


def _start_clock(demo: DemoOptions, settings: Settings) -> None:
    from connectors.simulator.runner import ClockFile
    from connectors.simulator.timing import year_bounds

    ClockFile(demo.clock_file(settings)).write(year_bounds(demo.year)[0])


async def _demo_supervisor_key(settings: Settings) -> str:
    """A fresh key of the district supervision section, for the demo's one-click dashboard sign-in.

    The key travels in the address's fragment, which the browser never sends to a server; the page
    trades it for a session cookie and drops it from the address at once.
    """
    directory = Directory.load()
    supervisor = next(u.id for u in directory.units.values() if u.kind == "supervision")
    return await issue(settings, supervisor)


def run_up(settings: Settings, demo: DemoOptions | None = None) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    sims: list[subprocess.Popen[bytes]] = []
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
        if demo is not None:
            _start_clock(demo, settings)
            env.update(demo.hub_env(settings))
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
            f"接口已就绪：{api}（接口说明 {api}/openapi.json），pid {children[1].pid}",
            f"API ready at {api} (OpenAPI schema at {api}/openapi.json), pid {children[1].pid}",
        )
        # Until the worker has joined its consumer group, events are accepted but not yet projected:
        # the prompt below promises a hub that answers a read right after a write.
        worker = f"http://{settings.worker_web_host}:{settings.worker_web_port}"
        if not _wait_ready(f"{worker}/readyz", children, 120):
            _say("流处理进程未就绪", "the worker did not become ready; stopping")
            return 1
        _say("流处理进程已就绪（已加入消费组）", "worker ready (joined its consumer group)")
        _say(
            f"监督看板：{api}/dashboard/（以 liandong keys issue 单位编号 签发的密钥登录）",
            f"dashboard at {api}/dashboard/ (sign in with a key from `liandong keys issue UNIT`)",
        )
        if demo is not None:
            login = f"{api}/dashboard/#login={asyncio.run(_demo_supervisor_key(settings))}"
            _say(
                f"演示：以区司法局督办科身份一键登录看板 {login}",
                f"demo: open {login} to sign in as the supervisor",
            )
        simulator: subprocess.Popen[bytes] | None = None
        if demo is not None:
            simulator = subprocess.Popen(demo.command(settings, api), env=env, start_new_session=True)
            sims.append(simulator)
            _say(
                f"演示：模拟 {demo.year} 年番禺执法数据，约 {demo.minutes:g} 分钟，pid {simulator.pid}；"
                f"模拟时钟 {demo.clock_file(settings)}",
                f"demo: simulating {demo.year} in about {demo.minutes:g} min, pid {simulator.pid}; the "
                f"hub's clocks follow {demo.clock_file(settings)}. Watch "
                f"{api}/v1/stats/calibration?year={demo.year}, {api}/v1/clocks and "
                f"{api}/v1/matters?open=true",
            )
        _say("按 Ctrl-C 停止", "press Ctrl-C to stop")
        while not stop.wait(0.5):
            if simulator is not None and simulator.poll() is not None:
                if simulator.returncode == 0:
                    _say(
                        "演示：模拟年度已完成，平台继续运行",
                        "demo: the simulated year is complete; the hub keeps running",
                    )
                else:
                    _say(
                        f"演示：模拟器退出，代码 {simulator.returncode}",
                        f"demo: the simulator exited with {simulator.returncode}",
                    )
                simulator = None
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
        _stop_children(sims + children)
        if broker is not None:
            broker.stop()
        _say("已停止", "stopped")
