"""make restore AT=<UTC time>: point-in-time recovery with pgBackRest (labelstack_pitr_enabled).

Runs against a stack with point-in-time recovery on (`make test-recovery` deploys inventory/test-pitr): a writer
creates annotations through the API without pause; at T the test notes what is committed, then deletes a
project; the restore to T brings the project back with every annotation committed before T - 60 s, and none
made after T. The tests of this module run in order.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from labelstack_testlib import (
    Api,
    Deployment,
    PlaybookRun,
    restore_time_text,
    run_playbook,
    wait_all_healthy,
    wal_archive_lag_seconds,
)
from ml.mllib import CONFIG, choice_result, make_texts

pytestmark = pytest.mark.recovery

# The promise under test: what was committed this long before the restore time is all there.
RPO_SECONDS = 60
# The writer runs this long before T, so the RPO window holds annotations on both of its sides.
WRITE_BEFORE_T = 100
# ...and on after T, so annotations made after T exist to be undone (the project is deleted after that).
WRITE_AFTER_T = 15
N_TASKS = 400


def restore_to(deployment: Deployment, moment: str) -> PlaybookRun:
    return run_playbook("restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_time": moment}))


def backup_folders(deployment: Deployment) -> list[str]:
    return deployment.host.check_output("ls %s", deployment.backup_dir).split()


def annotation_ids(api: Api, project: int) -> set[int]:
    return {a["id"] for task in api.all_tasks(project) for a in task.get("annotations") or []}


@dataclass
class Writer:
    """Creates annotations one after another on a project's tasks until stopped, noting when each was sent and
    when its response (the commit) arrived."""

    api: Api
    project: int
    tasks: list[int]
    labels: list[str]
    made: list[tuple[int, float, float]] = field(default_factory=list)  # (annotation id, sent, acknowledged)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            task, label = self.tasks[n % len(self.tasks)], self.labels[n % len(self.labels)]
            sent = time.time()
            response = self.api.post(
                f"/api/tasks/{task}/annotations?project={self.project}", json={"result": choice_result(label)}
            )
            if response.status_code == 201:
                self.made.append((response.json()["id"], sent, time.time()))
            else:
                self.errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            n += 1


@pytest.fixture(scope="module")
def pitr_on(deployment: Deployment) -> None:
    if deployment.credentials.get("LABELSTACK_PITR_ENABLED") != "true":
        pytest.fail(f"point-in-time recovery is off on {deployment.inventory}: test it on inventory/test-pitr")


@pytest.fixture(scope="module")
def project(api: Api, pitr_on: None) -> Iterator[tuple[int, list[int], list[str]]]:
    """A project with tasks: its id, task ids and a label per task."""
    rows = make_texts(N_TASKS, seed=15)
    pid = api.call("POST", "/api/projects", {"title": f"pitr-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})["id"]
    api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows])
    yield pid, sorted(t["id"] for t in api.all_tasks(pid)), [label for _, label in rows]
    api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))


def test_second_deploy_changes_nothing(deployment: Deployment, pitr_on: None) -> None:
    run = run_playbook("site.yml", deployment.inventory)
    assert run.returncode == 0, run.output[-4000:]
    changed = {host: counts["changed"] for host, counts in run.recap().items()}
    assert changed, f"no PLAY RECAP in the output:\n{run.output[-2000:]}"
    assert all(count == 0 for count in changed.values()), (
        f"second deploy changed something: {changed}; tasks: {run.changed_tasks()}"
    )


def test_restore_to_a_time_undoes_a_deleted_project(
    deployment: Deployment,
    api: Api,
    project: tuple[int, list[int], list[str]],
    record_property: Callable[[str, object], None],
) -> None:
    pid, tasks, labels = project
    # A file backup before T: the restore verifies it and takes the files missing from the disk from it.
    backup = run_playbook("backup.yml", deployment.inventory)
    assert backup.returncode == 0, backup.output[-3000:]
    file_backup = max(name for name in backup_folders(deployment) if name[:1].isdigit())
    writer = Writer(api, pid, tasks, labels)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        time.sleep(WRITE_BEFORE_T)
        moment = float(int(time.time()))  # T, in whole seconds as `make restore AT=` takes it
        # What a lost disk would have taken at T: the changes since the newest segment in the repository.
        lag = wal_archive_lag_seconds(deployment.host, deployment.container("db"))
        time.sleep(WRITE_AFTER_T)
    finally:
        writer.stop.set()
        thread.join(timeout=60)
    # After the writer: a deletion racing an annotation's insert fails on its foreign key (HTTP 500).
    api.call("DELETE", f"/api/projects/{pid}")
    assert api.get(f"/api/projects/{pid}").status_code == 404, "the project was not deleted"
    before_t = {aid for aid, _, acked in writer.made if acked < moment}
    after_t = {aid for aid, sent, _ in writer.made if sent > moment}
    assert len(before_t) > 100, f"the writer made too little: {len(writer.made)}; {writer.errors[:3]}"
    assert after_t, f"the writer made nothing after T: {writer.errors[:3]}"

    started = time.monotonic()
    run = restore_to(deployment, restore_time_text(moment))
    took = time.monotonic() - started
    assert run.returncode == 0, run.output[-6000:]
    assert f"from file backup {file_backup}" in " ".join(run.output.split()), run.output[-6000:]
    wait_all_healthy(deployment, "the restore to a time")

    assert api.get(f"/api/projects/{pid}").status_code == 200, "the deleted project is not back"
    present = annotation_ids(api, pid)
    missing = sorted((acked, aid) for aid, _, acked in writer.made if aid in before_t and aid not in present)
    loss = moment - missing[0][0] if missing else 0.0
    print(  # the measured figures belong in the test's output
        f"\nPITR: {len(before_t)} annotations acknowledged before T, {len(missing)} of them lost (loss {loss:.1f} s);"
        f" archive lag at T {lag:.1f} s; restore took {took:.0f} s"
    )
    for name, value in {"loss_seconds": loss, "archive_lag_seconds": lag, "restore_seconds": took}.items():
        record_property(name, round(value, 1))
    assert all(acked >= moment - RPO_SECONDS for acked, _ in missing), (
        f"annotations committed more than {RPO_SECONDS} s before T are missing: {missing[:10]}"
    )
    assert not present & after_t, f"annotations made after T are back: {sorted(present & after_t)[:10]}"
    assert lag <= RPO_SECONDS + 15, f"the newest archived WAL was {lag:.0f} s old at T"


@pytest.mark.parametrize(
    ("moment", "message"),
    [
        ("yesterday noon", "must be a UTC time such as"),
        ("2026-02-30 10:00:00", "is not a valid date and time"),
        ("2000-01-01 00:00:00", "is before the oldest base backup"),
        ("2999-01-01 00:00:00", "is in the future"),
    ],
)
def test_a_bad_time_is_refused_before_anything_changes(
    deployment: Deployment, pitr_on: None, moment: str, message: str
) -> None:
    before = backup_folders(deployment)
    run = restore_to(deployment, moment)
    assert run.returncode != 0, f"a restore to {moment!r} succeeded"
    assert "labelstack_restore_time" in run.output, run.output[-3000:]
    assert f"'{moment}'" in run.output, run.output[-3000:]
    assert message in " ".join(run.output.split()), run.output[-3000:]
    assert backup_folders(deployment) == before, "a refused restore wrote a backup"
