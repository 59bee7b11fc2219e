"""Check deploy/k8s: YAML syntax, apiVersion/kind/metadata.name on every document, a comment header on
every manifest, and one partition count (KafkaTopics, LIANDONG_TOPIC_PARTITIONS, the worker HPA cap).

    python deploy/k8s/check.py        # needs PyYAML; exits 1 on the first list of problems
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs

HERE = Path(__file__).resolve().parent


def main() -> int:
    problems: list[str] = []
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(HERE.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("#"):
            problems.append(f"{path.name}: no comment header")
        try:
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        for doc in loaded:
            name = (doc.get("metadata") or {}).get("name")
            if doc.get("kind") == "Kustomization":  # kustomize's own file has no metadata.name
                if path.name != "kustomization.yaml":
                    problems.append(f"{path.name}: a Kustomization outside kustomization.yaml")
                continue
            if not (doc.get("apiVersion") and doc.get("kind") and name):
                problems.append(f"{path.name}: a document without apiVersion, kind or metadata.name")
            docs.append((path.name, doc))
    topics = [d for _, d in docs if d.get("kind") == "KafkaTopic"]
    events = [t for t in topics if t["spec"]["topicName"].endswith(".events")]
    counts = {t["spec"]["partitions"] for t in events}
    config = next(d for _, d in docs if d.get("kind") == "ConfigMap")["data"]
    hpa = next(d for _, d in docs if d.get("kind") == "HorizontalPodAutoscaler")
    if len(counts) != 1:
        problems.append(f"event topics disagree on partitions: {sorted(counts)}")
    partitions = min(counts) if counts else 0
    if str(partitions) != config["LIANDONG_TOPIC_PARTITIONS"]:
        configured = config["LIANDONG_TOPIC_PARTITIONS"]
        problems.append(f"LIANDONG_TOPIC_PARTITIONS {configured} != topics' {partitions}")
    if hpa["spec"]["maxReplicas"] != partitions:
        problems.append(f"worker HPA maxReplicas {hpa['spec']['maxReplicas']} != partitions {partitions}")
    names = [t["spec"]["topicName"] for t in topics]
    if len(names) != len(set(names)):
        problems.append("a topic is declared twice")
    for problem in problems:
        print(problem)
    kinds: dict[str, int] = {}
    for _, d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(f"{len(docs)} documents: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print(f"partitions per event topic: {partitions}; event topics: {len(events)}; all topics: {len(topics)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
