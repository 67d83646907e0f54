"""Off-site copies with restic (labelstack_offsite_repository): make backup pushes, make restore FROM=offsite fetches.

Runs against the test stack (`make test-recovery`) with an off-site folder on this machine and the restic password
in a controller folder of the test's own (the kept key). It pushes a backup, checks that the repository is
encrypted, that a failed push is recorded and a tampered one refused before anything changes, then loses the
stack's data, database, backups and install folder and brings everything back from the off-site copy alone.
The tests of this module run in order.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labelstack_testlib import Api, Deployment, PlaybookRun, run_playbook
from ml.mllib import CONFIG, choice_result, make_texts
from statelib import Snapshot, snapshot

pytestmark = pytest.mark.recovery

N_TASKS = 30
N_ANNOTATED = 10
FLIP_MIDDLE_BIT = (
    "import sys; f = open(sys.argv[1], 'r+b'); n = f.seek(0, 2) // 2; f.seek(n); b = f.read(1); f.seek(n); "
    "f.write(bytes([b[0] ^ 1]))"
)


@dataclass(frozen=True)
class Offsite:
    """The off-site repository of the test and the password the controller keeps for it."""

    repository: str  # a folder on the app host (this machine)
    password_file: Path  # on the controller
    image: str  # our PostgreSQL image, which has restic

    def variables(self, **extra: object) -> str:
        return json.dumps(
            {
                "labelstack_offsite_repository": self.repository,
                "labelstack_offsite_password_file": str(self.password_file),
                **extra,
            }
        )


@dataclass(frozen=True)
class Pushed:
    """The backup the first test pushes, and the state it holds."""

    run: PlaybookRun
    name: str
    state: Snapshot
    marker: str  # a task text of the backup's project, known to be in the pushed data


@pytest.fixture(scope="module")
def offsite(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offsite]:
    host = deployment.host
    # The host remembers the repository it pushed to and refuses a new one where that was: an earlier run's
    # repository is gone with its folder.
    remembered = f"{deployment.install_dir}/offsite/repository-id"
    host.check_output("rm -f %s", remembered)
    folder = host.check_output("mktemp -d /var/tmp/%s-offsite.XXXXXX", deployment.project_name)
    image = host.check_output("docker inspect --format '{{.Config.Image}}' %s", deployment.container("db"))
    try:
        yield Offsite(folder, tmp_path_factory.mktemp("kept-keys") / "restic-password", image)
    finally:
        host.run("rm -rf %s %s", folder, remembered)


def in_restic_container(
    deployment: Deployment, offsite: Offsite, command: list[str], password_file: str = ""
) -> tuple[int, str]:
    """A command in a one-off container of our PostgreSQL image (it has restic) with the test's repository mounted
    read-only and restic's variables set; (exit code, output)."""
    out = deployment.host.run(
        "docker run --rm --network none --user 0:0 -v %s:/offsite:ro -v %s:/run/restic-password:ro "
        "-e RESTIC_REPOSITORY=/offsite -e RESTIC_PASSWORD_FILE=/run/restic-password "
        + " ".join(["%s"] * (1 + len(command))),
        offsite.repository,
        password_file or str(offsite.password_file),
        offsite.image,
        *command,
    )
    return out.rc, out.stdout + out.stderr


def restic(deployment: Deployment, offsite: Offsite, *args: str, password_file: str = "") -> tuple[int, str]:
    """restic on the test's repository (read-only: no lock, no cache)."""
    return in_restic_container(deployment, offsite, ["restic", "--no-cache", "--no-lock", *args], password_file)


def backup_names(deployment: Deployment) -> list[str]:
    listing = deployment.host.check_output("ls -A %s", deployment.backup_dir).split()
    return sorted(name for name in listing if re.fullmatch(r"[0-9]{8}T[0-9]{6}Z", name))


def new_backup(run: PlaybookRun) -> str:
    """The name of the backup a backup run wrote (its closing message: "Backup <name> (<size>, ...")."""
    found = re.search(r"Backup ([0-9]{8}T[0-9]{6}Z) \(", run.output)
    assert found, run.output[-3000:]
    return found.group(1)


@pytest.fixture(scope="module")
def pushed(api: Api, deployment: Deployment, offsite: Offsite) -> Iterator[Pushed]:
    """A project with tasks, annotations and an uploaded file, backed up and pushed off-site."""
    marker = f"offsite plaintext probe {uuid.uuid4().hex}"
    project = api.call("POST", "/api/projects", {"title": f"offsite-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    pid = project["id"]
    try:
        rows = make_texts(N_TASKS, seed=15)
        api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows])
        upload = json.dumps([{"data": {"text": marker}}]).encode()
        response = api.request(
            "POST", f"/api/projects/{pid}/import", files={"file": ("probe.json", upload, "application/json")}
        )
        assert response.status_code == 201, response.text
        ids = sorted(t["id"] for t in api.all_tasks(pid))
        for task_id, (_, label) in zip(ids[:N_ANNOTATED], rows, strict=False):
            api.call("POST", f"/api/tasks/{task_id}/annotations?project={pid}", {"result": choice_result(label)})
        state = snapshot(api, deployment)
        run = run_playbook("backup.yml", deployment.inventory, "-e", offsite.variables())
        assert run.returncode == 0, run.output[-5000:]
        yield Pushed(run, new_backup(run), state, marker)
    finally:
        api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))


def test_backup_lands_offsite(
    deployment: Deployment, offsite: Offsite, pushed: Pushed, record_property: Callable[[str, object], None]
) -> None:
    host = deployment.host
    rc, out = restic(deployment, offsite, "snapshots", "--json")
    assert rc == 0, out
    snapshots = json.loads(out)
    ours = [s for s in snapshots if pushed.name in s.get("tags", [])]
    assert len(ours) == 1, snapshots
    assert ours[0]["hostname"] == deployment.project_name, ours
    assert ours[0]["paths"] == [f"/backup/{pushed.name}"], ours
    # Every file of the backup is in the snapshot.
    rc, out = restic(deployment, offsite, "ls", "--json", ours[0]["id"])
    assert rc == 0, out
    listed = {json.loads(line).get("name") for line in out.splitlines()[1:]}
    local = set(host.check_output("ls %s/%s", deployment.backup_dir, pushed.name).split())
    assert local <= listed, f"not pushed: {local - listed}"

    status_file = host.file(f"{deployment.backup_dir}/last-offsite.json")
    assert (status_file.mode, status_file.user) == (0o600, "root")
    status = json.loads(status_file.content_string)
    assert status["result"] == "ok", status
    assert ours[0]["id"].startswith(status["snapshot"]), status
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", status["time"]), status
    assert status["seconds"] > 0, status

    # The password: generated on the controller, 0600 there and on the host, never in the output.
    password = offsite.password_file.read_text().strip()
    assert len(password) >= 32
    assert offsite.password_file.stat().st_mode & 0o777 == 0o600
    assert host.file(f"{deployment.install_dir}/offsite/restic-password").mode == 0o600
    assert password not in pushed.run.output, "the off-site password is in the playbook's output"

    size = int(host.check_output("du -sb %s", offsite.repository).split()[0])
    backup_size = int(host.check_output("du -sb %s/%s", deployment.backup_dir, pushed.name).split()[0])
    record_property("push_seconds", status["seconds"])
    record_property("repository_bytes", size)
    record_property("backup_bytes", backup_size)
    print(f"push {status['seconds']} s; repository {size} bytes for a {backup_size}-byte backup")


def test_repository_is_unreadable_without_the_password(
    deployment: Deployment, offsite: Offsite, pushed: Pushed, tmp_path: Path
) -> None:
    host = deployment.host
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    rc, out = restic(deployment, offsite, "snapshots", password_file=str(wrong))
    assert rc != 0, out
    assert "wrong password" in out, out
    # The probe text is in what was pushed (the uploaded file, in app-data.tar.gz), readable with the password...
    archive = f"/backup/{pushed.name}/app-data.tar.gz"
    pipeline = f"restic --no-cache --no-lock dump latest {archive} | tar -xzO | grep -cF '{pushed.marker}'"
    rc, out = in_restic_container(deployment, offsite, ["sh", "-c", pipeline])
    assert rc == 0, f"the probe text is not in the pushed backup: {out}"
    # ...but neither it nor the backup's plain-text files (backup.json, SHA256SUMS) are anywhere in the repository.
    sums = host.check_output("cat %s/%s/SHA256SUMS", deployment.backup_dir, pushed.name).split()[0]
    for text in (pushed.marker, sums, f'"name": "{pushed.name}"'):
        assert host.run("grep -rqaF -e %s %s", text, offsite.repository).rc == 1, f"{text!r} is readable off-site"


def test_failed_push_is_recorded_and_the_local_backup_kept(deployment: Deployment, offsite: Offsite) -> None:
    host = deployment.host
    missing = f"{offsite.repository}-not-mounted"
    before = backup_names(deployment)
    run = run_playbook(
        "backup.yml", deployment.inventory, "-e", offsite.variables(labelstack_offsite_repository=missing)
    )
    assert run.returncode != 0, "a push to a missing folder succeeded"
    assert "but its push to the off-site repository" in " ".join(run.output.split()), run.output[-3000:]
    assert not host.file(missing).exists, "the missing off-site folder was created"
    # (The retention may have removed the oldest one: count the new name, not the folders.)
    new = sorted(set(backup_names(deployment)) - set(before))
    assert len(new) == 1, f"backups before {before}, new {new}"
    assert host.run("cd %s/%s && sha256sum -c --quiet SHA256SUMS", deployment.backup_dir, new[0]).rc == 0
    status = json.loads(host.file(f"{deployment.backup_dir}/last-offsite.json").content_string)
    assert status["result"] == "failed", status
    assert status["snapshot"] is None, status


def test_tampered_repository_is_refused_before_anything_changes(
    deployment: Deployment, api: Api, offsite: Offsite, pushed: Pushed
) -> None:
    host = deployment.host
    tampered = f"{offsite.repository}-tampered"
    local = f"{deployment.backup_dir}/{pushed.name}"
    host.check_output("cp -a %s %s", offsite.repository, tampered)
    # The largest pack: one bit in its middle flipped, its size unchanged.
    pack = host.check_output("ls -S %s/data/*/* | head -1", tampered)
    host.check_output("python3 -c %s %s", FLIP_MIDDLE_BIT, pack)
    host.check_output("mv %s %s.aside", local, local)  # the fetch is refused when the backup is here already
    try:
        state = snapshot(api, deployment)
        listing = host.check_output("ls -A %s", deployment.backup_dir)
        run = run_playbook(
            "restore.yml",
            deployment.inventory,
            "-e",
            offsite.variables(
                labelstack_offsite_repository=tampered,
                labelstack_restore_backup=pushed.name,
                labelstack_restore_from="offsite",
            ),
        )
        assert run.returncode != 0, "a tampered off-site repository was restored from"
        assert f"the off-site repository {tampered} is damaged, nothing was restored" in " ".join(run.output.split()), (
            run.output[-3000:]
        )
        assert snapshot(api, deployment) == state, "the refused restore changed the stack"
        assert host.check_output("ls -A %s", deployment.backup_dir) == listing, "the refused restore wrote a backup"
    finally:
        host.run("mv %s.aside %s", local, local)
        host.run("rm -rf %s", tampered)


def test_everything_comes_back_from_the_offsite_copy_alone(
    deployment: Deployment, api: Api, offsite: Offsite, pushed: Pushed, record_property: Callable[[str, object], None]
) -> None:
    host = deployment.host
    destroyed = run_playbook("destroy.yml", deployment.inventory, "-e", '{"labelstack_destroy_data": true}')
    assert destroyed.returncode == 0, destroyed.output[-4000:]
    host.check_output("rm -rf %s", deployment.backup_dir)
    for gone in (deployment.app_data_dir, deployment.install_dir, deployment.secrets_dir, deployment.backup_dir):
        assert not host.file(gone).exists, f"{gone} is still there"

    started = time.monotonic()
    restored = run_playbook(
        "restore.yml",
        deployment.inventory,
        "-e",
        offsite.variables(labelstack_restore_backup=pushed.name, labelstack_restore_from="offsite"),
    )
    seconds = round(time.monotonic() - started, 1)
    assert restored.returncode == 0, restored.output[-6000:]
    assert f"Fetched backup {pushed.name} from off-site snapshot" in " ".join(restored.output.split())
    record_property("offsite_restore_seconds", seconds)
    print(f"restore from the off-site copy: {seconds} s")

    after = snapshot(api, deployment)
    assert after.projects == pushed.state.projects
    assert after.tasks == pushed.state.tasks
    assert after.annotations == pushed.state.annotations
    assert after.files == pushed.state.files
