"""`liandong keys ...` and `liandong tokens issue`: the lifecycle of credentials, from the command line.

A key or a token is printed once on standard output (so it can be piped into a secret store); what
was done is told on standard error, in Chinese and English. Listings never show a secret: the hub
does not keep one.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from events.directory import Directory
from services.keys import (
    DEFAULT_GRACE,
    KeyNotActive,
    UnknownKey,
    UnknownUnit,
    issue_key,
    list_keys,
    revoke_key,
    rotate_key,
)
from services.settings import Settings
from services.store import with_engine
from services.tokens import MAX_TTL_S, TOKEN_ROLES, RoleMismatch, issue_token, token_secret

STATUS_ZH = {"active": "有效", "rotated": "已轮换(宽限期内)", "expired": "已过期", "revoked": "已吊销"}


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _days(value: str) -> int:
    days = int(value)
    if not 1 <= days <= 3650:
        raise argparse.ArgumentTypeError("between 1 and 3650 days")
    return days


def _grace_hours(value: str) -> float:
    hours = float(value)
    if not 0 <= hours <= 24 * 90:
        raise argparse.ArgumentTypeError("between 0 and 2160 hours")
    return hours


def _ttl_hours(value: str) -> float:
    hours = float(value)
    if not 0 < hours * 3600 <= MAX_TTL_S:
        raise argparse.ArgumentTypeError(f"more than 0 and at most {MAX_TTL_S // 3600} hours")
    return hours


def _unknown_unit(unit: str) -> int:
    _err(f"未知单位 unknown unit: {unit} (see events/directory/units.json)")
    return 2


def _cmd_issue(settings: Settings, args: argparse.Namespace) -> int:
    ttl = timedelta(days=args.ttl_days) if args.ttl_days else None

    async def issue(engine: AsyncEngine) -> str:
        return await issue_key(engine, Directory.load(), args.unit_id, ttl)

    try:
        key = asyncio.run(with_engine(settings, issue))
    except UnknownUnit:
        return _unknown_unit(args.unit_id)
    print(key)
    _err(f"key for {args.unit_id}; it is shown once, only its hash is stored. 密钥只显示一次，请妥善保存。")
    if ttl is not None:
        until = _when(datetime.now(UTC) + ttl)
        _err(f"it expires at {until}. 有效期至 {until}。")
    return 0


def _cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    async def listed(engine: AsyncEngine) -> list[str]:
        now = datetime.now(UTC)
        rows = []
        for k in await list_keys(engine, unit=args.unit):
            status = k.status(now)
            rows.append(
                f"{k.key_id}  {k.unit:<34} {status:<8} {STATUS_ZH[status]:<10} "
                f"{_when(k.created_at):<20}  {_when(k.expires_at):<20}  {k.replaced_by or '-'}"
            )
        return rows

    rows = asyncio.run(with_engine(settings, listed))
    print(
        "密钥编号 key id  单位 unit                          状态 status          "
        "签发 created           到期 expires           继任 replaced by"
    )
    for row in rows:
        print(row)
    if not rows:
        _err("没有密钥 no keys" + (f" for {args.unit}" if args.unit else ""))
    return 0


def _cmd_rotate(settings: Settings, args: argparse.Namespace) -> int:
    grace = timedelta(hours=args.grace_hours)
    ttl = timedelta(days=args.ttl_days) if args.ttl_days else None

    async def rotate(engine: AsyncEngine) -> tuple[str, str, datetime]:
        done = await rotate_key(engine, Directory.load(), args.key_id, grace, ttl)
        return done.key, done.key_id, done.old_expires_at

    try:
        key, new_id, old_until = asyncio.run(with_engine(settings, rotate))
    except UnknownKey:
        _err(f"未知密钥 unknown key id: {args.key_id} (see `liandong keys list`)")
        return 2
    except KeyNotActive as exc:
        _err(f"无法轮换 cannot rotate: {exc}")
        return 2
    except UnknownUnit as exc:
        return _unknown_unit(str(exc))
    print(key)
    until = _when(old_until)
    _err(
        f"new key {new_id} replaces {args.key_id}, which stays valid until {until}; the new key is shown "
        f"once. 新密钥 {new_id} 取代 {args.key_id}，旧密钥在 {until} 前仍有效；新密钥只显示一次。"
    )
    return 0


def _cmd_revoke(settings: Settings, args: argparse.Namespace) -> int:
    async def revoke(engine: AsyncEngine) -> datetime:
        return await revoke_key(engine, args.key_id)

    try:
        when = asyncio.run(with_engine(settings, revoke))
    except UnknownKey:
        _err(f"未知密钥 unknown key id: {args.key_id} (see `liandong keys list`)")
        return 2
    _err(f"key {args.key_id} revoked at {_when(when)}. 密钥 {args.key_id} 已于 {_when(when)} 吊销。")
    return 0


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    async def secret(engine: AsyncEngine) -> bytes:
        return await token_secret(engine, settings)

    directory = Directory.load()
    try:
        token, claims = issue_token(
            asyncio.run(with_engine(settings, secret)),
            directory,
            unit=args.unit or "",
            role=args.role,
            person=args.person,
            name=args.name or "",
            ttl_s=round(args.ttl_hours * 3600),
        )
    except RoleMismatch as exc:
        _err(f"角色与单位不符 role does not fit the unit: {exc}")
        return 2
    except ValueError as exc:
        _err(f"参数错误 invalid option: {exc}")
        return 2
    print(token)
    until = _when(datetime.fromtimestamp(claims.exp, UTC))
    _err(
        f"token {claims.jti} for {claims.sub} ({claims.role}, {claims.unit or 'no unit'}), valid until "
        f"{until}. 令牌有效期至 {until}，请勿转交他人。"
    )
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="manage API keys (密钥): issue, list, rotate, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    issue = keys.add_parser("issue", help="issue a key for a publishing unit (shown once)")
    issue.add_argument("unit_id")
    issue.add_argument("--ttl-days", type=_days, help="the key expires after N days (default: never)")
    issue.set_defaults(run=_cmd_issue)
    listing = keys.add_parser("list", help="keys and their status, never their secrets")
    listing.add_argument("--unit", help="only this unit's keys")
    listing.set_defaults(run=_cmd_list)
    rotate = keys.add_parser("rotate", help="issue a successor; the old key expires after a grace period")
    rotate.add_argument("key_id", help="the 12-hex id (ld_<id>_...)")
    rotate.add_argument(
        "--grace-hours",
        type=_grace_hours,
        default=DEFAULT_GRACE.total_seconds() / 3600,
        help="hours the old key stays valid (default 24; 0: refused at once)",
    )
    rotate.add_argument("--ttl-days", type=_days, help="the new key expires after N days (default: never)")
    rotate.set_defaults(run=_cmd_rotate)
    revoke = keys.add_parser("revoke", help="refuse a key from now on")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=_cmd_revoke)

    tokens = sub.add_parser("tokens", help="signed tokens for people (令牌)").add_subparsers(
        dest="tokens_command", required=True
    )
    token = tokens.add_parser("issue", help="issue a person's token (printed once)")
    token.add_argument("--unit", default="", help="the person's unit (may be empty for the public)")
    token.add_argument("--role", required=True, choices=TOKEN_ROLES)
    token.add_argument("--person", required=True, help="the person's staff id (not an ID number)")
    token.add_argument("--name", help="the person's name, shown in /v1/me")
    token.add_argument("--ttl-hours", type=_ttl_hours, default=8.0, help="lifetime (default 8 hours)")
    token.set_defaults(run=_cmd_token)
