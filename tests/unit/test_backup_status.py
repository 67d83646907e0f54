"""make backup-status's judgement of each item (filter_plugins/labelstack_status.py), without a stack."""

from __future__ import annotations

import base64
import calendar
import json
import time

from labelstack_testlib import REPO, load_module

status = load_module(
    "labelstack_status", REPO / "ansible" / "roles" / "labelstack" / "filter_plugins" / "labelstack_status.py"
)

NOW = calendar.timegm(time.strptime("2026-12-07T12:00:00", "%Y-%m-%dT%H:%M:%S"))


def slurped(record: dict[str, object]) -> dict[str, object]:
    return {"content": base64.b64encode(json.dumps(record).encode()).decode(), "source": "/b/last.json"}


def test_the_newest_file_backup_within_its_limit_is_ok() -> None:
    item = status.labelstack_status_file_backup(["20261207T000000Z", "20261207T090000Z"], 26, NOW, "/b")
    assert item["line"] == "file backup: 20261207T090000Z, 3.0 h old (limit 26 h): ok"
    assert not item["bad"]


def test_a_file_backup_past_its_limit_or_none_at_all_is_bad() -> None:
    assert status.labelstack_status_file_backup(["20261207T090000Z"], 2, NOW, "/b")["bad"]
    none = status.labelstack_status_file_backup([], 26, NOW, "/b")
    assert none["bad"]
    assert none["detail"] == "none in /b"


def test_a_missing_record_is_fine_only_where_that_means_not_configured() -> None:
    offsite = status.labelstack_status_record({"failed": True}, "off-site push", 26, NOW, "not configured")
    assert (offsite["line"], offsite["bad"]) == ("off-site push: not configured: ok", False)
    drill = status.labelstack_status_record({"failed": True}, "drill", 192, NOW, "")
    assert (drill["line"], drill["bad"]) == ("drill: none yet: PROBLEM", True)


def test_a_record_is_judged_by_its_result_and_its_age() -> None:
    ok = {"time": "2026-12-07T11:00:00Z", "result": "ok", "backup": "20261207T090000Z", "seconds": 200}
    item = status.labelstack_status_record(slurped(ok), "drill", 192, NOW, "")
    assert item["line"] == (
        "drill: last one ok on 2026-12-07T11:00:00Z (backup 20261207T090000Z), 1.0 h old (limit 192 h): ok"
    )
    assert status.labelstack_status_record(slurped(ok), "drill", 0, NOW, "")["bad"]
    failed = dict(ok, result="failed", failed_part="Refuse a damaged backup")
    item = status.labelstack_status_record(slurped(failed), "drill", 192, NOW, "")
    assert item["bad"]
    assert "last one FAILED at 'Refuse a damaged backup'" in item["detail"]


def test_an_iso_time_with_an_offset_or_fractions_is_read_as_utc() -> None:
    for written in ("2026-12-07T11:00:00+00:00", "2026-12-07T11:00:00.123456Z"):
        item = status.labelstack_status_record(slurped({"time": written, "result": "ok"}), "off-site push", 26, NOW, "")
        assert "1.0 h old" in item["detail"], item


def test_an_unreadable_record_is_bad() -> None:
    item = status.labelstack_status_record({"content": base64.b64encode(b"{").decode()}, "drill", 192, NOW, "")
    assert item["bad"]
    assert item["detail"].startswith("unreadable record")


def test_the_newest_base_backup_is_judged_by_when_it_ended() -> None:
    info = [
        {
            "backup": [
                {"label": "20261207-010000F", "timestamp": {"start": NOW - 7300, "stop": NOW - 7200}},
                {"label": "20261207-100000F", "timestamp": {"start": NOW - 3700, "stop": NOW - 3600}},
            ]
        }
    ]
    item = status.labelstack_status_base_backup({"rc": 0, "stdout": json.dumps(info)}, 26, NOW)
    assert item["line"] == "base backup: 20261207-100000F, 1.0 h old (limit 26 h): ok"
    assert status.labelstack_status_base_backup({"rc": 0, "stdout": json.dumps([{"backup": []}])}, 26, NOW)["bad"]
    broken = status.labelstack_status_base_backup({"rc": 1, "stderr": "ERROR: [055]:\n no stanza"}, 26, NOW)
    assert (broken["bad"], broken["detail"]) == (True, "pgbackrest info failed: ERROR: [055]: no stanza")


def test_the_wal_archive_is_bad_when_failing_waiting_too_long_or_never_used() -> None:
    assert not status.labelstack_status_archive({"rc": 0, "stdout": "35 0 f 0 0"}, 300)["bad"]
    assert status.labelstack_status_archive({"rc": 0, "stdout": "35 2 t 1 20"}, 300)["bad"]
    assert status.labelstack_status_archive({"rc": 0, "stdout": "900 0 f 3 600"}, 300)["bad"]
    assert status.labelstack_status_archive({"rc": 0, "stdout": "-1 0 f 0 0"}, 300)["bad"]
    assert status.labelstack_status_archive({"rc": 2, "stderr": "could not connect"}, 300)["bad"]
