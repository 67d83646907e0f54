"""make drill and make backup-status, against a live stack of their own (`make test-recovery` deploys
inventory/test-drill: proxy, monitoring and point-in-time recovery on, removed afterwards).

The drill restores the newest backup into a second, throwaway stack on this machine, tests it and removes it:
it passes on a healthy backup and records that; it fails, naming the damaged file, on a backup with one byte
changed, and records that too; the live stack's containers are never restarted by either. backup-status is
clean right after a backup and a drill, and names an item once a limit is set below its age. The tests of this
module run in order.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from labelstack_testlib import Api, Deployment, make, run_playbook, wait_for
from ml.mllib import CONFIG, choice_result, make_texts

pytestmark = pytest.mark.recovery

N_TASKS = 30
N_ANNOTATED = 12
BACKUP_NAME = r"[0-9]{8}T[0-9]{6}Z"
# A backup name later than any real one, so the drill picks this damaged copy as the newest.
DAMAGED = "29991231T235959Z"


def started_at(deployment: Deployment) -> dict[str, str]:
    """Each long-running container of the stack with the time it (re)started."""
    names = deployment.host.check_output(
        "docker ps --all --filter label=com.docker.compose.project=%s --filter label=com.docker.compose.oneoff=False"
        " --format '{{.Names}}'",
        deployment.project_name,
    ).split()
    assert names, f"no container of {deployment.project_name}"
    out = deployment.host.check_output(
        "docker inspect --format '{{.Name}} {{.State.StartedAt}}'" + " %s" * len(names), *names
    )
    return dict(line.split() for line in out.splitlines())


def drill_stack_is_gone(deployment: Deployment) -> None:
    drill = f"{deployment.project_name}-drill"
    leftovers = deployment.host.check_output("docker ps --all --filter label=com.docker.compose.project=%s -q", drill)
    assert not leftovers, f"containers of {drill} are left: {leftovers}"
    networks = deployment.host.check_output("docker network ls --filter label=com.docker.compose.project=%s -q", drill)
    assert not networks, f"networks of {drill} are left: {networks}"
    folder = f"{deployment.variables.get('labelstack_data_dir')}-drill"
    assert not deployment.host.file(folder).exists, f"the drill's folder {folder} is left"


def last_drill(deployment: Deployment) -> dict[str, object]:
    record = deployment.host.file(f"{deployment.backup_dir}/last-drill.json")
    assert record.exists, "make drill wrote no last-drill.json"
    assert (record.user, record.mode) == ("root", 0o600), f"last-drill.json is {record.user} {oct(record.mode)}"
    return json.loads(record.content_string)


def drill_metrics(deployment: Deployment) -> dict[str, float]:
    """The drill's textfile metrics for node-exporter (the live stack has monitoring on)."""
    path = f"{deployment.variables['labelstack_monitoring_data_dir']}/textfile/labelstack_drill.prom"
    lines = deployment.host.file(path).content_string.splitlines()
    return {name: float(value) for name, value in (line.split() for line in lines if not line.startswith("#"))}


def one_line(output: str) -> str:
    return " ".join(output.split())


@pytest.fixture(scope="module")
def backup(deployment: Deployment, api: Api) -> Iterator[str]:
    """The name of a backup of a project with tasks and annotations."""
    rows = make_texts(N_TASKS, seed=17)
    pid = api.call("POST", "/api/projects", {"title": f"drill-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})["id"]
    try:
        api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows])
        tasks = sorted(task["id"] for task in api.all_tasks(pid))
        for task, (_, label) in zip(tasks[:N_ANNOTATED], rows, strict=False):
            api.call("POST", f"/api/tasks/{task}/annotations?project={pid}", {"result": choice_result(label)})
        run = make("backup", deployment.inventory)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        names = deployment.host.check_output("ls %s", deployment.backup_dir).split()
        yield max(name for name in names if re.fullmatch(BACKUP_NAME, name))
    finally:
        api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))


@pytest.fixture(scope="module")
def live_started(deployment: Deployment, backup: str) -> dict[str, str]:
    """The live stack's containers' start times before any drill."""
    return started_at(deployment)


def test_drill_passes_on_a_healthy_backup_and_records_it(
    deployment: Deployment,
    backup: str,
    live_started: dict[str, str],
    record_property: Callable[[str, object], None],
) -> None:
    began = time.monotonic()
    run = make("drill", deployment.inventory)
    took = time.monotonic() - began
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    record = last_drill(deployment)
    assert (record["result"], record["backup"], record["failed_part"]) == ("ok", backup, ""), record
    assert " passed" in str(record["tests"]), record
    print(f"\ndrill of {backup}: {took:.0f} s in all, {record['seconds']} s recorded")  # the measured figure
    metrics = drill_metrics(deployment)
    assert metrics["labelstack_drill_success"] == 1, metrics
    assert metrics["labelstack_drill_duration_seconds"] == record["seconds"], metrics
    assert time.time() - metrics["labelstack_drill_last_run_timestamp_seconds"] < 120, metrics
    record_property("drill_seconds", round(took))
    drill_stack_is_gone(deployment)


def test_backup_status_is_clean_after_a_backup_and_a_drill(deployment: Deployment, backup: str) -> None:
    run = make("backup-status", deployment.inventory)
    output = one_line(run.stdout)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for line in (
        f"file backup: {backup}",
        "base backup: ",
        "WAL archive: last segment archived",
        "off-site push: not configured: ok",
        "drill: last one ok on ",
    ):
        assert line in output, f"{line!r} not in the status:\n{run.stdout[-3000:]}"


def test_backup_status_names_the_item_past_its_limit(deployment: Deployment) -> None:
    run = make("backup-status", deployment.inventory, "ANSIBLE_ARGS=-e labelstack_status_max_drill_age_hours=0")
    assert run.returncode != 0, "backup-status passed with a drill older than its limit of 0 h"
    assert "drill not ok" in one_line(run.stdout), run.stdout[-3000:]


def test_the_drill_runs_by_itself_on_its_schedule(deployment: Deployment, backup: str) -> None:
    """labelstack_drill_schedule puts `make drill` in the controller's cron (this machine): set to one minute a few
    minutes ahead (so that it runs once, before the damaged copies below exist), the drill runs and records
    itself; with the schedule empty again the crontab is gone."""
    before = last_drill(deployment)
    cron_file = Path(f"/etc/cron.d/labelstack-{deployment.project_name}-drill")
    log = Path.home() / ".labelstack" / deployment.project_name / "scheduled-drill.log"
    # cron reads the controller's local time. A deploy takes one to a few minutes: one that ends after (or within
    # 20 s of) its minute deploys again with a later one (that deploy only changes the crontab's line).
    for _ in range(3):
        at = (datetime.now() + timedelta(minutes=3)).replace(second=0, microsecond=0)
        run = run_playbook(
            "site.yml", deployment.inventory, "-e", json.dumps({"labelstack_drill_schedule": f"{at:%-M %-H} * * *"})
        )
        assert run.returncode == 0, run.output[-4000:]
        if datetime.now() < at - timedelta(seconds=20):
            break
    else:
        pytest.fail(f"three deploys each ended after the minute they scheduled the drill for (the last: {at:%H:%M})")
    try:
        assert "make --no-print-directory drill INVENTORY=" in cron_file.read_text(), cron_file.read_text()
        record = wait_for(
            lambda: (drill := last_drill(deployment))["time"] != before["time"] and drill,
            (at - datetime.now()).total_seconds() + 300,
            f"no scheduled drill recorded by {at:%H:%M} + 5 min (cron file: {cron_file.read_text()!r}; the run's"
            f" output in {log})",
            interval=5,
        )
        assert (record["result"], record["backup"]) == ("ok", backup), (record, log.read_text()[-3000:])
        assert " passed" in log.read_text(), log.read_text()[-3000:]
        assert oct(log.parent.stat().st_mode & 0o777) == "0o700", oct(log.parent.stat().st_mode)
    finally:
        unset = run_playbook("site.yml", deployment.inventory)
    assert unset.returncode == 0, unset.output[-4000:]
    assert not cron_file.exists(), f"{cron_file} is left with the schedule empty"
    # A scheduled drill that started before the crontab went is waited for (it holds the lock while it runs).
    subprocess.run(["flock", f"{log}.lock", "true"], check=True, timeout=600)
    drill_stack_is_gone(deployment)


@contextmanager
def damaged_copy(deployment: Deployment, backup: str, damage: str) -> Iterator[None]:
    """A copy of the backup under a name the drill takes for the newest, damaged by the shell command `damage`
    (run in the copy's folder); removed afterwards."""
    damaged = f"{deployment.backup_dir}/{DAMAGED}"
    deployment.host.check_output("cp -a %s/%s %s", deployment.backup_dir, backup, damaged)
    try:
        deployment.host.check_output("cd %s && sh -c %s", damaged, damage)
        yield
    finally:
        deployment.host.check_output("rm -rf %s", damaged)


def failed_drill(deployment: Deployment, part: str, detail: str) -> None:
    """make drill fails with one line naming `part` and `detail`, records that and leaves no drill stack."""
    run = make("drill", deployment.inventory)
    output = one_line(run.stdout)
    assert run.returncode != 0, "the drill of a damaged backup passed"
    assert f"drill of backup {DAMAGED} FAILED at '{part}" in output, run.stdout[-4000:]
    assert detail in output, run.stdout[-4000:]
    record = last_drill(deployment)
    assert (record["result"], record["backup"]) == ("failed", DAMAGED), record
    assert str(record["failed_part"]).startswith(part), record
    assert detail in str(record["message"]), record
    assert drill_metrics(deployment)["labelstack_drill_success"] == 0
    drill_stack_is_gone(deployment)
    status = make("backup-status", deployment.inventory)
    assert status.returncode != 0, "backup-status passed after a failed drill"
    assert "drill not ok" in one_line(status.stdout), status.stdout[-3000:]


def test_drill_fails_on_a_damaged_backup_naming_the_file(deployment: Deployment, backup: str) -> None:
    # One byte of the app's data archive changed in place: the size stays, only the checksum can tell.
    flip = "printf '\\377' | dd of=app-data.tar.gz bs=1 seek=64 conv=notrunc status=none"
    with damaged_copy(deployment, backup, flip):
        checked = deployment.host.run(
            "cd %s/%s && sha256sum --check --quiet SHA256SUMS", deployment.backup_dir, DAMAGED
        )
        assert checked.rc != 0, "the flipped byte changed nothing"
        failed_drill(deployment, "Refuse a damaged backup", "app-data.tar.gz: FAILED")
    assert last_drill(deployment)["tests"] == ""


def test_drill_fails_on_a_dump_that_does_not_restore_naming_the_step(deployment: Deployment, backup: str) -> None:
    # Cut in half, with checksums written anew: only restoring it can tell.
    cut = (
        'truncate --size="$(( $(stat --format=%s database.dump) / 2 ))" database.dump'
        " && sha256sum database.dump backup.json ./*.tar.gz > SHA256SUMS"
    )
    with damaged_copy(deployment, backup, cut):
        failed_drill(deployment, "Stop with the failed step", "(Restore the dump into it in one transaction)")


def test_the_live_stack_was_not_touched(deployment: Deployment, live_started: dict[str, str]) -> None:
    assert started_at(deployment) == live_started


def test_a_drill_on_the_live_stacks_port_is_refused_before_anything_changes(deployment: Deployment) -> None:
    before = last_drill(deployment)
    run = make("drill", deployment.inventory, f"ANSIBLE_ARGS=-e labelstack_drill_port={deployment.port}")
    assert run.returncode != 0, "a drill on the live stack's port ran"
    assert f"labelstack_drill_port '{deployment.port}'" in one_line(run.stdout), run.stdout[-3000:]
    assert last_drill(deployment) == before, "a refused drill recorded an outcome"
