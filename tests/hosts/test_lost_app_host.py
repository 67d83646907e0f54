"""The app host lost: a fresh server comes back from the off-site copy and the keys the controller kept, alone.

The user's path in the README (Off-site copies): backups pushed with restic over SFTP to another server (here the
db test host's sshd stands in for it), then the app host gone with everything on it and the database's data folder
gone from the db host. A new app host (a new test host container: no Docker, no images, no folders) gets root's
SSH key back, `make deploy`, then `make restore BACKUP=<name> FROM=offsite`: projects, task ids, annotation ids and
file checksums must equal those of the pushed backup.

This module replaces the app host, so conftest runs it after the other modules of tests/hosts; the hosts' smoke
suite that `make test-hosts` runs next then checks the recovered stack.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import testinfra

from labelstack_testlib import REPO, Deployment, PlaybookRun, inventory_host, run_playbook
from ml.mllib import CONFIG, choice_result, make_texts
from statelib import Snapshot, snapshot

from .conftest import INVENTORY, converge_offline_app
from .conftest import testhosts as run_testhosts  # (a module-level test* name would be collected as a test)

DB_ADDRESS = "10.213.7.11"
REPOSITORY = f"sftp:root@{DB_ADDRESS}:/srv/labelstack-offsite"
N_TASKS = 20
N_ANNOTATED = 8


@dataclass(frozen=True)
class Pushed:
    """The backup pushed off-site before the host was lost, and the state it holds."""

    name: str
    state: Snapshot
    run: PlaybookRun


def offsite_variables(**extra: str) -> list[str]:
    return ["-e", json.dumps({"labelstack_offsite_repository": REPOSITORY, **extra})]


def give_root_its_ssh_key(app: testinfra.host.Host, db: testinfra.host.Host) -> None:
    """What the README asks of an SFTP repository: root's key and known_hosts on the app host (restic reads them).
    The db host accepts the test hosts' throwaway key (scripts/testhosts.sh), so that is the key; on a new host it
    is put back the same way, from where the user keeps it."""
    key = (REPO / ".testhosts" / "id_ed25519").read_text()
    db_key = db.check_output("cat /etc/ssh/ssh_host_ed25519_key.pub").rsplit(" ", 1)[0]
    app.check_output("install -d -m 0700 /root/.ssh")
    app.check_output("umask 077 && printf '%%s\\n' %s > /root/.ssh/id_ed25519", key.strip())
    app.check_output("printf '%%s\\n' %s > /root/.ssh/known_hosts", f"{DB_ADDRESS} {db_key}")


def new_backup(run: PlaybookRun) -> str:
    found = re.search(r"Backup ([0-9]{8}T[0-9]{6}Z) \(", run.output)
    assert found, run.output[-3000:]
    return found.group(1)


@pytest.fixture(scope="module")
def pushed(app: testinfra.host.Host, db: testinfra.host.Host, app_deployment: Deployment) -> Pushed:
    """A project with tasks, annotations and an uploaded file, in a backup pushed to the SFTP repository."""
    give_root_its_ssh_key(app, db)
    db.check_output("rm -rf /srv/labelstack-offsite")
    api = app_deployment.api()
    project = api.call("POST", "/api/projects", {"title": f"lost-host-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    rows = make_texts(N_TASKS, seed=17)
    api.call("POST", f"/api/projects/{project['id']}/import", [{"text": text} for text, _ in rows])
    upload = json.dumps([{"data": {"text": "an uploaded file that must come back"}}]).encode()
    response = api.request(
        "POST", f"/api/projects/{project['id']}/import", files={"file": ("probe.json", upload, "application/json")}
    )
    assert response.status_code == 201, response.text
    ids = sorted(t["id"] for t in api.all_tasks(project["id"]))
    for task_id, (_, label) in zip(ids[:N_ANNOTATED], rows, strict=False):
        api.call("POST", f"/api/tasks/{task_id}/annotations?project={project['id']}", {"result": choice_result(label)})
    state = snapshot(api, app_deployment)
    run = run_playbook("backup.yml", INVENTORY, *offsite_variables())
    assert run.returncode == 0, run.output[-5000:]
    return Pushed(new_backup(run), state, run)


def test_the_backup_is_in_the_sftp_repository(
    db: testinfra.host.Host, app_deployment: Deployment, pushed: Pushed
) -> None:
    # restic's repository layout, on the other server; its files are encrypted (test_offsite checks the contents).
    for part in ("config", "keys", "snapshots", "data"):
        assert db.file(f"/srv/labelstack-offsite/{part}").exists, f"no {part} in the SFTP repository"
    record = app_deployment.host.file(f"{app_deployment.backup_dir}/last-offsite.json")
    assert json.loads(record.content_string)["result"] == "ok", record.content_string


def test_a_fresh_app_host_comes_back_from_the_offsite_copy_alone(
    app_deployment: Deployment, pushed: Pushed, record_property: Callable[[str, object], None]
) -> None:
    # Lost: the database's data folder on the db host and the whole app host (its Docker data volume too).
    destroyed = run_playbook("destroy.yml", INVENTORY, "-e", '{"labelstack_destroy_data": true}')
    assert destroyed.returncode == 0, destroyed.output[-4000:]
    run_testhosts("remove", "app")
    run_testhosts("up")
    app = inventory_host(INVENTORY, "app")
    db = inventory_host(INVENTORY, "db")
    assert app.run("command -v docker").rc != 0, "the new app host is not fresh: it has Docker"

    started = time.monotonic()
    converge_offline_app()
    give_root_its_ssh_key(app, db)
    restored = run_playbook(
        "restore.yml",
        INVENTORY,
        *offsite_variables(labelstack_restore_backup=pushed.name, labelstack_restore_from="offsite"),
    )
    seconds = round(time.monotonic() - started, 1)
    assert restored.returncode == 0, restored.output[-6000:]
    assert f"Fetched backup {pushed.name} from off-site snapshot" in " ".join(restored.output.split())
    record_property("fresh_host_recovery_seconds", seconds)
    print(f"fresh app host: deploy and restore from the off-site copy in {seconds} s")

    fresh = dataclasses.replace(app_deployment, host=app)
    after = snapshot(fresh.api(), fresh)
    assert after.projects == pushed.state.projects
    assert after.tasks == pushed.state.tasks
    assert after.annotations == pushed.state.annotations
    assert after.files == pushed.state.files
