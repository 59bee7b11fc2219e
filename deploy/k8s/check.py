"""Check deploy/k8s without a cluster.

- YAML syntax, a comment header on every manifest, apiVersion/kind/metadata.name on every document;
- Kubernetes' own kinds against Kubernetes' OpenAPI schemas (kubernetes-validate, offline, strict:
  an unknown field is an error) for the pinned K8S_VERSION;
- Strimzi's kinds (Kafka, KafkaNodePool, KafkaTopic, KafkaUser), whose schemas kubernetes-validate
  does not ship, by structural checks written from Strimzi's CRDs (v1beta2) — see strimzi_problems;
- the hub's own invariants: one partition count (KafkaTopics, LIANDONG_TOPIC_PARTITIONS, the worker
  HPA cap), KafkaUser ACLs naming declared topics only, and the API's and workers' probes on
  /healthz (liveness) and /readyz (readiness).

A kind that none of these knows is itself a problem, so a new resource is never waved through.

    python deploy/k8s/check.py        # needs PyYAML and kubernetes-validate (the test extras)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs

HERE = Path(__file__).resolve().parent
# Pinned Kubernetes releases, so that an upgrade of kubernetes-validate does not change the verdict:
# an older one (a field added later fails there) and a recent one (an API removed since fails there).
K8S_VERSIONS = ("1.29", "1.33")

Doc = tuple[str, dict[str, Any]]  # (file name, document)

STRIMZI_API = "kafka.strimzi.io/v1beta2"
STRIMZI_KINDS = frozenset({"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"})
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KAFKA_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_LISTENER_NAME = re.compile(r"^[a-z0-9]{1,11}$")
_LISTENER_TYPES = frozenset({"internal", "route", "loadbalancer", "nodeport", "ingress", "cluster-ip"})
_LISTENER_AUTH = frozenset({"tls", "scram-sha-512", "oauth", "custom"})
_AUTHORIZATION = frozenset({"simple", "opa", "keycloak", "custom"})
_USER_AUTH = frozenset({"tls", "tls-external", "scram-sha-512"})
_ACL_RESOURCES = frozenset({"topic", "group", "cluster", "transactionalId"})
_ACL_PATTERNS = frozenset({"literal", "prefix"})
_ACL_OPERATIONS = frozenset(
    {
        "Read",
        "Write",
        "Create",
        "Delete",
        "Alter",
        "Describe",
        "ClusterAction",
        "AlterConfigs",
        "DescribeConfigs",
        "IdempotentWrite",
        "All",
    }
)
_NODE_ROLES = frozenset({"controller", "broker"})
_STORAGE_TYPES = frozenset({"jbod", "persistent-claim", "ephemeral"})
_VOLUME_TYPES = frozenset({"persistent-claim", "ephemeral"})
_CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete", "delete,compact"})
# Broker ports Strimzi keeps for itself; listeners must use others, from 9092 up.
_RESERVED_PORTS = frozenset({9404, 9999})
# Deployments of the hub and the container port their /healthz and /readyz are served on.
HUB_PROBES = {"liandong-api": "http", "liandong-worker": "metrics"}


def load(directory: Path = HERE) -> tuple[list[Doc], list[str]]:
    """Every document of every *.yaml in directory, and the problems found while reading them."""
    problems: list[str] = []
    docs: list[Doc] = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("#"):
            problems.append(f"{path.name}: no comment header")
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        for doc in loaded:
            if not isinstance(doc, dict):
                problems.append(f"{path.name}: a document that is not a mapping")
                continue
            docs.append((path.name, doc))
    return docs, problems


def check_documents(docs: list[Doc], k8s_versions: Iterable[str] = K8S_VERSIONS) -> list[str]:
    """Every problem of the documents: identity, schema, Strimzi structure, the hub's invariants."""
    problems: list[str] = []
    for file, doc in docs:
        problems += [f"{file}: {p}" for p in identity_problems(file, doc)]
    if problems:
        return problems  # the checks below index by kind and name
    for version in k8s_versions:
        problems += schema_problems(docs, version)
    problems += strimzi_problems(docs)
    problems += partition_problems(docs)
    problems += probe_problems(docs)
    problems += kustomization_problems(docs)
    return problems


def identity_problems(file: str, doc: dict[str, Any]) -> list[str]:
    kind = doc.get("kind")
    if kind == "Kustomization":  # kustomize's own file has no metadata.name
        if file != "kustomization.yaml":
            return ["a Kustomization outside kustomization.yaml"]
        return (
            []
            if doc.get("apiVersion") == KUSTOMIZE_API
            else [f"Kustomization apiVersion is not {KUSTOMIZE_API}"]
        )
    metadata = doc.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not (doc.get("apiVersion") and kind and name):
        return ["a document without apiVersion, kind or metadata.name"]
    if not isinstance(name, str) or not _DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        return [f"{kind} {name!r}: metadata.name is not a DNS-1123 subdomain"]
    return []


def schema_problems(docs: list[Doc], k8s_version: str) -> list[str]:
    """Kubernetes' kinds against Kubernetes' schemas; Strimzi's and kustomize's are checked elsewhere."""
    import kubernetes_validate  # the test extras; imported here so `load` works without it
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, VersionNotSupportedError

    problems: list[str] = []
    for file, doc in docs:
        kind = doc["kind"]
        if kind == "Kustomization" or (kind in STRIMZI_KINDS and doc["apiVersion"] == STRIMZI_API):
            continue
        label = f"{file}: {kind} {doc['metadata']['name']} (Kubernetes {k8s_version})"
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except ValidationError as exc:
            problems.append(f"{label}: {'.'.join(str(p) for p in exc.path) or '(root)'}: {exc.message}")
        except SchemaNotFoundError:
            problems.append(f"{label}: no schema for {doc['apiVersion']} {kind}")
        except VersionNotSupportedError:
            return [
                f"kubernetes-validate has no schemas for Kubernetes {k8s_version}; pin another in check.py"
            ]
    return problems


def _of(docs: Iterable[Doc], kind: str) -> list[dict[str, Any]]:
    return [d for _, d in docs if d.get("kind") == kind]


def strimzi_problems(docs: list[Doc]) -> list[str]:
    """Strimzi's custom resources, checked for what its CRDs (v1beta2) require and KRaft needs."""
    problems: list[str] = []
    for _, doc in docs:
        if doc["kind"] in STRIMZI_KINDS and doc["apiVersion"] != STRIMZI_API:
            problems.append(f"{doc['kind']} {doc['metadata']['name']}: apiVersion is not {STRIMZI_API}")
    clusters = _of(docs, "Kafka")
    if len(clusters) != 1:
        return [*problems, f"expected one Kafka cluster, found {len(clusters)}"]
    kafka = clusters[0]
    cluster, namespace = kafka["metadata"]["name"], kafka["metadata"].get("namespace")
    for kind in ("KafkaNodePool", "KafkaTopic", "KafkaUser"):
        for doc in _of(docs, kind):
            meta = doc["metadata"]
            if (meta.get("labels") or {}).get("strimzi.io/cluster") != cluster:
                problems.append(f"{kind} {meta['name']}: label strimzi.io/cluster is not {cluster!r}")
            if meta.get("namespace") != namespace:
                problems.append(f"{kind} {meta['name']}: namespace is not the Kafka's ({namespace})")
    brokers = _node_pool_problems(_of(docs, "KafkaNodePool"), problems)
    listener_auth = _kafka_problems(kafka, brokers, problems)
    topic_names = _topic_problems(_of(docs, "KafkaTopic"), brokers, problems)
    _user_problems(_of(docs, "KafkaUser"), kafka, listener_auth, topic_names, problems)
    return problems


def _node_pool_problems(pools: list[dict[str, Any]], problems: list[str]) -> int:
    """Check the node pools; return the number of brokers."""
    brokers = controllers = 0
    for pool in pools:
        name, spec = pool["metadata"]["name"], pool.get("spec") or {}
        replicas, roles = spec.get("replicas"), spec.get("roles")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            problems.append(f"KafkaNodePool {name}: spec.replicas must be a whole number")
            replicas = 0
        if not isinstance(roles, list) or not roles or not set(roles) <= _NODE_ROLES:
            problems.append(f"KafkaNodePool {name}: spec.roles must list controller and/or broker")
            roles = []
        brokers += replicas if "broker" in roles else 0
        controllers += replicas if "controller" in roles else 0
        storage = spec.get("storage") or {}
        if storage.get("type") not in _STORAGE_TYPES:
            problems.append(
                f"KafkaNodePool {name}: spec.storage.type must be one of {sorted(_STORAGE_TYPES)}"
            )
        volumes = storage.get("volumes", []) if storage.get("type") == "jbod" else [storage]
        ids = [v.get("id") for v in volumes]
        if storage.get("type") == "jbod" and (not volumes or len(set(ids)) != len(ids)):
            problems.append(f"KafkaNodePool {name}: jbod volumes need distinct ids")
        for volume in volumes:
            if volume.get("type") not in _VOLUME_TYPES:
                problems.append(f"KafkaNodePool {name}: volume type must be persistent-claim or ephemeral")
            if volume.get("type") == "persistent-claim" and not volume.get("size"):
                problems.append(f"KafkaNodePool {name}: a persistent-claim volume without a size")
        if sum(1 for v in volumes if v.get("kraftMetadata") == "shared") > 1:
            problems.append(f"KafkaNodePool {name}: more than one volume holds the KRaft metadata")
    if controllers < 1 or controllers % 2 == 0:
        problems.append(f"KRaft needs an odd number of controllers (a quorum), found {controllers}")
    if brokers < 1:
        problems.append("no node pool has the broker role")
    return brokers


def _kafka_problems(kafka: dict[str, Any], brokers: int, problems: list[str]) -> dict[str, str | None]:
    """Check the Kafka resource; return each listener's authentication type by listener name."""
    name, spec = kafka["metadata"]["name"], kafka.get("spec") or {}
    if "zookeeper" in spec:
        problems.append(f"Kafka {name}: a zookeeper section; the cluster runs in KRaft mode")
    annotations = kafka["metadata"].get("annotations") or {}
    if annotations.get("strimzi.io/node-pools", "enabled") != "enabled":
        problems.append(f"Kafka {name}: node pools must be enabled (KRaft)")
    broker = spec.get("kafka") or {}
    if not isinstance(broker.get("version"), str):
        problems.append(f"Kafka {name}: spec.kafka.version must be a string such as '4.1.0'")
    auth: dict[str, str | None] = {}
    ports: set[int] = set()
    for listener in broker.get("listeners") or []:
        lname, port = listener.get("name"), listener.get("port")
        if not isinstance(lname, str) or not _LISTENER_NAME.match(lname) or lname in auth:
            problems.append(f"Kafka {name}: listener name {lname!r} must be unique, [a-z0-9], at most 11")
            continue
        if not isinstance(port, int) or port < 9092 or port in _RESERVED_PORTS or port in ports:
            problems.append(
                f"Kafka {name}: listener {lname} port {port!r} must be unique, ≥ 9092, not reserved"
            )
        else:
            ports.add(port)
        if listener.get("type") not in _LISTENER_TYPES:
            problems.append(f"Kafka {name}: listener {lname} type must be one of {sorted(_LISTENER_TYPES)}")
        if not isinstance(listener.get("tls"), bool):
            problems.append(f"Kafka {name}: listener {lname} needs tls: true or false")
        authentication = (listener.get("authentication") or {}).get("type")
        if authentication is not None and authentication not in _LISTENER_AUTH:
            problems.append(f"Kafka {name}: listener {lname} authentication {authentication!r} is unknown")
        if authentication == "tls" and listener.get("tls") is not True:
            problems.append(f"Kafka {name}: listener {lname} uses mutual TLS without tls: true")
        auth[lname] = authentication
    if not auth:
        problems.append(f"Kafka {name}: spec.kafka.listeners is empty")
    authorization = (broker.get("authorization") or {}).get("type")
    if authorization is not None and authorization not in _AUTHORIZATION:
        problems.append(f"Kafka {name}: authorization {authorization!r} is unknown")
    config = broker.get("config") or {}
    factor, min_isr = config.get("default.replication.factor"), config.get("min.insync.replicas")
    if isinstance(factor, int) and factor > brokers:
        problems.append(f"Kafka {name}: default.replication.factor {factor} > {brokers} brokers")
    if isinstance(factor, int) and isinstance(min_isr, int) and min_isr >= factor:
        problems.append(f"Kafka {name}: min.insync.replicas {min_isr} leaves no broker to lose")
    return auth


def _topic_problems(topics: list[dict[str, Any]], brokers: int, problems: list[str]) -> set[str]:
    """Check the KafkaTopics; return their Kafka topic names."""
    names: list[str] = []
    for topic in topics:
        name, spec = topic["metadata"]["name"], topic.get("spec") or {}
        topic_name = spec.get("topicName", name)
        if not isinstance(topic_name, str) or not _KAFKA_TOPIC_NAME.match(topic_name):
            problems.append(f"KafkaTopic {name}: {topic_name!r} is not a legal Kafka topic name")
            continue
        names.append(topic_name)
        partitions, replicas = spec.get("partitions"), spec.get("replicas")
        if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
            problems.append(f"KafkaTopic {name}: spec.partitions must be a whole number ≥ 1")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 32767:
            problems.append(f"KafkaTopic {name}: spec.replicas must be a whole number ≥ 1")
        elif replicas > brokers:
            problems.append(f"KafkaTopic {name}: {replicas} replicas but only {brokers} brokers")
        config = spec.get("config") or {}
        if not isinstance(config, dict) or any(isinstance(v, dict | list) for v in config.values()):
            problems.append(f"KafkaTopic {name}: spec.config values must be scalars")
            continue
        if "cleanup.policy" in config and config["cleanup.policy"] not in _CLEANUP_POLICIES:
            problems.append(f"KafkaTopic {name}: cleanup.policy {config['cleanup.policy']!r} is unknown")
        min_isr = config.get("min.insync.replicas")
        if isinstance(min_isr, int) and isinstance(replicas, int) and min_isr > replicas:
            problems.append(f"KafkaTopic {name}: min.insync.replicas {min_isr} > replicas {replicas}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        problems.append(f"a topic is declared twice: {', '.join(duplicated)}")
    return set(names)


def _user_problems(
    users: list[dict[str, Any]],
    kafka: dict[str, Any],
    listener_auth: dict[str, str | None],
    topic_names: set[str],
    problems: list[str],
) -> None:
    cluster_authorization = ((kafka.get("spec") or {}).get("kafka") or {}).get("authorization") or {}
    for user in users:
        name, spec = user["metadata"]["name"], user.get("spec") or {}
        authentication = (spec.get("authentication") or {}).get("type")
        if authentication not in _USER_AUTH:
            problems.append(f"KafkaUser {name}: authentication must be one of {sorted(_USER_AUTH)}")
        elif authentication == "tls" and "tls" not in listener_auth.values():
            problems.append(f"KafkaUser {name}: authenticates by TLS but no listener does")
        authorization = spec.get("authorization")
        if authorization is None:
            continue
        if authorization.get("type") != "simple" or cluster_authorization.get("type") != "simple":
            problems.append(
                f"KafkaUser {name}: simple ACLs need authorization type simple on it and the Kafka"
            )
        for acl in authorization.get("acls") or []:
            resource = acl.get("resource") or {}
            rtype, operations = resource.get("type"), acl.get("operations")
            if rtype not in _ACL_RESOURCES:
                problems.append(f"KafkaUser {name}: ACL resource type {rtype!r} is unknown")
            if rtype != "cluster" and resource.get("patternType", "literal") not in _ACL_PATTERNS:
                problems.append(f"KafkaUser {name}: ACL patternType must be literal or prefix")
            if not isinstance(operations, list) or not operations or not set(operations) <= _ACL_OPERATIONS:
                problems.append(f"KafkaUser {name}: ACL operations {operations!r} must be Kafka operations")
            literal = resource.get("patternType", "literal") == "literal"
            if rtype == "topic" and literal and resource.get("name") not in topic_names:
                problems.append(
                    f"KafkaUser {name}: ACL on topic {resource.get('name')!r}, which is not declared"
                )


def partition_problems(docs: list[Doc]) -> list[str]:
    """One partition count: the event topics, LIANDONG_TOPIC_PARTITIONS and the worker HPA cap."""
    problems: list[str] = []
    events = [t for t in _of(docs, "KafkaTopic") if str(t["spec"].get("topicName", "")).endswith(".events")]
    counts = {t["spec"].get("partitions") for t in events}
    if len(counts) != 1:
        return [f"event topics disagree on partitions: {sorted(map(str, counts))}"]
    (partitions,) = counts
    configured = next(iter(_of(docs, "ConfigMap")), {}).get("data", {}).get("LIANDONG_TOPIC_PARTITIONS")
    if str(partitions) != configured:
        problems.append(f"LIANDONG_TOPIC_PARTITIONS {configured} != topics' {partitions}")
    for hpa in _of(docs, "HorizontalPodAutoscaler"):
        if (
            hpa["spec"]["scaleTargetRef"]["name"] == "liandong-worker"
            and hpa["spec"]["maxReplicas"] != partitions
        ):
            problems.append(f"worker HPA maxReplicas {hpa['spec']['maxReplicas']} != partitions {partitions}")
    return problems


def probe_problems(docs: list[Doc]) -> list[str]:
    """The hub's Deployments probe /healthz for liveness and /readyz for readiness on their own port."""
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in _of(docs, "Deployment")}
    for name, port in HUB_PROBES.items():
        if name not in deployments:
            problems.append(f"no Deployment {name}")
            continue
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = (container.get(probe) or {}).get("httpGet") or {}
            if http.get("path") != path or http.get("port") != port:
                problems.append(f"Deployment {name}: {probe} must GET {path} on port {port}")
    return problems


def kustomization_problems(docs: list[Doc]) -> list[str]:
    """`kubectl apply -k` applies only the files kustomization.yaml lists: it must list every one, and
    its replacements must start from a resource that exists."""
    kustomizations = _of(docs, "Kustomization")
    if len(kustomizations) != 1:
        return [f"expected one Kustomization, found {len(kustomizations)}"]
    (kustomization,) = kustomizations
    files = {file for file, _ in docs} - {"kustomization.yaml"}
    listed = set(kustomization.get("resources") or [])
    problems = [f"kustomization.yaml does not list {f}" for f in sorted(files - listed)]
    problems += [f"kustomization.yaml lists {f}, which has no documents" for f in sorted(listed - files)]
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs if d["kind"] != "Kustomization"}
    for replacement in kustomization.get("replacements") or []:
        source = replacement.get("source") or {}
        if (source.get("kind"), source.get("name")) not in names:
            problems.append(
                f"kustomization.yaml: replacement source {source.get('kind')} {source.get('name')} is missing"
            )
    return problems


def main() -> int:
    docs, problems = load()
    problems += check_documents(docs)
    for problem in problems:
        print(problem)
    kinds: dict[str, int] = {}
    for _, d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(f"{len(docs)} documents: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    versions = " and ".join(K8S_VERSIONS)
    print(f"Kubernetes kinds validated against Kubernetes {versions}; Strimzi kinds checked structurally")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
