"""Alert subscriptions (webhooks and email), from a JSON file named by LIANDONG_WEBHOOKS_FILE.

    {"targets": [
      {"name": "jb-oa", "unit": "district.justice-bureau",
       "url": "https://oa.example/hooks/liandong", "secret_env": "LIANDONG_WEBHOOK_SECRET_JB_OA"},
      {"name": "jb-mail", "unit": "district.justice-bureau",
       "email": "duban@example.gov.cn", "smtp_host": "smtp.example.gov.cn", "smtp_port": 25}]}

Secrets live in the environment, never in the file, and never in logs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from connectors.email.sender import EmailTarget
from connectors.webhook.sender import WebhookTarget
from events.directory import Directory
from services.settings import SettingsError


@dataclass(frozen=True, slots=True)
class Subscription:
    unit: str
    target: WebhookTarget | EmailTarget


def load_subscriptions(
    path: Path | None, directory: Directory, env: Mapping[str, str] | None = None
) -> dict[str, Subscription]:
    """Target name -> subscription. No file: no webhooks."""
    if path is None:
        return {}
    env = os.environ if env is None else env
    doc = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, Subscription] = {}
    for raw in doc.get("targets", []):
        name = raw["name"]
        where = f"{path}: target {name!r}"
        if raw["unit"] not in directory.units:
            raise SettingsError(f"{where} names unknown unit {raw['unit']!r}")
        if "email" in raw:
            mail = EmailTarget(name, raw["email"], raw["smtp_host"], int(raw.get("smtp_port", 25)))
            out[name] = Subscription(raw["unit"], mail)
            continue
        secret = env.get(raw["secret_env"])
        if not secret:
            raise SettingsError(f"{where}: environment variable {raw['secret_env']} is not set")
        try:
            target = WebhookTarget(url=raw["url"], secret=secret.encode(), name=name)
        except ValueError as exc:
            raise SettingsError(f"{where}: {exc}") from None
        out[name] = Subscription(raw["unit"], target)
    return out


def targets_by_unit(subscriptions: Mapping[str, Subscription]) -> dict[str, list[str]]:
    by_unit: dict[str, list[str]] = {}
    for name, sub in subscriptions.items():
        by_unit.setdefault(sub.unit, []).append(name)
    return by_unit
