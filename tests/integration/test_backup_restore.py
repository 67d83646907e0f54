"""make backup / make restore: everything comes back identical; damaged or unknown backups are refused.

Runs against the test stack: it backs it up, destroys its containers and data, restores, and compares.
The tests of this module run in order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import Api, Deployment, PlaybookRun, run_playbook, wait_for
from ml.mllib import CONFIG, choice_result, make_texts, ml_tool, wait_until_learned
from statelib import Snapshot, snapshot

N_TASKS = 60
N_ANNOTATED = 15


@pytest.fixture(scope="module")
def project_with_everything(api: Api, deployment: Deployment) -> Iterator[int]:
    """Tasks, annotations, predictions (imported and from the trained ML model) and an uploaded file."""
    project = api.call("POST", "/api/projects", {"title": f"backup-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    pid = project["id"]
    try:
        ml_tool(deployment.credentials, "connect", str(pid))
        rows = make_texts(N_TASKS, seed=11)
        api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows[:-1]])
        upload = json.dumps([{"data": {"text": rows[-1][0]}, "predictions": [{"result": choice_result("Sports")}]}])
        files = {"file": ("last.json", upload.encode(), "application/json")}
        response = api.request("POST", f"/api/projects/{pid}/import", files=files)
        assert response.status_code == 201, response.text
        ids = sorted(t["id"] for t in api.all_tasks(pid))
        for task_id, (_, label) in zip(ids[:N_ANNOTATED], rows, strict=False):
            api.call("POST", f"/api/tasks/{task_id}/annotations?project={pid}", {"result": choice_result(label)})
        wait_for(
            lambda: str(api.call("GET", f"/api/projects/{pid}")["model_version"]).startswith("v") or None,
            180,
            "the ML backend never published a trained model for the backup project",
            2,
        )
        yield pid
    finally:
        api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))


@pytest.fixture(scope="module")
def backup(deployment: Deployment, api: Api, project_with_everything: int) -> tuple[PlaybookRun, Snapshot]:
    wait_until_learned(deployment)
    before = snapshot(api, deployment)
    assert any(before.predictions.values()), "the project has no prediction to back up"
    run = run_playbook("backup.yml", deployment.inventory)
    return run, before


def backup_name(run: PlaybookRun) -> str:
    marker = next(line for line in run.output.splitlines() if "Backup 2" in line)
    return marker.split("Backup ", 1)[1].split()[0]


def test_backup_is_complete_and_private(deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]) -> None:
    run, _ = backup
    assert run.returncode == 0, run.output[-4000:]
    folder = f"{deployment.backup_dir}/{backup_name(run)}"
    listing = deployment.host.check_output("cd %s && stat -c '%%a %%U %%n' . *", folder).splitlines()
    assert listing[0] == "700 root .", listing
    names = sorted(line.split()[2] for line in listing[1:])
    # The first ML backend's models are ml-models.tar.gz; every other backend's ml-models-<name>.tar.gz.
    extra_backends = [item.split("=", 1)[0] for item in deployment.credentials["ML_BACKENDS"].split()[1:]]
    assert names == sorted(
        ["SHA256SUMS", "app-data.tar.gz", "backup.json", "database.dump", "ml-models.tar.gz", "secrets.tar.gz"]
        + [f"ml-models-{name}.tar.gz" for name in extra_backends]
    ), names
    assert all(line.startswith("600 root ") for line in listing[1:]), listing
    assert deployment.host.run("cd %s && sha256sum --check --quiet SHA256SUMS", folder).rc == 0


def test_restore_after_destroy_brings_everything_back(
    deployment: Deployment, api: Api, backup: tuple[PlaybookRun, Snapshot]
) -> None:
    run, before = backup
    destroyed = run_playbook("destroy.yml", deployment.inventory, "-e", '{"labelstack_destroy_data": true}')
    assert destroyed.returncode == 0, destroyed.output[-4000:]
    assert not deployment.host.file(deployment.app_data_dir).exists
    restored = run_playbook(
        "restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_backup": backup_name(run)})
    )
    assert restored.returncode == 0, restored.output[-6000:]
    after = snapshot(api, deployment)
    assert after.projects == before.projects
    assert after.tasks == before.tasks
    assert after.annotations == before.annotations
    assert after.predictions == before.predictions
    assert after.files == before.files


def test_restored_model_still_predicts(api: Api, project_with_everything: int) -> None:
    pid = project_with_everything
    version = api.call("GET", f"/api/projects/{pid}")["model_version"]
    created = api.call("POST", f"/api/projects/{pid}/import?return_task_ids=true", [{"text": "stock bank fund"}])
    task = api.call("GET", f"/api/tasks/{created['task_ids'][0]}")
    assert [p["model_version"] for p in task["predictions"]] == [version], task["predictions"]


def _restore_fails(deployment: Deployment, name: str) -> str:
    run = run_playbook("restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_backup": name}))
    assert run.returncode != 0, f"restore of {name} succeeded"
    return run.output


def test_damaged_backup_is_refused_and_nothing_changes(
    deployment: Deployment, api: Api, backup: tuple[PlaybookRun, Snapshot]
) -> None:
    backups = deployment.backup_dir
    damaged = "19990101T000000Z"
    deployment.host.check_output("cp -a %s/%s %s/%s", backups, backup_name(backup[0]), backups, damaged)
    try:
        deployment.host.check_output("printf x >> %s/%s/app-data.tar.gz", backups, damaged)
        before = snapshot(api, deployment)
        count = deployment.host.check_output("ls %s | wc -l", backups)
        output = _restore_fails(deployment, damaged)
        assert f"backup '{damaged}' is damaged" in output, output[-3000:]
        assert "app-data.tar.gz: FAILED" in output, output[-3000:]
        assert snapshot(api, deployment) == before
        assert deployment.host.check_output("ls %s | wc -l", backups) == count, "a refused restore wrote a backup"
    finally:
        deployment.host.check_output("rm -rf %s/%s", backups, damaged)


def test_unknown_backup_is_refused_with_the_available_ones(
    deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]
) -> None:
    output = _restore_fails(deployment, "20000101T000000Z")
    assert "backup '20000101T000000Z' not found" in output, output[-3000:]
    assert backup_name(backup[0]) in output.split("not found", 1)[1], output[-3000:]
    assert "must name a completed backup" in _restore_fails(deployment, "../../etc")


def test_retention_keeps_the_newest(deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]) -> None:
    backups = deployment.backup_dir
    names = []
    for _ in range(2):
        run = run_playbook("backup.yml", deployment.inventory, "-e", '{"labelstack_backup_keep": 2}')
        assert run.returncode == 0, run.output[-3000:]
        names.append(backup_name(run))
    kept = deployment.host.check_output("ls %s", backups).split()
    assert kept == sorted(names), f"kept {kept}, expected the two newest {names}"
