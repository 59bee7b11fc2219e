"""Every role the API can give a viewer has a Chinese and an English name on the dashboard."""

from __future__ import annotations

from typing import get_args

from services.api.access import Role
from services.dashboard.labels import ROLES


def test_every_viewer_role_has_a_dashboard_label_in_both_languages() -> None:
    missing = [role for role in get_args(Role) if role not in ROLES]
    assert missing == [], f"roles without a dashboard label: {missing}"
    assert all(zh and en for zh, en in ROLES.values())
