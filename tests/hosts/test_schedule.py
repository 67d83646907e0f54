"""Scheduled backups on a host without systemd: inventory/test-hosts backs the app host up every minute.

cron was installed while the mirror was reachable (conftest: `--tags docker_engine,labelstack_packages`), the
offline deploy started it directly, and labelstack-backup runs from it with no controller involved.
"""

from __future__ import annotations

import re
import time

import testinfra

from labelstack_testlib import Deployment, run_playbook

from .conftest import INVENTORY

# Every minute (inventory/test-hosts/group_vars/labelstack.yml): a run appears within two cron minutes.
SCHEDULE_TIMEOUT = 150
RUN_LINE = re.compile(r"labelstack-backup\[(\d+)\] (start \((schedule|manual)\)|end: (.*))$")


def cron_file(deployment: Deployment) -> str:
    return f"/etc/cron.d/labelstack-{deployment.project_name}-backup"


def backup_log(deployment: Deployment) -> str:
    return f"/var/log/labelstack-{deployment.project_name}-backup.log"


def scheduled_backups(log: str) -> list[str]:
    """Names of the backups scheduled runs completed, oldest first; fails when two runs overlapped."""
    running: tuple[str, str] | None = None  # (pid, trigger) of the run in progress
    names, current = [], ""
    for line in log.splitlines():
        found = RUN_LINE.search(line)
        if found and found.group(3):
            assert running is None, f"run {found.group(1)} started while run {running[0]} ran:\n{log[-3000:]}"
            running, current = (found.group(1), found.group(3)), ""
        elif found:
            assert running is not None, f"run {found.group(1)} ended without a start:\n{log[-3000:]}"
            assert running[0] == found.group(1), f"run {found.group(1)} ended while run {running[0]} ran"
            if running[1] == "schedule" and found.group(4).startswith("ok ") and current:
                names.append(current)
            running = None
        elif backup := re.search(r"^Backup ([0-9]{8}T[0-9]{6}Z) \(", line):
            current = backup.group(1)
    return names


def test_cron_runs_without_systemd_and_holds_the_schedule(app: testinfra.host.Host, app_deployment: Deployment) -> None:
    assert not app.file("/run/systemd/system").exists, "the test host has systemd: this test is about hosts without"
    assert app.run('kill -0 "$(cat /run/crond.pid)"').rc == 0, "cron does not run on the app host"
    crontab = app.file(cron_file(app_deployment))
    assert crontab.mode == 0o644, oct(crontab.mode)
    line = [entry for entry in crontab.content_string.splitlines() if entry and not entry.startswith("#")]
    assert line == [
        f"* * * * * root {app_deployment.install_dir}/bin/labelstack-backup --scheduled "
        f"--config {app_deployment.install_dir}/backup.conf"
    ], line


def test_scheduled_backups_happen_by_themselves_and_never_overlap(
    app: testinfra.host.Host, app_deployment: Deployment
) -> None:
    """A complete backup written by a scheduled run, with no playbook running; runs (cron's and make backup's)
    are logged one after the other, never two at once (flock)."""
    started = time.monotonic()
    names: list[str] = []
    while time.monotonic() - started < SCHEDULE_TIMEOUT:
        log = app.run("cat %s", backup_log(app_deployment)).stdout
        names = [name for name in scheduled_backups(log) if app.file(f"{app_deployment.backup_dir}/{name}").exists]
        if names:
            break
        time.sleep(5)
    assert names, (
        f"no scheduled backup completed within {SCHEDULE_TIMEOUT} s on the app host; its log "
        f"{backup_log(app_deployment)} ends:\n{log[-3000:]}"
    )
    folder = f"{app_deployment.backup_dir}/{names[-1]}"
    assert app.run("cd %s && sha256sum --check --quiet SHA256SUMS", folder).rc == 0, f"{folder} is not complete"
    assert app.file(folder).mode == 0o700
    print(f"scheduled backups found after {time.monotonic() - started:.0f} s: {names}")


def test_emptied_schedule_removes_the_crontab_and_a_deploy_brings_it_back(
    app: testinfra.host.Host, app_deployment: Deployment
) -> None:
    tags = ("--limit", "app", "--tags", "labelstack_schedule")
    run = run_playbook("site.yml", INVENTORY, *tags, "-e", '{"labelstack_backup_schedule": ""}')
    assert run.returncode == 0, run.output[-3000:]
    assert not app.file(cron_file(app_deployment)).exists, "an empty schedule left the crontab"
    run = run_playbook("site.yml", INVENTORY, *tags)
    assert run.returncode == 0, run.output[-3000:]
    assert app.file(cron_file(app_deployment)).exists
    again = run_playbook("site.yml", INVENTORY, *tags)
    assert again.returncode == 0, again.output[-3000:]
    assert again.recap()["app"]["changed"] == 0, again.changed_tasks("app")
