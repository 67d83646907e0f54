"""labelstack-backup (the one backup program of an app host) run here against a stand-in database client.

The stand-in answers pg_isready, psql and pg_dump the way db-client does, so the program's own logic (the folder,
checksums, retention by count and age, the lock, the failure path, the run record and the log) is tested without a
stack; the integration and host tests run it against real ones.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from labelstack_testlib import REPO

ROLE = REPO / "ansible" / "roles" / "labelstack"
PROGRAM = ROLE / "files" / "labelstack-backup"
TEMPLATE = ROLE / "templates" / "backup.conf.j2"
NAME = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")

FAKE_CLIENT = """#!/bin/sh
# db-client's stand-in: the last arguments are the client command.
[ -e "$(dirname "$0")/db-down" ] && { echo "no response" >&2; exit 2; }
case "$*" in
  *pg_isready*) exit 0 ;;
  *pg_database_size*) echo 4096 ;;
  *archive_mode*) echo off ;;
  *pg_dump*) printf 'PGDMP stand-in dump\\n' ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


class Stack:
    """A temporary layout: data folders, backup folder, settings, log, record and lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.backups = root / "backups"
        self.log = root / "backup.log"
        self.record = root / "last-backup.json"
        self.lock = root / "backup.lock"
        self.config = root / "backup.conf"
        client = root / "db-client"
        client.write_text(FAKE_CLIENT)
        client.chmod(0o755)
        for part in ("app-data", "secrets"):
            (root / part).mkdir()
            (root / part / "file.txt").write_text(f"{part} content\n")
        self.write_config()

    def write_config(self, keep: int = 7, keep_days: int = 0) -> None:
        self.config.write_text(
            f"""PROJECT=unit
NAME_PATTERN='^[0-9]{{8}}T[0-9]{{6}}Z$'
BACKUP_DIR={self.backups}
KEEP={keep}
KEEP_DAYS={keep_days}
PART_NAMES=(app-data secrets)
PART_DIRS=({self.root}/app-data {self.root}/secrets)
AGE_RECIPIENTS=()
DB_NAME=labelstudio
DB_ADDRESS=db:5432
VERSION_MARKER={self.root}/version
CONFIGURED_VERSION=1.23.2
DB_CLIENT=({self.root}/db-client)
PGBACKREST_EXEC=(false)
PITR=false
PITR_REPO_DIR={self.backups}/pitr
BACKUP_METRIC={self.root}/textfile/labelstack_backup.prom
OFFSITE_METRIC=''
OFFSITE_REPOSITORY=''
OFFSITE_SFTP=false
OFFSITE_KEEP_DAYS=30
OFFSITE_KEEP_LAST=7
OFFSITE_PASSWORD={self.root}/restic-password
RESTIC_DOCKER=(false)
INSTALL_DIR={self.root}
OFFSITE_BACKUPS_PATH=/backup
OFFSITE_PITR_PATH=/pitr
OFFSITE_STATUS={self.backups}/last-offsite.json
LOG_FILE={self.log}
RUN_RECORD={self.record}
PAUSE_FILE={self.root}/backup-paused
LOCK_FILE={self.lock}
"""
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(PROGRAM), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def names(self) -> list[str]:
        if not self.backups.exists():
            return []
        return sorted(path.name for path in self.backups.iterdir() if NAME.match(path.name))


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return Stack(tmp_path)


def test_the_settings_template_defines_every_setting_the_program_reads() -> None:
    defined = set(re.findall(r"^([A-Z][A-Z_]+)=", TEMPLATE.read_text(), re.MULTILINE))
    program = PROGRAM.read_text()
    assigned = set(re.findall(r"\b([A-Z][A-Z_]+)=", program))
    referenced = set(re.findall(r"\$\{?#?([A-Z][A-Z_]+)", program))
    read = referenced - assigned - {"PATH", "SECONDS", "PIPESTATUS", "BASH_SOURCE"}
    assert read <= defined, f"read by the program, not in templates/backup.conf.j2: {sorted(read - defined)}"
    assert defined <= referenced, f"written, never read: {sorted(defined - referenced)}"


def test_a_run_writes_a_complete_private_backup(stack: Stack) -> None:
    run = stack.run()
    assert run.returncode == 0, run.stdout + run.stderr
    (name,) = stack.names()
    folder = stack.backups / name
    assert f"Backup {name} (" in run.stdout, run.stdout
    assert "not encrypted" in run.stdout, run.stdout
    assert sorted(p.name for p in folder.iterdir()) == [
        "SHA256SUMS",
        "app-data.tar.gz",
        "backup.json",
        "database.dump",
        "secrets.tar.gz",
    ]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in folder.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o700
    assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=folder, check=False).returncode == 0
    meta = json.loads((folder / "backup.json").read_text())
    assert meta == {
        "name": name,
        "project_name": "unit",
        "label_studio_version": "1.23.2",
        "database": "labelstudio",
        "parts": ["app-data", "secrets"],
        "encryption": "none",
    }
    record = json.loads(stack.record.read_text())
    assert (record["result"], record["backup"], record["trigger"]) == ("ok", name, "manual"), record
    metric = (stack.root / "textfile" / "labelstack_backup.prom").read_text()
    assert re.search(r"^labelstack_backup_last_success_timestamp_seconds (\d+)$", metric, re.MULTILINE), metric
    log = stack.log.read_text()
    for line in ("start (manual)", "end: ok", f"Backup {name}"):
        assert line in log, log


def test_retention_by_count_and_by_age_keeps_the_newest(stack: Stack) -> None:
    stack.backups.mkdir(mode=0o700)
    old = ["20200101T000000Z", "20200102T000000Z"]
    recent = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 3600))
    for name in [*old, recent]:
        (stack.backups / name).mkdir()
    (stack.backups / "pitr").mkdir()  # pgBackRest's repository beside them is never touched
    stack.write_config(keep=3, keep_days=1)
    run = stack.run()
    assert run.returncode == 0, run.stdout + run.stderr
    # Three kept by count, but the two from 2020 are older than a day.
    assert stack.names()[0] == recent, stack.names()
    assert len(stack.names()) == 2, stack.names()
    assert (stack.backups / "pitr").is_dir()
    stack.write_config(keep=1, keep_days=0)
    assert stack.run("--keep", recent).returncode == 0
    assert recent in stack.names(), stack.names()
    assert len(stack.names()) == 2, stack.names()  # the one a restore restores stays


def test_a_failed_run_leaves_nothing_and_says_why(stack: Stack) -> None:
    (stack.root / "db-down").touch()
    run = stack.run()
    assert run.returncode == 1
    assert "FAIL: the unit database db:5432 does not answer (pg_isready: 2)" in run.stdout + run.stderr, run.stdout
    assert stack.names() == []
    assert not list(stack.backups.glob("*.partial"))
    record = json.loads(stack.record.read_text())
    assert record["result"] == "failed", record
    assert record["failed_part"] == "Check that the database answers", record


def test_a_dump_that_fails_midway_removes_its_folder(stack: Stack) -> None:
    client = stack.root / "db-client"
    client.write_text(FAKE_CLIENT.replace("*pg_dump*) printf 'PGDMP stand-in dump\\n' ;;", "*pg_dump*) exit 1 ;;"))
    run = stack.run()
    assert run.returncode == 1
    assert re.search(r"FAIL: backup \d{8}T\d{6}Z failed and was removed \(Dump the database", run.stdout), run.stdout
    assert stack.names() == []
    assert not list(stack.backups.glob("*"))


def test_a_scheduled_run_skips_while_another_runs_and_a_manual_one_waits(stack: Stack) -> None:
    with stack.lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        scheduled = stack.run("--scheduled")
        manual = stack.run("--wait", "1")
    assert scheduled.returncode == 0, scheduled
    assert scheduled.stdout == "", scheduled
    assert "skipped: another backup of unit runs" in stack.log.read_text()
    assert manual.returncode == 1
    assert "FAIL: another backup of unit has run for over 1 s" in manual.stdout + manual.stderr
    assert stack.names() == []
    scheduled = stack.run("--scheduled")
    assert scheduled.returncode == 0
    assert len(stack.names()) == 1
    assert json.loads(stack.record.read_text())["trigger"] == "schedule"
    (stack.root / "backup-paused").write_text("a restore of X runs")
    assert stack.run("--scheduled").returncode == 0
    assert len(stack.names()) == 1
    assert "skipped: paused while a restore of X runs" in stack.log.read_text()


FAKE_PGBACKREST = """#!/bin/sh
# pgBackRest's stand-in: a backup succeeds, and info lists one full backup as pgbackrest info --output=json does.
case "$1" in
  backup) exit 0 ;;
  info) echo '[{"backup": [{"label": "20261207-120000F", "info": {"repository": {"delta": 4089446}, "size": 36700160},
          "timestamp": {"start": 1796644800, "stop": 1796644806}}]}]' ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


def test_a_base_backup_reports_what_pgbackrest_stored(stack: Stack) -> None:
    fake = stack.root / "pgbackrest"
    fake.write_text(FAKE_PGBACKREST)
    fake.chmod(0o755)
    stack.config.write_text(stack.config.read_text().replace("PGBACKREST_EXEC=(false)", f"PGBACKREST_EXEC=({fake})"))
    run = stack.run("base-backup")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (
        f"Base backup 20261207-120000F in {stack.backups}/pitr: 3.90MB in the repository (35.00MB of database), "
        "taken in 6 s"
    ) in run.stdout, run.stdout
