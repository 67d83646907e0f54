"""make backup / make restore: everything comes back identical; damaged or unknown backups are refused.

Runs against the test stack: it backs it up, destroys its containers and data, restores, and compares.
The tests of this module run in order.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import (
    Api,
    Deployment,
    PlaybookRun,
    finish_playbook,
    run_playbook,
    start_playbook,
    wait_all_healthy,
    wait_for,
)
from ml.mllib import CONFIG, choice_result, make_texts, ml_tool, wait_until_learned
from statelib import Snapshot, snapshot

N_TASKS = 60
BACKUP_NAME = r"[0-9]{8}T[0-9]{6}Z"
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
    # Every data folder of the test stack lives in its labelstack_data_dir, which goes when they leave it empty.
    assert not deployment.host.file(str(deployment.variables["labelstack_data_dir"])).exists
    restored = run_playbook(
        "restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_backup": backup_name(run)})
    )
    assert restored.returncode == 0, restored.output[-6000:]
    # The backup program's settings went with the install folder; the restore writes them as a deploy does.
    assert deployment.host.file(f"{deployment.install_dir}/backup.conf").mode == 0o600
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


def backups(deployment: Deployment) -> list[str]:
    return deployment.host.check_output("ls %s", deployment.backup_dir).split()


def restore(deployment: Deployment, name: str, **extra: object) -> PlaybookRun:
    return run_playbook(
        "restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_backup": name, **extra})
    )


@pytest.fixture
def marker_project(api: Api) -> Iterator[int]:
    """A project made after the backup: the live state differs from the backup's."""
    project = api.call("POST", "/api/projects", {"title": f"after-backup-{uuid.uuid4().hex[:8]}"})
    yield project["id"]
    api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))


def test_keeping_no_backup_is_refused(deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]) -> None:
    before = backups(deployment)
    run = run_playbook("backup.yml", deployment.inventory, "-e", '{"labelstack_backup_keep": 0}')
    assert run.returncode != 0, "labelstack_backup_keep: 0 was accepted"
    assert "labelstack_backup_keep must be at least 1, got '0'" in run.output, run.output[-3000:]
    assert backups(deployment) == before


def test_full_disk_fails_before_writing_and_leaves_nothing(
    deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]
) -> None:
    host = deployment.host
    small = host.check_output("mktemp -d")
    host.check_output("mount -t tmpfs -o size=1m,mode=0700 tmpfs %s", small)
    try:
        # A run that died midway (a killed playbook) left its folder: the next run removes it.
        host.check_output("mkdir %s/20000101T000000Z.partial && head -c 300k /dev/urandom > %s/x", small, small)
        run = run_playbook("backup.yml", deployment.inventory, "-e", json.dumps({"labelstack_backup_dir": small}))
        assert run.returncode != 0, "a backup into a 1 MB file system succeeded"
        assert f"not enough free space in {small} for a backup" in " ".join(run.output.split()), run.output[-3000:]
        assert host.check_output("ls -A %s", small).split() == ["x"], "a partial backup was left behind"
    finally:
        host.run("umount %s && rmdir %s", small, small)


def test_restore_with_the_database_down_is_refused(
    deployment: Deployment, api: Api, backup: tuple[PlaybookRun, Snapshot]
) -> None:
    before = backups(deployment)
    state = snapshot(api, deployment)
    deployment.host.check_output("docker stop %s", deployment.container("db"))
    try:
        run = restore(deployment, backup_name(backup[0]))
    finally:
        deployment.host.check_output("docker start %s", deployment.container("db"))
        wait_all_healthy(deployment, "the database was stopped")
    assert run.returncode != 0, "a restore over a stopped database went ahead without a safety backup"
    assert "so the current state cannot be backed up before the restore" in " ".join(run.output.split())
    assert backups(deployment) == before
    assert snapshot(api, deployment) == state


ACTIVE_PG_RESTORE = "SELECT datname FROM pg_stat_activity WHERE application_name = 'pg_restore' AND state = 'active'"
DATABASES = "SELECT datname FROM pg_database"


def _db_names(deployment: Deployment, query: str) -> list[str]:
    out = deployment.host.run(
        "docker exec %s sh -c %s", deployment.container("db"), f'psql -U "$POSTGRES_USER" -d postgres -Atc "{query}"'
    )
    return out.stdout.split() if out.rc == 0 else []


@pytest.mark.recovery
def test_killed_pg_restore_leaves_the_live_database_unchanged(
    deployment: Deployment, api: Api, backup: tuple[PlaybookRun, Snapshot], marker_project: int
) -> None:
    before = snapshot(api, deployment)
    running = start_playbook(
        "restore.yml", deployment.inventory, "-e", json.dumps({"labelstack_restore_backup": backup_name(backup[0])})
    )
    killed = False
    try:
        deadline = time.monotonic() + 600
        # pg_restore is connected and working on the new database: kill its container (SIGKILL).
        while running.poll() is None and time.monotonic() < deadline:
            if _db_names(deployment, ACTIVE_PG_RESTORE):
                clients = deployment.host.check_output(
                    "docker ps -q --filter label=com.docker.compose.project=%s "
                    "--filter label=com.docker.compose.service=db-client",
                    deployment.project_name,
                ).split()
                killed = bool(clients) and deployment.host.run("docker kill %s", " ".join(clients)).rc == 0
                break
            time.sleep(0.1)
    finally:
        run = finish_playbook(running, 900)
    assert killed, f"pg_restore was never seen running:\n{run.output[-3000:]}"
    assert run.returncode != 0, "the restore succeeded although pg_restore was killed"
    assert "the database restore failed, the live database" in run.output, run.output[-3000:]
    assert not [name for name in _db_names(deployment, DATABASES) if name.endswith("_restore")]
    wait_all_healthy(deployment, "the failed restore")  # brought up again by the restore itself
    assert snapshot(api, deployment) == before


@pytest.mark.recovery
def test_encrypted_backup_restores_with_the_key_and_is_unreadable_without(
    deployment: Deployment, api: Api, backup: tuple[PlaybookRun, Snapshot], marker_project: int
) -> None:
    host = deployment.host
    key = f"/root/.{deployment.project_name}-backup-key-{uuid.uuid4().hex[:8]}"
    host.check_output("ssh-keygen -q -t ed25519 -N '' -C backup -f %s", key)
    try:
        recipient = host.file(f"{key}.pub").content_string.strip()
        made = run_playbook(
            "backup.yml", deployment.inventory, "-e", json.dumps({"labelstack_backup_age_recipients": [recipient]})
        )
        assert made.returncode == 0, made.output[-3000:]
        name = backup_name(made)
        folder = f"{deployment.backup_dir}/{name}"
        state = snapshot(api, deployment)
        files = host.check_output("ls %s", folder).split()
        assert {"secrets.tar.gz.age", "database.dump.age"} <= set(files), files
        assert not [f for f in files if f.endswith((".gz", ".dump"))], f"unencrypted archives: {files}"
        assert host.run("tar --list --gzip --file %s/secrets.tar.gz.age", folder).rc != 0
        secret = host.check_output("cat %s/secret_key", deployment.secrets_dir)
        assert host.run("grep -rqaF -e %s %s", secret, folder).rc == 1, "the secret key is readable in the backup"
        assert host.run("grep -rqa PGDMP %s", folder).rc == 1, "the database dump is readable in the backup"

        count = len(backups(deployment))
        refused = restore(deployment, name)
        assert refused.returncode != 0, "an encrypted backup was restored without its key"
        assert "is encrypted with age: set labelstack_backup_age_identity" in " ".join(refused.output.split())
        assert len(backups(deployment)) == count, "a refused restore wrote a backup"

        api.call("DELETE", f"/api/projects/{marker_project}")
        restored = restore(deployment, name, labelstack_backup_age_identity=key)
        assert restored.returncode == 0, restored.output[-6000:]
        assert snapshot(api, deployment) == state, "the encrypted backup did not bring the state back"
    finally:
        host.run("rm -f %s %s.pub", key, key)


def test_retention_keeps_the_newest(deployment: Deployment, backup: tuple[PlaybookRun, Snapshot]) -> None:
    backups = deployment.backup_dir
    names = []
    for _ in range(2):
        run = run_playbook("backup.yml", deployment.inventory, "-e", '{"labelstack_backup_keep": 2}')
        assert run.returncode == 0, run.output[-3000:]
        names.append(backup_name(run))
    # Only the backup folders: with point-in-time recovery on, pgBackRest's repository lives beside them.
    kept = [name for name in deployment.host.check_output("ls %s", backups).split() if re.fullmatch(BACKUP_NAME, name)]
    assert kept == sorted(names), f"kept {kept}, expected the two newest {names}"
