"""deploy/ checked as CI checks it (issue 9): promtool on the Prometheus config, rules and rule tests,
`docker compose config` on the compose stack, Kubernetes' schemas and Strimzi's structure on the
manifests (deploy/k8s/check.py), the Grafana provisioning and dashboards (every PromQL expression
through promtool), and a runbook for every alert.

promtool comes from Debian's prometheus package and Docker Compose v2 from tests/tools.sh; both are
installed by `bash tests/run.sh`. A missing tool fails the test with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.rules.yml"))
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
RULE_TESTS = PROMETHEUS / "tests" / "liandong.rules.test.yml"
COMPOSE = DEPLOY / "compose"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
RUNBOOKS = ROOT / "docs" / "runbooks"
DOCKER_CONFIG = ROOT / ".tools" / "docker"

INSTALL_PROMTOOL = "apt-get install --no-install-recommends prometheus (or run bash tests/run.sh as root)"
INSTALL_AMTOOL = (
    "apt-get install --no-install-recommends prometheus-alertmanager (or run bash tests/run.sh as root)"
)
INSTALL_COMPOSE = "bash tests/tools.sh (puts Docker Compose v2 in .tools/docker/cli-plugins)"
# The list: lag, dead letters, overdue surge, delivery failures, broker and database down.
REQUIRED_ALERTS = {
    "LiandongProjectionLagHigh",
    "LiandongConsumerLagHigh",
    "LiandongDeadLetters",
    "LiandongOverdueSurge",
    "LiandongDeliveryFailures",
    "LiandongBrokerDown",
    "LiandongDatabaseDown",
}
COMPOSE_SERVICES = {
    "kafka",
    "schema-registry",
    "postgres",
    "migrate",
    "api",
    "worker-1",
    "worker-2",
    "prometheus",
    "alertmanager",
    "grafana",
}
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _run(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(f"promtool is not installed: {INSTALL_PROMTOOL}")
    return path


@pytest.fixture(scope="module")
def compose_env() -> dict[str, str]:
    """A clean environment for `docker compose`: none of the stack's secrets can leak in from ours."""
    if shutil.which("docker") is None:
        pytest.fail("the docker client is not installed: apt-get install docker.io (no engine is needed)")
    plugin = DOCKER_CONFIG / "cli-plugins" / "docker-compose"
    if not os.access(plugin, os.X_OK):
        pytest.fail(f"Docker Compose v2 is not installed at {plugin.relative_to(ROOT)}: {INSTALL_COMPOSE}")
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "DOCKER_CONFIG": str(DOCKER_CONFIG),
    }


def _compose(env: dict[str, str], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE / "docker-compose.yml")]
    return _run([*base, *args], env=env)


def _alerts() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules += [r for r in group["rules"] if "alert" in r]
    return rules


# --- Prometheus -------------------------------------------------------------------------------


def test_promtool_checks_the_config_and_the_rule_files_it_loads(promtool: str) -> None:
    out = _ok(_run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")]))
    # check config also checks every rule file its rule_files glob finds; it must find ours.
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in out, out


def test_promtool_checks_the_rules(promtool: str) -> None:
    assert RULE_FILES, "no deploy/prometheus/rules/*.rules.yml"
    out = _ok(_run([promtool, "check", "rules", *map(str, RULE_FILES)]))
    for path in RULE_FILES:
        count = sum(len(g["rules"]) for g in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"])
        assert f"Checking {path}\n  SUCCESS: {count} rules found" in out, out


def test_promtool_unit_tests_pass_and_cover_every_alert(promtool: str) -> None:
    _ok(_run([promtool, "test", "rules", str(RULE_TESTS)]))
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    missing = {r["alert"] for r in _alerts()} - fired
    assert not missing, f"alerts no promtool test sees firing: {sorted(missing)}"


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # The checks above are worth something only if promtool refuses bad PromQL.
    bad = tmp_path / "bad.rules.yml"
    bad.write_text("groups:\n  - name: bad\n    rules:\n      - alert: Bad\n        expr: sum by (x (up)\n")
    result = _run([promtool, "check", "rules", str(bad)])
    assert result.returncode != 0, result.stdout


# --- Alertmanager -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail(f"amtool is not installed: {INSTALL_AMTOOL}")
    return path


def _receivers(amtool: str, config: Path, **labels: str) -> list[str]:
    result = _run(
        [
            amtool,
            "config",
            "routes",
            "test",
            f"--config.file={config}",
            *(f"{k}={v}" for k, v in labels.items()),
        ]
    )
    return _ok(result).strip().split(",")


def test_amtool_checks_the_alertmanager_config(amtool: str) -> None:
    out = _ok(_run([amtool, "check-config", str(ALERTMANAGER)]))
    assert "SUCCESS" in out, out


def test_every_alert_reaches_people_and_critical_ones_page(amtool: str) -> None:
    # Routed as Alertmanager itself would route each alert of the rules, by its own labels.
    for alert in _alerts():
        severity = alert["labels"]["severity"]
        receivers = _receivers(amtool, ALERTMANAGER, alertname=alert["alert"], severity=severity)
        assert "ops-email" in receivers, f"{alert['alert']} reaches {receivers}, not the e-mail"
        assert ("ops-pager" in receivers) == (severity == "critical"), (alert["alert"], receivers)


def test_prometheus_sends_its_alerts_to_the_stacks_alertmanager(compose_config: dict[str, Any]) -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    targets = [
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"], targets
    service = compose_config["services"]["alertmanager"]
    # Secrets arrive as files: neither the config nor the environment holds them.
    mounted = {s["target"] for s in service.get("secrets", [])}
    text = ALERTMANAGER.read_text(encoding="utf-8")
    for path in re.findall(r"_file: (\S+)", text):
        assert path in mounted, f"{path} is read by Alertmanager but not mounted as a secret"
    inline = [k for k in _keys(yaml.safe_load(text)) if re.search(r"password$|credentials$|token$", k)]
    assert not inline, f"secrets written into the config instead of a file: {inline}"


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from _keys(item)


def test_amtool_rejects_a_broken_config(amtool: str, tmp_path: Path) -> None:
    bad = tmp_path / "alertmanager.yml"
    bad.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: somebody\n")
    assert _run([amtool, "check-config", str(bad)]).returncode != 0


def _alert_problems(alerts: list[dict[str, Any]], runbooks: Path) -> list[str]:
    """Every alert labelled, summarised in English and Chinese, with its runbook; every runbook an alert's."""
    names = [r["alert"] for r in alerts]
    problems = [f"{n}: defined twice" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [f"{n}: issue 9 asks for this alert" for n in sorted(REQUIRED_ALERTS - set(names))]
    index = (runbooks / "README.md").read_text(encoding="utf-8")
    for rule in alerts:
        name, annotations = rule["alert"], rule.get("annotations", {})
        if rule.get("labels", {}).get("severity") not in {"warning", "critical"}:
            problems.append(f"{name}: severity must be warning or critical")
        if not annotations.get("summary"):
            problems.append(f"{name}: no summary")
        if not _CJK.search(annotations.get("summary_zh", "")):
            problems.append(f"{name}: no Chinese summary_zh")
        if annotations.get("runbook_url") != f"docs/runbooks/{name}.md":
            problems.append(f"{name}: runbook_url is not docs/runbooks/{name}.md")
        page = runbooks / f"{name}.md"
        if not page.is_file():
            problems.append(f"{name}: no runbook docs/runbooks/{name}.md")
        elif not page.read_text(encoding="utf-8").startswith(f"# {name}\n"):
            problems.append(f"{name}: its runbook is not titled # {name}")
        if f"[{name}.md]({name}.md)" not in index:
            problems.append(f"{name}: docs/runbooks/README.md does not list it")
    pages = {p.stem for p in runbooks.glob("*.md") if p.name != "README.md"}
    problems += [f"docs/runbooks/{p}.md: no alert of that name" for p in sorted(pages - set(names))]
    return problems


def test_every_alert_is_labelled_and_has_its_runbook() -> None:
    problems = _alert_problems(_alerts(), RUNBOOKS)
    assert not problems, "\n".join(problems)


def test_alert_checks_catch_a_missing_runbook_and_label(tmp_path: Path) -> None:
    runbooks = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, runbooks)
    (runbooks / "LiandongDeadLetters.md").unlink()
    (runbooks / "LiandongRetired.md").write_text("# LiandongRetired\n", encoding="utf-8")
    alerts = _alerts()
    overdue = next(a for a in alerts if a["alert"] == "LiandongOverdueSurge")
    overdue["labels"]["severity"] = "page"
    del overdue["annotations"]["summary_zh"]
    alerts = [a for a in alerts if a["alert"] != "LiandongBrokerDown"]
    problems = _alert_problems(alerts, runbooks)
    for expected in (
        "LiandongDeadLetters: no runbook docs/runbooks/LiandongDeadLetters.md",
        "docs/runbooks/LiandongRetired.md: no alert of that name",
        "docs/runbooks/LiandongBrokerDown.md: no alert of that name",
        "LiandongBrokerDown: issue 9 asks for this alert",
        "LiandongOverdueSurge: severity must be warning or critical",
        "LiandongOverdueSurge: no Chinese summary_zh",
    ):
        assert expected in problems, f"{expected!r} not among {problems}"


# --- Docker Compose ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_config(compose_env: dict[str, str]) -> dict[str, Any]:
    _ok(_compose(compose_env, COMPOSE / ".env.example", "config", "-q"))
    rendered: dict[str, Any] = json.loads(
        _ok(_compose(compose_env, COMPOSE / ".env.example", "config", "--format", "json"))
    )
    return rendered


def test_compose_renders_the_whole_stack(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), f"{name}: image {image} is not pinned"
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond the loopback"


def test_compose_kafka_runs_in_kraft_mode(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    assert not any("zookeeper" in name for name in services)
    kafka = services["kafka"]["environment"]
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert not [key for key in kafka if "ZOOKEEPER" in key]
    registry = services["schema-registry"]["environment"]
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith("kafka:9092")


def test_compose_hub_processes_wait_for_migrate_and_report_readiness(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name, port in (("api", 8080), ("worker-1", 6066), ("worker-2", 6066)):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        check = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in check, f"{name}: {check}"
        env = service["environment"]
        assert env["LIANDONG_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["LIANDONG_DATABASE_URL"].startswith("postgresql+asyncpg://liandong:")
    # The workers bind every address, so Prometheus's targets worker-N:6066 reach them.
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))["scrape_configs"]
    targets = {t for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]}
    for worker in ("worker-1", "worker-2"):
        assert services[worker]["environment"]["LIANDONG_WORKER_WEB_HOST"] == "0.0.0.0"
        assert f"{worker}:6066" in targets
    assert "api:8080" in targets


def test_compose_refuses_to_render_without_the_secrets(compose_env: dict[str, str], tmp_path: Path) -> None:
    example = (COMPOSE / ".env.example").read_text(encoding="utf-8")
    without = "\n".join(line for line in example.splitlines() if not line.startswith("LIANDONG_MASTER_KEY="))
    assert without != example, ".env.example no longer sets LIANDONG_MASTER_KEY"
    env_file = tmp_path / "env"
    env_file.write_text(without + "\n", encoding="utf-8")
    result = _compose(compose_env, env_file, "config", "-q")
    assert result.returncode != 0
    assert "set LIANDONG_MASTER_KEY in deploy/compose/.env" in result.stderr, result.stderr


# --- Kubernetes -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_k8s_check", DEPLOY / "k8s" / "check.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k8s_manifests_pass_the_schemas_strimzi_checks_and_invariants(
    k8s_check: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    # main() is `python deploy/k8s/check.py`: it prints each problem and a summary of what it read.
    status = k8s_check.main()
    out = capsys.readouterr().out
    assert status == 0, out
    for kind in (
        "Deployment",
        "HorizontalPodAutoscaler",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaUser",
    ):
        assert re.search(rf"\b{kind} [1-9]", out), f"no {kind} checked:\n{out}"


def _k8s_docs(k8s_check: ModuleType) -> list[tuple[str, dict[str, Any]]]:
    docs, problems = k8s_check.load()
    assert not problems
    return list(docs)


def _find(docs: list[tuple[str, dict[str, Any]]], kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in docs if d["kind"] == kind and d["metadata"].get("name") == name)


def test_k8s_schema_check_catches_a_wrong_field(k8s_check: ModuleType) -> None:
    docs = _k8s_docs(k8s_check)
    worker = _find(docs, "Deployment", "liandong-worker")
    worker["spec"]["replicas"] = "three"
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}  # misspelt: strict rejects it
    problems = "\n".join(k8s_check.check_documents(docs))
    assert "Deployment liandong-worker (Kubernetes 1.29): spec.replicas: 'three' is not of type" in problems
    assert "Deployment liandong-worker (Kubernetes 1.33)" in problems


def test_k8s_unknown_kinds_are_problems_not_passes(k8s_check: ModuleType) -> None:
    docs = _k8s_docs(k8s_check)
    docs.append(("extra.yaml", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}))
    assert any("no schema for example.com/v1 Widget" in p for p in k8s_check.check_documents(docs))


@pytest.mark.parametrize(
    ("kind", "name", "path", "value", "expected"),
    [
        ("KafkaTopic", "liandong.deadletter", ("spec", "partitions"), 0, "spec.partitions"),
        ("KafkaTopic", "liandong.deadletter", ("spec", "replicas"), 5, "5 replicas but only 3 brokers"),
        (
            "KafkaTopic",
            "liandong.deadletter",
            ("spec", "topicName"),
            "dead letter",
            "not a legal Kafka topic",
        ),
        ("KafkaTopic", "liandong.case.events", ("spec", "partitions"), 13, "disagree on partitions"),
        ("KafkaNodePool", "controller", ("spec", "replicas"), 2, "odd number of controllers"),
        ("KafkaNodePool", "broker", ("spec", "roles"), ["zookeeper"], "spec.roles"),
        (
            "KafkaNodePool",
            "broker",
            ("metadata", "labels", "strimzi.io/cluster"),
            "other",
            "strimzi.io/cluster",
        ),
        ("Kafka", "liandong", ("spec", "zookeeper"), {"replicas": 3}, "KRaft"),
        ("Kafka", "liandong", ("spec", "kafka", "version"), 4.1, "spec.kafka.version"),
        ("Kafka", "liandong", ("spec", "kafka", "listeners", 1, "port"), 9092, "port 9092 must be unique"),
        ("Kafka", "liandong", ("spec", "kafka", "listeners", 1, "tls"), False, "mutual TLS without tls"),
        ("Kafka", "liandong", ("apiVersion",), "kafka.strimzi.io/v1alpha1", "apiVersion is not"),
    ],
)
def test_strimzi_checks_catch_broken_resources(
    k8s_check: ModuleType, kind: str, name: str, path: tuple[Any, ...], value: Any, expected: str
) -> None:
    docs = _k8s_docs(k8s_check)
    node: Any = _find(docs, kind, name)
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = k8s_check.check_documents(docs, k8s_versions=())
    assert any(expected in p for p in problems), f"expected {expected!r} among {problems}"


def test_strimzi_acls_must_name_declared_topics(k8s_check: ModuleType) -> None:
    docs = _k8s_docs(k8s_check)
    user = next(d for _, d in docs if d["kind"] == "KafkaUser")
    user["spec"]["authorization"]["acls"][0]["resource"]["name"] = "liandong.nonexistent.events"
    user["spec"]["authorization"]["acls"][1]["operations"] = ["Write", "Publish"]
    problems = "\n".join(k8s_check.check_documents(docs, k8s_versions=()))
    assert "'liandong.nonexistent.events', which is not declared" in problems
    assert "'Publish']" in problems


def test_k8s_kustomization_must_list_every_manifest(k8s_check: ModuleType) -> None:
    docs = _k8s_docs(k8s_check)
    kustomization = next(d for _, d in docs if d["kind"] == "Kustomization")
    kustomization["resources"].remove("worker.yaml")
    kustomization["replacements"][0]["source"]["name"] = "liandong.gone.events"
    problems = k8s_check.check_documents(docs, k8s_versions=())
    assert "kustomization.yaml does not list worker.yaml" in problems
    assert "kustomization.yaml: replacement source KafkaTopic liandong.gone.events is missing" in problems


def test_k8s_hub_probes_use_healthz_and_readyz(k8s_check: ModuleType) -> None:
    docs = _k8s_docs(k8s_check)
    container = _find(docs, "Deployment", "liandong-worker")["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["path"] = "/metrics"
    problems = k8s_check.check_documents(docs, k8s_versions=())
    assert "Deployment liandong-worker: readinessProbe must GET /readyz on port metrics" in problems


# --- Grafana ----------------------------------------------------------------------------------


def _provisioned_datasource_uids() -> set[str]:
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioning["apiVersion"] == 1
    sources = provisioning["datasources"]
    for source in sources:
        assert source["type"] == "prometheus", source
        assert source["url"] == "http://prometheus:9090", source  # the compose service
    return {s["uid"] for s in sources}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def _dashboards() -> list[tuple[str, dict[str, Any]]]:
    assert DASHBOARDS, "no deploy/grafana/dashboards/*.json"
    return [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in DASHBOARDS]


def _dashboard_problems(name: str, dashboard: dict[str, Any], datasources: set[str]) -> list[str]:
    """What Grafana's dashboard model needs to provision the file as meant, and our own conventions."""
    problems = [
        f"{name}: no {key}" for key in ("uid", "title", "schemaVersion", "panels") if not dashboard.get(key)
    ]
    if problems:
        return problems
    if not isinstance(dashboard["schemaVersion"], int):
        problems.append(f"{name}: schemaVersion is not a number")
    if not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"]):
        problems.append(f"{name}: uid {dashboard['uid']!r} is not 1-40 letters, digits, - or _")
    if dashboard.get("id") is not None:
        problems.append(f"{name}: a provisioned dashboard has no id (Grafana assigns it)")
    panels = list(_panels(dashboard["panels"]))
    ids = [p.get("id") for p in panels]
    if not all(isinstance(i, int) for i in ids) or len(ids) != len(set(ids)):
        problems.append(f"{name}: panel ids must be distinct integers: {ids}")
    problems += _overlaps(name, dashboard["panels"])
    for panel in panels:
        label = f"{name} panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append(f"{label}: gridPos needs integer h, w, x, y")
        elif grid["w"] < 1 or grid["h"] < 1 or not 0 <= grid["x"] <= grid["x"] + grid["w"] <= 24:
            problems.append(f"{label}: gridPos {grid} is outside Grafana's 24 columns")
        if panel.get("type") == "row":
            continue
        if not (panel.get("title") and panel.get("type")):
            problems.append(f"{label}: no title or type")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{label}: no query")
        for source in [panel.get("datasource"), *(t.get("datasource") for t in targets)]:
            if not isinstance(source, dict) or source.get("uid") not in datasources:
                problems.append(
                    f"{label}: datasource {source!r} is not the provisioned {sorted(datasources)}"
                )
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)) or not all(isinstance(r, str) and r for r in refs):
            problems.append(f"{label}: queries need distinct refIds: {refs}")
        problems += [f"{label}: empty expr" for t in targets if not str(t.get("expr", "")).strip()]
    return problems


def _overlaps(name: str, panels: list[dict[str, Any]]) -> list[str]:
    """Top-level panels that share a grid cell (Grafana would shove one of them elsewhere)."""
    owner: dict[tuple[int, int], Any] = {}
    problems: list[str] = []
    for panel in panels:
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")):
            continue  # reported as a bad gridPos
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        clashes = sorted({str(owner[c]) for c in cells if c in owner})
        if clashes:
            problems.append(f"{name} panel {panel.get('id')}: overlaps panel {', '.join(clashes)}")
        owner |= dict.fromkeys(cells, panel.get("id"))
    return problems


def _invalid_promql(promtool: str, dashboards: list[tuple[str, dict[str, Any]]], tmp_path: Path) -> str:
    """promtool's complaints about the dashboards' queries, or "" when every one parses.

    promtool has no "check this expression" command, but it parses every recording rule's expr:
    each query becomes one recording rule in a throwaway rule file.
    """
    rules = []
    for name, dashboard in dashboards:
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                # Grafana's own interval variables are not PromQL; a fixed range stands in for them.
                expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", target["expr"])
                if "$" in expr:
                    return f"{name} panel {panel['id']}: a template variable promtool cannot check: {expr!r}"
                stem = re.sub(r"\W", "_", Path(name).stem)
                rules.append(
                    {"record": f"dashboard:{stem}:panel{panel['id']}_{target['refId']}", "expr": expr}
                )
    assert rules, "no queries in the dashboards"
    rule_file = tmp_path / "dashboards.rules.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8"
    )
    result = _run([promtool, "check", "rules", str(rule_file)])
    if result.returncode != 0:
        return result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout, result.stdout
    return ""


def test_grafana_provisioning_loads_the_dashboards_folder() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "liandong.yml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"../grafana/dashboards:{provider['options']['path']}:ro" in mounts, mounts
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in mounts, mounts


def test_grafana_dashboards_are_well_formed() -> None:
    datasources = _provisioned_datasource_uids()
    dashboards = _dashboards()
    problems = [p for name, d in dashboards for p in _dashboard_problems(name, d, datasources)]
    assert not problems, "\n".join(problems)
    uids = [d["uid"] for _, d in dashboards]
    assert len(uids) == len(set(uids)), f"dashboards share a uid: {uids}"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("uid",), "", "no uid"),
        (("schemaVersion",), "39", "schemaVersion is not a number"),
        (("panels", 2, "id"), 2, "panel ids must be distinct"),
        (("panels", 2, "gridPos", "x"), 20, "outside Grafana's 24 columns"),
        (("panels", 2, "gridPos", "x"), 6, "overlaps panel 2"),
        (("panels", 2, "gridPos"), None, "gridPos needs integer"),
        (("panels", 2, "datasource", "uid"), "other", "is not the provisioned"),
        (("panels", 2, "targets", 0, "datasource"), "Prometheus", "is not the provisioned"),
        (("panels", 2, "targets", 0, "expr"), " ", "empty expr"),
        (("panels", 2, "targets"), [], "no query"),
    ],
)
def test_grafana_checks_catch_a_broken_dashboard(path: tuple[Any, ...], value: Any, expected: str) -> None:
    name, dashboard = _dashboards()[0]
    node: Any = dashboard
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    problems = _dashboard_problems(name, dashboard, _provisioned_datasource_uids())
    assert any(expected in p for p in problems), f"expected {expected!r} among {problems}"


def test_grafana_expressions_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    complaint = _invalid_promql(promtool, _dashboards(), tmp_path)
    assert not complaint, complaint


def test_grafana_expression_check_catches_bad_promql(promtool: str, tmp_path: Path) -> None:
    name, dashboard = _dashboards()[0]
    query = next(p for p in _panels(dashboard["panels"]) if p.get("targets"))["targets"][0]
    query["expr"] = "sum by (type) (rate(liandong_events_accepted_total[5m])"  # one parenthesis short
    assert "unclosed left parenthesis" in _invalid_promql(promtool, [(name, dashboard)], tmp_path)
