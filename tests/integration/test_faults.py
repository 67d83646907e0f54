"""Faults: the app killed mid-import, the database restarted, the Docker daemon restarted (a host reboot).

Each test breaks the test stack for real and asserts it comes back by itself, with nothing lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from labelstack_testlib import RECOVERY_TIMEOUT, Api, Deployment, wait_all_healthy, wait_for
from ml.mllib import CONFIG

LARGE_IMPORT = 20_000


@pytest.fixture
def project(slow_api: Api) -> Iterator[int]:
    created = slow_api.call("POST", "/api/projects", {"title": f"fault-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    yield created["id"]
    slow_api.call("DELETE", f"/api/projects/{created['id']}", ok=(204, 404))


def api_answers(api: Api) -> bool:
    try:
        return api.get("/api/projects", params={"page_size": 1}).status_code == 200
    except requests.RequestException:
        return False


def test_app_killed_mid_import_restarts_and_imports_all_or_nothing(
    deployment: Deployment, slow_api: Api, project: int, record_property: pytest.RecordProperty
) -> None:
    # SIGKILL from outside, as the kernel's OOM killer does. (`docker kill` is an operator's stop: Docker
    # never restarts a container it was told to kill, whatever the restart policy.)
    tasks = [{"text": f"task {i} match goal market rain"} for i in range(LARGE_IMPORT)]
    outcome: dict[str, object] = {}

    def do_import() -> None:
        try:
            outcome["status"] = slow_api.request("POST", f"/api/projects/{project}/import", json=tasks).status_code
        except requests.RequestException as exc:
            outcome["error"] = type(exc).__name__

    importer = threading.Thread(target=do_import)
    importer.start()
    time.sleep(2)  # the request is being processed: parsed, validated, inserting
    app = deployment.container("app")
    started = deployment.host.check_output("docker inspect -f '{{.State.StartedAt}}' %s", app)
    deployment.host.check_output("kill -KILL $(docker inspect -f '{{.State.Pid}}' %s)", app)
    importer.join(timeout=RECOVERY_TIMEOUT)
    assert outcome.get("status") != 201, f"the import finished before the kill: {outcome}"
    wait_for(
        lambda: deployment.host.check_output("docker inspect -f '{{.State.StartedAt}}' %s", app) != started or None,
        60,
        "the killed app container was not restarted by its restart policy",
    )
    wait_all_healthy(deployment, "SIGKILL of the app")
    count = len(slow_api.all_tasks(project))
    record_property("tasks_after_kill", count)
    assert count in (0, LARGE_IMPORT), f"a killed import left {count} of {LARGE_IMPORT} tasks"


def test_app_recovers_from_a_database_restart(deployment: Deployment, slow_api: Api, project: int) -> None:
    slow_api.call("POST", f"/api/projects/{project}/import", [{"text": "before the restart"}])
    deployment.host.check_output("docker restart %s", deployment.container("db"))
    wait_all_healthy(deployment, "a database restart")
    # No manual action: the app must answer again on its own, several times in a row.
    wait_for(
        lambda: all(api_answers(slow_api) for _ in range(3)) or None, 60, "the app did not recover from the db restart"
    )
    slow_api.call("POST", f"/api/projects/{project}/import", [{"text": "after the restart"}])
    assert sorted(t["data"]["text"] for t in slow_api.all_tasks(project)) == ["after the restart", "before the restart"]


def _daemon_restart(deployment: Deployment) -> None:
    """Stop the Docker daemon like a shutdown does, then start it like boot does."""
    host = deployment.host
    if host.file("/run/systemd/system").is_directory:
        host.check_output("systemctl stop docker.socket docker.service && systemctl start docker.service")
        return
    pid = host.check_output("pgrep -x -o dockerd")
    cmdline = host.check_output("tr '\\0' ' ' < /proc/%s/cmdline", pid)
    host.check_output("kill -TERM %s", pid)
    wait_for(lambda: not host.file(f"/proc/{pid}").exists or None, 120, "dockerd did not stop")
    host.check_output(f"setsid nohup {cmdline} >> /var/log/dockerd.log 2>&1 < /dev/null &")


def test_stack_returns_after_a_docker_daemon_restart(
    deployment: Deployment, slow_api: Api, project: int, record_property: pytest.RecordProperty
) -> None:
    slow_api.call("POST", f"/api/projects/{project}/import", [{"text": f"kept {i}"} for i in range(100)])
    before = sorted(t["id"] for t in slow_api.all_tasks(project))
    started = time.monotonic()
    _daemon_restart(deployment)
    wait_for(lambda: deployment.host.run("docker version").rc == 0 or None, 120, "dockerd did not come back")
    wait_all_healthy(deployment, "a Docker daemon restart")
    wait_for(lambda: api_answers(slow_api) or None, 60, "the app does not answer after the daemon restart")
    record_property("seconds_until_healthy", round(time.monotonic() - started, 1))
    assert sorted(t["id"] for t in slow_api.all_tasks(project)) == before
