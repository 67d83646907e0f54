"""Monitoring against a running stack (make test-monitoring, inventory/test-monitoring): every target is up,
stopping PostgreSQL fires PostgresDown and LabelStudioUnhealthy and they reach a webhook, starting it resolves
them, and a failed training run fires MLTrainingFailing. Times are recorded as test properties.
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
                       "app-exporter"]  # fmt: skip


@dataclass
class Receiver:
    """Alertmanager's webhook posts, as (arrival time, status, alertname) per alert."""

    events: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: dict) -> None:
        with self.lock:
            self.events += [(time.time(), a["status"], a["labels"]["alertname"]) for a in body.get("alerts", [])]

    def first(self, status: str, alertname: str, since: float) -> float | None:
        with self.lock:
            return next((t for t, s, n in self.events if s == status and n == alertname and t >= since), None)


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
    assert {"prometheus", "alertmanager", "node", "postgres", "blackbox", "app", "ml-backend", "probe"} <= jobs
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
                   "labelstack_backup_last_success_timestamp_seconds"):  # fmt: skip
        assert prometheus(f"query?query={metric}")["result"], f"Prometheus has no {metric}"


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


def test_stopping_the_database_fires_and_starting_it_resolves(
    deployment: Deployment, receiver: Receiver, record_property: Callable[[str, object], None]
) -> None:
    alerts = ("PostgresDown", "LabelStudioUnhealthy")
    db = deployment.container("db")
    stopped = time.time()
    deployment.host.check_output("docker stop %s", db)
    try:
        for name in alerts:
            arrived = wait_or_dump(deployment, lambda n=name: receiver.first("firing", n, stopped), ALERT_TIMEOUT,
                                   f"{name} did not reach the webhook after {db} stopped")  # fmt: skip
            record_property(f"{name}_fired_s", round(arrived - stopped, 1))
    finally:
        started = time.time()
        deployment.host.check_output("docker start %s", db)
    for name in alerts:
        arrived = wait_or_dump(deployment, lambda n=name: receiver.first("resolved", n, started), ALERT_TIMEOUT,
                               f"{name} was not resolved at the webhook after {db} started")  # fmt: skip
        record_property(f"{name}_resolved_s", round(arrived - started, 1))
    wait_all_healthy(deployment, f"restarting {db}")


def test_a_failed_training_run_fires_the_ml_alert(
    deployment: Deployment, receiver: Receiver, record_property: Callable[[str, object], None]
) -> None:
    # A run for a project Label Studio does not have: reading it fails, as a run fails when Label Studio is away.
    post = (
        "import base64, json, os, urllib.request\n"
        "auth = base64.b64encode(f\"{os.environ['BASIC_AUTH_USER']}:{os.environ['BASIC_AUTH_PASS']}\".encode())\n"
        'config = \'<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="A"/>'
        "</Choices></View>'\n"
        "body = json.dumps({'project': '999999.1', 'label_config': config}).encode()\n"
        "request = urllib.request.Request('http://127.0.0.1:9090/train', body, {'Content-Type': 'application/json',"
        " 'Authorization': 'Basic ' + auth.decode()})\n"
        "print(urllib.request.urlopen(request, timeout=10).status)\n"
    )
    forced = time.time()
    out = subprocess.run(["docker", "exec", deployment.container("ml-backend"), "python3", "-c", post],
                         capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "201", out.stderr
    arrived = wait_or_dump(deployment, lambda: receiver.first("firing", "MLTrainingFailing", forced), ALERT_TIMEOUT,
                           "MLTrainingFailing did not reach the webhook after a failed run")  # fmt: skip
    record_property("MLTrainingFailing_fired_s", round(arrived - forced, 1))


def test_a_second_deploy_with_monitoring_changes_nothing(deployment: Deployment) -> None:
    run = run_playbook("site.yml", deployment.inventory)
    assert run.returncode == 0, run.output[-4000:]
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.changed_tasks()
