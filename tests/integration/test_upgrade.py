"""Upgrades: data created on the previous Label Studio minor survives `make deploy` with the pinned version.

A third stack (inventory/test-upgrade) is deployed with the previous minor, filled through the API, then
upgraded by a plain deploy. It is removed with its data and backups when the module ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import (
    REPO,
    Api,
    Deployment,
    PlaybookRun,
    inventory_host,
    load_deployment,
    role_default,
    run_playbook,
)
from ml.mllib import CONFIG, choice_result, make_texts
from statelib import Snapshot, snapshot

# Another inventory (its own project name, port and directories) lets two checkouts run this module at once.
INVENTORY = os.environ.get("LABELSTACK_UPGRADE_INVENTORY", "inventory/test-upgrade")
PREVIOUS = "1.22.0"
PINNED = role_default("labelstack_label_studio_version")
N_TASKS = 40
N_ANNOTATED = 10


def deploy(*extra_vars: dict[str, object]) -> PlaybookRun:
    args = [arg for variables in extra_vars for arg in ("-e", json.dumps(variables))]
    return run_playbook("site.yml", INVENTORY, *args)


def running_version(api: Api) -> str:
    return str(api.call("GET", "/api/version")["release"])


@pytest.fixture(scope="module")
def old_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    host = inventory_host(INVENTORY)
    backup_dir = ""  # known from the stack's credentials.env, once deployed
    try:
        run = deploy({"labelstack_label_studio_version": PREVIOUS})
        if run.returncode != 0:
            pytest.fail(f"deploying Label Studio {PREVIOUS} failed:\n{run.output[-6000:]}")
        stack = load_deployment(INVENTORY, host, tmp_path_factory)
        backup_dir = stack.backup_dir
        yield stack
    finally:
        removed = run_playbook("destroy.yml", INVENTORY, "-e", '{"labelstack_destroy_data": true}')
        assert removed.returncode == 0, removed.output[-3000:]
        if backup_dir:
            host.check_output("rm -rf %s", backup_dir)


@pytest.fixture(scope="module")
def upgrade_api(old_stack: Deployment) -> Api:
    """The session's `api` fixture is the deployment under test's; this stack is another one."""
    return old_stack.api()


@pytest.fixture(scope="module")
def old_data(old_stack: Deployment, upgrade_api: Api) -> Snapshot:
    """Tasks, annotations, imported predictions and an uploaded file, written by the old version."""
    assert running_version(upgrade_api) == PREVIOUS
    project = upgrade_api.call(
        "POST", "/api/projects", {"title": f"upgrade-{uuid.uuid4().hex[:8]}", "label_config": CONFIG}
    )
    pid = project["id"]
    rows = make_texts(N_TASKS, seed=23)
    upgrade_api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows[:-1]])
    upload = json.dumps([{"data": {"text": rows[-1][0]}, "predictions": [{"result": choice_result("Finance")}]}])
    response = upgrade_api.request(
        "POST", f"/api/projects/{pid}/import", files={"file": ("last.json", upload.encode())}
    )
    assert response.status_code == 201, response.text
    ids = sorted(t["id"] for t in upgrade_api.all_tasks(pid))
    for task_id, (_, label) in zip(ids[:N_ANNOTATED], rows, strict=False):
        upgrade_api.call("POST", f"/api/tasks/{task_id}/annotations?project={pid}", {"result": choice_result(label)})
    before = snapshot(upgrade_api, old_stack)
    assert sum(map(len, before.annotations.values())) == N_ANNOTATED
    assert any(before.predictions.values()), "the uploaded prediction is missing"
    return before


@pytest.fixture(scope="module")
def upgrade(old_data: Snapshot) -> PlaybookRun:
    """The upgrade itself: a plain deploy, the pinned version being the role's default."""
    return deploy()


def uploads(state: Snapshot) -> dict[str, str]:
    """Uploaded files (the rest of the data directory is Label Studio's own and may change in an upgrade)."""
    return {path: digest for path, digest in state.files.items() if "/media/upload/" in path}


def test_upgrade_runs_the_pinned_version(upgrade: PlaybookRun, upgrade_api: Api) -> None:
    assert upgrade.returncode == 0, upgrade.output[-6000:]
    assert running_version(upgrade_api) == PINNED


def pre_upgrade_backup(upgrade: PlaybookRun) -> str:
    marker = next((line for line in upgrade.output.splitlines() if "Backup 2" in line), "")
    assert marker, f"the upgrade took no backup:\n{upgrade.output[-4000:]}"
    return marker.split("Backup ", 1)[1].split()[0]


def test_upgrade_backs_up_the_old_version_first(upgrade: PlaybookRun, old_stack: Deployment) -> None:
    folder = f"{old_stack.backup_dir}/{pre_upgrade_backup(upgrade)}"
    meta = json.loads(old_stack.host.file(f"{folder}/backup.json").content_string)
    assert meta["label_studio_version"] == PREVIOUS, meta
    assert old_stack.host.run("cd %s && sha256sum --check --quiet SHA256SUMS", folder).rc == 0


def test_data_of_the_old_version_is_intact(
    upgrade: PlaybookRun, old_stack: Deployment, upgrade_api: Api, old_data: Snapshot
) -> None:
    assert upgrade.returncode == 0
    assert_same_data(snapshot(upgrade_api, old_stack), old_data)


def assert_same_data(after: Snapshot, before: Snapshot) -> None:
    """Projects, tasks, annotations, predictions and uploaded files as they were (uploads must exist)."""
    assert after.projects == before.projects
    assert after.tasks == before.tasks
    assert after.annotations == before.annotations
    assert after.predictions == before.predictions
    assert uploads(after) == uploads(before)
    assert uploads(after), "no uploaded file to compare"


def test_smoke_and_infra_suites_pass_after_the_upgrade(upgrade: PlaybookRun) -> None:
    assert upgrade.returncode == 0
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/smoke", "tests/infra", "--inventory", INVENTORY, "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, f"suites failed on the upgraded stack:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"


def test_going_back_to_the_old_version_is_refused(upgrade: PlaybookRun, upgrade_api: Api) -> None:
    assert upgrade.returncode == 0
    run = deploy({"labelstack_label_studio_version": PREVIOUS})
    assert run.returncode != 0, "a downgrade over a migrated database was accepted"
    assert f"labelstack_label_studio_version {PREVIOUS} is older than the {PINNED}" in " ".join(run.output.split())
    assert running_version(upgrade_api) == PINNED


def test_rollback_to_the_pre_upgrade_backup_gives_back_the_old_version_with_its_data(
    upgrade: PlaybookRun, old_stack: Deployment, upgrade_api: Api, old_data: Snapshot
) -> None:
    """The README's way back: `make restore BACKUP=<the upgrade's backup>`, the inventory unchanged."""
    assert upgrade.returncode == 0
    run = run_playbook(
        "restore.yml", INVENTORY, "-e", json.dumps({"labelstack_restore_backup": pre_upgrade_backup(upgrade)})
    )
    assert run.returncode == 0, run.output[-6000:]
    assert running_version(upgrade_api) == PREVIOUS
    recorded = old_stack.host.file(f"{old_stack.install_dir}/.label-studio-version").content_string.strip()
    assert recorded == PREVIOUS
    assert_same_data(snapshot(upgrade_api, old_stack), old_data)
