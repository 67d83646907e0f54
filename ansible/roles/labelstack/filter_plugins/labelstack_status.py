"""`make backup-status`'s judgement of each item: what it found, and whether that is older than its limit or failed.

Every filter returns one item, {"name", "detail", "bad", "line"}, where line is what the status prints
("file backup: 20261207T031000Z, 0.3 h old (limit 26 h): ok"). Times are seconds since the epoch, UTC; `now` is
passed in (the role computes it once per run), so the judgement is a pure function of its inputs.

labelstack_status_file_backup: the newest of the completed backups' folder names (YYYYMMDDTHHMMSSZ);
labelstack_status_record: a JSON record of the last off-site push or drill ({"time": ISO-8601 UTC, "result":
  "ok"|"failed", ...}), as Ansible's slurp returns it;
labelstack_status_base_backup: the newest full base backup in `pgbackrest info --output=json`;
labelstack_status_archive: PostgreSQL's WAL archiver (a row of pg_stat_archiver plus the segments waiting).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import time
from typing import Any

Item = dict[str, Any]


def _item(name: str, detail: str, bad: bool) -> Item:
    return {"name": name, "detail": detail, "bad": bad, "line": f"{name}: {detail}: {'PROBLEM' if bad else 'ok'}"}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


def _utc_seconds(text: str, pattern: str) -> int:
    """Seconds since the epoch of a UTC time written as `pattern` (never through the local time zone)."""
    return calendar.timegm(time.strptime(text, pattern))


def _age(now: int, then: int, limit_hours: float) -> tuple[str, bool]:
    hours = (int(now) - then) / 3600
    return f"{hours:.1f} h old (limit {limit_hours} h)", hours > float(limit_hours)


def labelstack_status_file_backup(names: list[str], limit_hours: float, now: int, folder: str) -> Item:
    if not names:
        return _item("file backup", f"none in {folder}", True)
    newest = max(names)
    age, old = _age(now, _utc_seconds(newest, "%Y%m%dT%H%M%SZ"), limit_hours)
    return _item("file backup", f"{newest}, {age}", old)


def labelstack_status_record(slurped: dict[str, Any], name: str, limit_hours: float, now: int, absent: str) -> Item:
    """`absent`: what a missing record means when that is fine ("not configured"); empty: a missing one is bad."""
    if not slurped.get("content"):
        return _item(name, absent or "none yet", not absent)
    try:
        record = json.loads(base64.b64decode(slurped["content"]))
        then = _utc_seconds(str(record["time"])[:19], "%Y-%m-%dT%H:%M:%S")
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        return _item(name, f"unreadable record {slurped.get('source', '')} ({exc})", True)
    age, old = _age(now, then, limit_hours)
    subject = f" (backup {record['backup']})" if record.get("backup") else ""
    if record.get("result") != "ok":
        where = f" at '{record['failed_part']}'" if record.get("failed_part") else ""
        return _item(name, f"last one FAILED{where} on {record['time']}{subject}, {age}", True)
    return _item(name, f"last one ok on {record['time']}{subject}, {age}", old)


def labelstack_status_base_backup(info: dict[str, Any], limit_hours: float, now: int) -> Item:
    """`info`: the registered result of `pgbackrest info --output=json` (rc, stdout, stderr)."""
    name = "base backup"
    if info.get("rc") != 0:
        return _item(name, f"pgbackrest info failed: {_one_line(info.get('stderr', ''))}", True)
    backups = [backup for stanza in json.loads(info["stdout"]) for backup in stanza.get("backup", [])]
    if not backups:
        return _item(name, "none in the repository", True)
    newest = max(backups, key=lambda backup: backup["timestamp"]["stop"])
    age, old = _age(now, int(newest["timestamp"]["stop"]), limit_hours)
    return _item(name, f"{newest['label']}, {age}", old)


def labelstack_status_archive(query: dict[str, Any], limit_seconds: int) -> Item:
    """`query`: the registered result of a query printing `<seconds since the last archived segment, -1 for
    never> <failures since the statistics were reset> <t: failing now> <segments waiting> <seconds the oldest
    has waited>`."""
    name = "WAL archive"
    if query.get("rc") != 0:
        return _item(name, f"the database does not answer: {_one_line(query.get('stderr', ''))}", True)
    last, failures, failing, waiting, oldest = str(query["stdout"]).split()
    detail = (
        f"{'nothing archived yet' if int(last) < 0 else f'last segment archived {last} s ago'}, {waiting} waiting "
        f"(oldest {oldest} s, limit {limit_seconds} s), {failures} failures since the statistics reset"
    )
    if failing == "t":
        return _item(name, f"{detail}; the last attempt FAILED", True)
    return _item(name, detail, int(last) < 0 or int(oldest) > int(limit_seconds))


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {
            "labelstack_status_file_backup": labelstack_status_file_backup,
            "labelstack_status_record": labelstack_status_record,
            "labelstack_status_base_backup": labelstack_status_base_backup,
            "labelstack_status_archive": labelstack_status_archive,
        }
