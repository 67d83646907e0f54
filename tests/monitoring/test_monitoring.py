"""Monitoring against a running stack (make test-monitoring, inventory/test-monitoring): every target is up,
stopping PostgreSQL fires PostgresDown and LabelStudioUnhealthy and they reach a webhook, starting it resolves
them (the probes' own 500s meanwhile stay out of the error ratio), a failed training run fires MLTrainingFailing,
filling a small filesystem fires FilesystemAlmostFull, a hung container ContainerUnhealthy and one killed three
times ContainerRestarting; `make down` with monitoring switched off still removes its containers. Times are
recorded as test properties.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from labelstack_testlib import Deployment, run_playbook, wait_all_healthy, wait_for

RECEIVER_PORT = 18599  # inventory/test-monitoring: labelstack_monitoring_webhook_url
# A for-duration of 1 min, the scrape interval, Alertmanager's group wait and a loaded 2-core host.
ALERT_TIMEOUT = 300
MONITORING_SERVICES = ["prometheus", "alertmanager", "node-exporter", "postgres-exporter", "blackbox-exporter",
                       "app-exporter", "container-exporter"]  # fmt: skip
# The filesystem the disk test fills: an ext4 image on a loop device, small so that filling it takes a moment.
FILL_IMAGE = "/var/lib/labelstack-mon-fill.img"
FILL_MOUNT = "/mnt/labelstack-mon-fill"
FILL_SIZE = "32M"
# The container the container tests hang and kill: losing its metrics for a minute harms no other test.
VICTIM = "app-exporter"


@dataclass
class Receiver:
    """Alertmanager's webhook posts, as (arrival time, status, labels) per alert."""

    events: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: dict) -> None:
        with self.lock:
            self.events += [(time.time(), a["status"], a["labels"]) for a in body.get("alerts", [])]

    def first(self, status: str, alertname: str, since: float, **labels: str) -> float | None:
        """When the first alert of that name and status (and those labels) arrived after `since`."""
        wanted = {"alertname": alertname, **labels}
        with self.lock:
            return next((t for t, s, got in self.events
                         if s == status and t >= since and wanted.items() <= got.items()), None)  # fmt: skip


@pytest.fixture(scope="module")
def receiver(deployment: Deployment) -> Iterator[Receiver]:
    """An HTTP server on the address host.docker.internal means inside the containers (Docker's bridge gateway)."""
    gateway = deployment.host.check_output(
        "docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}'"
    ).strip()
    received = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.add(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test reports what arrived."""

    server = ThreadingHTTPServer((gateway, RECEIVER_PORT), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield received
    server.shutdown()


@pytest.fixture(scope="module")
def prometheus(deployment: Deployment) -> Callable[[str], dict]:
    """GET <Prometheus>/api/v1/<path> as JSON data."""
    url = deployment.credentials.get("LABELSTACK_MONITORING_URL")
    if not url:
        pytest.fail(f"{deployment.inventory} is deployed without monitoring (no LABELSTACK_MONITORING_URL)")

    def get(path: str) -> dict:
        response = requests.get(f"{url}/api/v1/{path}", timeout=10)
        response.raise_for_status()
        return response.json()["data"]

    return get


def logs(deployment: Deployment) -> str:
    """The monitoring services' recent logs and the alerts Prometheus has, for a failure's message."""
    compose = ["docker", "compose", "--project-name", deployment.project_name, "--project-directory",
               deployment.install_dir]  # fmt: skip
    run = subprocess.run([*compose, "logs", "--no-color", "--tail", "30", *MONITORING_SERVICES], capture_output=True,
                         text=True, check=False, timeout=60)  # fmt: skip
    return run.stdout[-8000:] + run.stderr[-2000:]


def wait_or_dump(deployment: Deployment, check: Callable[[], object], timeout: float, message: str) -> object:
    try:
        return wait_for(check, timeout, message, 2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- monitoring logs ---\n{logs(deployment)}") from None


def alert_arrives(
    deployment: Deployment, receiver: Receiver, status: str, name: str, since: float, after: str, **labels: str
) -> float:
    """Seconds from `since` until alert `name` (with `labels`) reached the webhook as `status`; fails after
    ALERT_TIMEOUT with the monitoring logs."""
    arrived = wait_or_dump(deployment, lambda: receiver.first(status, name, since, **labels), ALERT_TIMEOUT,
                           f"{name} did not reach the webhook as {status} after {after}")  # fmt: skip
    return round(arrived - since, 1)


def test_every_target_is_up_and_every_probe_succeeds(
    deployment: Deployment, prometheus: Callable[[str], dict], record_property: Callable[[str, object], None]
) -> None:
    def all_up() -> list[dict] | None:
        targets = prometheus("targets")["activeTargets"]
        return targets if targets and all(t["health"] == "up" for t in targets) else None

    try:
        targets = wait_or_dump(deployment, all_up, 180, "not every target is up")
    except AssertionError:
        down = [(t["labels"]["job"], t["scrapeUrl"], t["lastError"]) for t in prometheus("targets")["activeTargets"]
                if t["health"] != "up"]  # fmt: skip
        raise AssertionError(f"targets not up: {down}") from None
    jobs = {t["labels"]["job"] for t in targets}
    assert {"prometheus", "alertmanager", "node", "postgres", "blackbox", "app", "containers", "ml-backend",
            "probe"} <= jobs  # fmt: skip
    record_property("targets_up", len(targets))

    def probes_ok() -> list | None:
        result = prometheus("query?query=probe_success")["result"]
        return result if len(result) == 4 and all(r["value"][1] == "1" for r in result) else None

    wait_or_dump(deployment, probes_ok, 120, "the probes (health, ready, login, tls) do not all succeed")
    cert = prometheus("query?query=probe_ssl_earliest_cert_expiry - time()")["result"]
    assert cert, "no certificate expiry from the proxy's probe"
    assert float(cert[0]["value"][1]) > 14 * 86400
    for metric in ("node_filesystem_avail_bytes", "pg_database_size_bytes", "labelstack_uwsgi_threads",
                   "labelstack_http_requests_total", "labelstack_ml_training_pending",
                   "labelstack_backup_last_success_timestamp_seconds",
                   "labelstack_container_restarts_total"):  # fmt: skip
        assert prometheus(f"query?query={metric}")["result"], f"Prometheus has no {metric}"
    healthy = 'labelstack_container_health{service="app",status="healthy"} == 1'
    assert prometheus(f"query?query={healthy}")["result"], "container-exporter does not report the app healthy"


def test_prometheus_is_behind_the_proxy_with_basic_auth(deployment: Deployment) -> None:
    url = deployment.credentials["LABELSTACK_MONITORING_PROXY_URL"]
    assert url, "the test inventory runs the proxy: Prometheus should be behind it"
    verify = deployment.ca_bundle or True
    anonymous = requests.get(f"{url}/api/v1/status/buildinfo", verify=verify, timeout=10)
    assert anonymous.status_code == 401
    login = (
        deployment.credentials["LABELSTACK_MONITORING_USER"],
        deployment.credentials["LABELSTACK_MONITORING_PASSWORD"],
    )
    wrong = requests.get(f"{url}/api/v1/status/buildinfo", verify=verify, timeout=10, auth=(login[0], "wrong"))
    assert wrong.status_code == 401
    answer = requests.get(f"{url}/api/v1/status/buildinfo", verify=verify, timeout=10, auth=login)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["status"] == "success"
    page = requests.get(f"{url}/graph", verify=verify, timeout=10, auth=login)
    assert page.status_code == 200
    assert "Prometheus" in page.text
    # Every script the Graph page loads is in the image (the Dockerfile trims Debian's JavaScript packages).
    scripts = re.findall(r'<script src="([^"?]+)', page.text)
    assert scripts
    for script in scripts:
        asset = requests.get(f"{url.removesuffix('/prometheus')}{script}", verify=verify, timeout=10, auth=login)
        assert asset.status_code == 200, f"{script}: {asset.status_code}"


def value(prometheus: Callable[[str], dict], query: str) -> float | None:
    """The single value of an instant query, or None when it has no result."""
    result = prometheus(f"query?query={query}")["result"]
    return float(result[0]["value"][1]) if result else None


def test_stopping_the_database_fires_and_starting_it_resolves(
    deployment: Deployment,
    receiver: Receiver,
    prometheus: Callable[[str], dict],
    record_property: Callable[[str, object], None],
) -> None:
    alerts = ("PostgresDown", "LabelStudioUnhealthy")
    db = deployment.container("db")
    errors = 'sum(labelstack_http_requests_total{code="5xx"})'
    errors_before = value(prometheus, errors)
    stopped = time.time()
    deployment.host.check_output("docker stop %s", db)
    try:
        for name in alerts:
            record_property(f"{name}_fired_s", alert_arrives(deployment, receiver, "firing", name, stopped,
                                                             f"{db} stopped"))  # fmt: skip
        # The probes failed for over a minute; their 500s and 503s are theirs, not users' (HighErrorRatio).
        record_property("login_probe_status_during_outage", value(prometheus, 'probe_http_status_code{check="login"}'))
        assert value(prometheus, errors) == errors_before, "the probes' failed requests were counted as the app's 5xx"
    finally:
        started = time.time()
        deployment.host.check_output("docker start %s", db)
    for name in alerts:
        record_property(f"{name}_resolved_s", alert_arrives(deployment, receiver, "resolved", name, started,
                                                            f"{db} started"))  # fmt: skip
    wait_all_healthy(deployment, f"restarting {db}")


def test_a_failed_training_run_fires_the_ml_alert(
    deployment: Deployment, receiver: Receiver, record_property: Callable[[str, object], None]
) -> None:
    # A run for a project Label Studio does not have: reading it fails, as a run fails when Label Studio is away.
    # A new number each run: an alert still firing from an earlier run on the same stack is not sent again.
    project = str(900000 + int(time.time()) % 100000)
    post = (
        "import base64, json, os, urllib.request\n"
        "auth = base64.b64encode(f\"{os.environ['BASIC_AUTH_USER']}:{os.environ['BASIC_AUTH_PASS']}\".encode())\n"
        'config = \'<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="A"/>'
        "</Choices></View>'\n"
        f"body = json.dumps({{'project': '{project}.1', 'label_config': config}}).encode()\n"
        "request = urllib.request.Request('http://127.0.0.1:9090/train', body, {'Content-Type': 'application/json',"
        " 'Authorization': 'Basic ' + auth.decode()})\n"
        "print(urllib.request.urlopen(request, timeout=10).status)\n"
    )
    forced = time.time()
    out = subprocess.run(["docker", "exec", deployment.container("ml-backend"), "python3", "-c", post],
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "201", out.stderr
    fired = alert_arrives(deployment, receiver, "firing", "MLTrainingFailing", forced, "a failed run", project=project)
    record_property("MLTrainingFailing_fired_s", fired)


def test_filling_a_small_filesystem_fires_the_disk_alert(
    deployment: Deployment,
    receiver: Receiver,
    prometheus: Callable[[str], dict],
    record_property: Callable[[str, object], None],
) -> None:
    host = deployment.host
    node_exporter = deployment.container("node-exporter")
    host.check_output("truncate -s %s %s && mkfs.ext4 -q -F -m 0 %s", FILL_SIZE, FILL_IMAGE, FILL_IMAGE)
    host.check_output("mkdir -p %s && mount -o loop %s %s", FILL_MOUNT, FILL_IMAGE, FILL_MOUNT)
    try:
        # The exporter sees the host through a private bind mount of /, made when its container started: a
        # filesystem mounted later shows only after a restart (README, Monitoring).
        host.check_output("docker restart %s", node_exporter)
        avail = f'node_filesystem_avail_bytes{{mountpoint="{FILL_MOUNT}"}}'
        wait_or_dump(deployment, lambda: value(prometheus, avail), 120, f"node-exporter does not report {FILL_MOUNT}")
        # Leave 2 % free: under the alert's 5 %.
        free, size = (int(n) for n in host.check_output("stat -f -c '%%a %%b' %s", FILL_MOUNT).split())
        block = int(host.check_output("stat -f -c %%S %s", FILL_MOUNT))
        filled = time.time()
        host.check_output("fallocate -l %s %s/fill && sync", str((free - size // 50) * block), FILL_MOUNT)
        record_property(
            "FilesystemAlmostFull_fired_s",
            alert_arrives(
                deployment, receiver, "firing", "FilesystemAlmostFull", filled, "filling it", mountpoint=FILL_MOUNT
            ),
        )
        emptied = time.time()
        host.check_output("rm %s/fill && sync", FILL_MOUNT)
        record_property(
            "FilesystemAlmostFull_resolved_s",
            alert_arrives(
                deployment, receiver, "resolved", "FilesystemAlmostFull", emptied, "emptying it", mountpoint=FILL_MOUNT
            ),
        )
    finally:
        host.run("umount %s; rmdir %s; rm -f %s", FILL_MOUNT, FILL_MOUNT, FILL_IMAGE)
        # Its copy of the mount holds the loop device until it restarts.
        host.check_output("docker restart %s", node_exporter)
        wait_all_healthy(deployment, f"restarting {node_exporter}")


def main_pid(deployment: Deployment, container: str) -> str:
    """The host's pid of the running container's main process (a string: testinfra quotes strings only).

    Docker reports pid 0 while a container restarts, and `kill 0` would hit this test's own process group."""
    pid = deployment.host.check_output("docker inspect --format '{{.State.Status}} {{.State.Pid}}' %s", container)
    status, number = pid.split()
    assert status == "running", f"{container} is {status}, not running"
    assert int(number) > 1, f"Docker reports pid {number} for {container}"
    return number


def test_a_hung_container_fires_the_unhealthy_alert(
    deployment: Deployment,
    receiver: Receiver,
    prometheus: Callable[[str], dict],
    record_property: Callable[[str, object], None],
) -> None:
    container = deployment.container(VICTIM)
    pid = main_pid(deployment, container)
    unhealthy = f'labelstack_container_health{{container="{container}",status="unhealthy"}}'
    hung = time.time()
    # SIGSTOP from the host (a container's PID 1 cannot be stopped from inside): it keeps its port, answers nothing.
    deployment.host.check_output("kill -STOP %s", pid)
    try:
        wait_or_dump(deployment, lambda: value(prometheus, unhealthy) == 1, ALERT_TIMEOUT,
                     f"container-exporter does not report {container} unhealthy")  # fmt: skip
        record_property("container_unhealthy_metric_s", round(time.time() - hung, 1))
        record_property(
            "ContainerUnhealthy_fired_s",
            alert_arrives(
                deployment, receiver, "firing", "ContainerUnhealthy", hung, f"{container} hung", container=container
            ),
        )
    finally:
        resumed = time.time()
        deployment.host.check_output("kill -CONT %s", pid)
    record_property(
        "ContainerUnhealthy_resolved_s",
        alert_arrives(
            deployment, receiver, "resolved", "ContainerUnhealthy", resumed, f"{container} resumed", container=container
        ),
    )


def test_a_container_killed_three_times_fires_the_restart_alert(
    deployment: Deployment,
    receiver: Receiver,
    prometheus: Callable[[str], dict],
    record_property: Callable[[str, object], None],
) -> None:
    container = deployment.container(VICTIM)
    # Status, not State.Running: that stays true while Docker waits to restart it.
    count = "docker inspect --format '{{.RestartCount}} {{.State.Status}}' %s"
    restarts = int(deployment.host.check_output(count, container).split()[0])
    started = time.time()
    for _ in range(3):
        # SIGKILL from the host is a crash to Docker (`docker kill` would be a stop): its restart policy restarts it.
        deployment.host.check_output("kill -KILL %s", main_pid(deployment, container))
        restarts += 1
        wait_or_dump(deployment, lambda n=restarts: deployment.host.check_output(count, container) == f"{n} running",
                     60, f"Docker did not restart {container} after it was killed")  # fmt: skip
    metric = f'labelstack_container_restarts_total{{container="{container}"}}'
    wait_or_dump(deployment, lambda: value(prometheus, metric) == restarts, 60,
                 f"container-exporter does not report {restarts} restarts of {container}")  # fmt: skip
    record_property(
        "ContainerRestarting_fired_s",
        alert_arrives(deployment, receiver, "firing", "ContainerRestarting", started, "3 kills", container=container),
    )
    wait_all_healthy(deployment, f"killing {container}")


def test_a_second_deploy_with_monitoring_changes_nothing(deployment: Deployment) -> None:
    run = run_playbook("site.yml", deployment.inventory)
    assert run.returncode == 0, run.output[-4000:]
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.changed_tasks()


def test_down_with_monitoring_switched_off_still_removes_its_containers(deployment: Deployment) -> None:
    """`make down` removes what the last deploy started, whatever the current settings say (last: it stops all)."""
    run = run_playbook("down.yml", deployment.inventory, "-e", json.dumps({"labelstack_monitoring_enabled": False}))
    assert run.returncode == 0, run.output[-4000:]
    left = deployment.host.check_output(
        "docker ps --all --filter label=com.docker.compose.project=%s --format '{{.Names}}'", deployment.project_name
    )
    assert left == "", f"make down left these containers: {left.split()}"
