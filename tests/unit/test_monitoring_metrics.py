"""Metrics for monitoring (labelstack_monitoring_enabled): the ML backend's /metrics and app-exporter's output."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import socketserver
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient

from labelstack_ml.metrics import Metrics, version_timestamp
from labelstack_testlib import REPO, load_module, wait_for

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="topic" toName="text"><Choice value="A"/></Choices></View>'
)
app_exporter = load_module("app_exporter", REPO / "compose" / "monitoring" / "app-exporter" / "app_exporter.py")


def samples(text: str) -> dict[str, float]:
    """The exposition's samples, name{labels} -> value (comments dropped)."""
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_a_failed_training_run_is_counted_and_marks_the_project(backend: Callable[..., FlaskClient]) -> None:
    # No Label Studio answers the unit tests' backend: every run fails reading the project.
    client = backend(train_delay=0.0)
    body = {"project": "7.1700000000", "label_config": CONFIG, "annotations": []}
    assert client.post("/train", json=body).status_code == 201

    def failed() -> dict[str, float] | None:
        found = samples(client.get("/metrics").get_data(as_text=True))
        # The run counts itself before the pool marks it finished: wait for both.
        done = found.get('labelstack_ml_training_failures_total{project="7"}') == 1
        return found if done and found["labelstack_ml_training_pending"] == 0 else None

    found = wait_for(failed, 30, "the failed run never showed in /metrics", 0.1)
    assert found['labelstack_ml_trainings_total{project="7"}'] == 1
    assert found['labelstack_ml_training_last_failed{project="7"}'] == 1
    assert 'labelstack_ml_last_training_success_timestamp_seconds{project="7"}' not in found


def test_predict_latency_is_a_histogram(backend: Callable[..., FlaskClient]) -> None:
    client = backend()
    for _ in range(3):
        body = {"project": "9.1", "tasks": [{"id": 1, "data": {"text": "hi"}}], "label_config": CONFIG}
        assert client.post("/predict", json=body).status_code == 200
    found = samples(client.get("/metrics").get_data(as_text=True))
    assert found["labelstack_ml_predict_seconds_count"] == 3
    assert found['labelstack_ml_predict_seconds_bucket{le="+Inf"}'] == 3
    assert found['labelstack_ml_predict_seconds_bucket{le="10.0"}'] == 3


def test_a_good_run_clears_the_failure_and_the_model_version_has_its_time() -> None:
    metrics = Metrics()
    metrics.training(3, 1.5, ok=False)
    metrics.training(3, 0.5, ok=True)
    found = samples(metrics.render(0, {3: "v2-20261206120000", 4: "0.0.1"}))
    assert found['labelstack_ml_training_last_failed{project="3"}'] == 0
    assert found['labelstack_ml_training_seconds_total{project="3"}'] == 2.0
    assert found['labelstack_ml_model_version_timestamp_seconds{project="3"}'] == version_timestamp("v2-20261206120000")
    assert version_timestamp("v2-20261206120000") == 1796558400.0  # 2026-12-06 12:00:00 UTC
    assert 'labelstack_ml_model_version_timestamp_seconds{project="4"}' not in found  # not our version format


STATS = {
    "listen_queue": 2,
    "listen_queue_errors": 1,
    "workers": [
        {
            "requests": 10,
            "exceptions": 1,
            "harakiri_count": 0,
            "respawn_count": 1,
            "cores": [{"in_request": 1, "vars": ["HTTP_COOKIE=sessionid=secret"]}, {"in_request": 0}],
        },
        {"requests": 5, "exceptions": 0, "harakiri_count": 2, "respawn_count": 1, "cores": [{"in_request": 1}]},
    ],
}


def test_app_exporter_sums_workers_and_never_passes_request_variables_on(tmp_path: Path) -> None:
    text = app_exporter.render(STATS, tmp_path)
    expected = {"up": 1, "threads": 3, "threads_busy": 2, "listen_queue": 2, "requests_total": 15, "harakiri_total": 2}
    found = samples(text)
    assert {name: found[f"labelstack_uwsgi_{name}"] for name in expected} == expected
    assert "secret" not in text


def test_app_exporter_without_uwsgi_says_so() -> None:
    assert samples(app_exporter.render(None, Path("/nonexistent")))["labelstack_uwsgi_up"] == 0


def test_app_exporter_sums_the_processes_request_files(tmp_path: Path) -> None:
    bounds = [0.1, 1.0]
    (tmp_path / "11.json").write_text(
        json.dumps({"codes": {"2xx": 8, "5xx": 2}, "le": bounds, "buckets": [5, 9], "count": 10, "sum": 4.0})
    )
    (tmp_path / "12.json").write_text(
        json.dumps({"codes": {"2xx": 3}, "le": bounds, "buckets": [1, 2], "count": 3, "sum": 1.5})
    )
    (tmp_path / "13.json.1.partial").write_text("{half")  # a file being written is not read
    found = samples(app_exporter.render(None, tmp_path))
    codes = {code: found[f'labelstack_http_requests_total{{code="{code}"}}'] for code in ("2xx", "4xx", "5xx")}
    assert codes == {"2xx": 11, "4xx": 0, "5xx": 2}
    buckets = {
        le: found[f'labelstack_http_request_duration_seconds_bucket{{le="{le}"}}'] for le in ("0.1", "1.0", "+Inf")
    }
    assert buckets == {"0.1": 6, "1.0": 11, "+Inf": 13}
    assert found["labelstack_http_request_duration_seconds_sum"] == 5.5


def inspected(name: str, project: str, restarts: int = 0, **state: object) -> dict:
    """A container as Docker's API inspects it (the fields container-exporter reads, plus a secret)."""
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": name.split("-")[1]}
    return {"Id": name, "Name": f"/{name}", "RestartCount": restarts, "State": state,
            "Config": {"Labels": labels, "Env": ["DB_PASSWORD=secret"]}}  # fmt: skip


def fake_docker(containers: list[dict], oneoff: tuple[str, ...] = ()) -> Callable[[str], object]:
    """Docker's API for read_containers: the project's listing (one-off ones labelled so), then each inspection."""

    def get(path: str) -> object:
        if path.startswith("/containers/json?all=1&filters="):
            labels = {"com.docker.compose.project": "s"}
            return [{"Id": c["Id"], "Labels": {**labels, "com.docker.compose.oneoff": str(c["Id"] in oneoff)}}
                    for c in containers]  # fmt: skip
        found = [c for c in containers if path == f"/containers/{c['Id']}/json"]
        if not found:
            raise OSError("Docker answered 404")
        return found[0]

    return get


def test_container_exporter_reports_health_and_restarts_and_nothing_else() -> None:
    app = inspected("s-app-1", "s", Status="running", Health={"Status": "unhealthy", "FailingStreak": 3})
    # Docker's state while it waits to restart a container: Running stays true.
    db = inspected("s-db-1", "s", restarts=4, Status="restarting", Running=True, Restarting=True)
    job = inspected("s-dbclient-1", "s", Status="exited")
    docker = fake_docker([app, db, job], oneoff=("s-dbclient-1",))
    text = "\n".join(app_exporter.container_lines(app_exporter.read_containers("s", docker)))
    found = samples(text)
    app_labels, db_labels = 'container="s-app-1",service="app"', 'container="s-db-1",service="db"'
    assert {key: value for key, value in found.items() if "health" in key} == {
        f'labelstack_container_health{{{app_labels},status="{status}"}}': float(status == "unhealthy")
        for status in ("starting", "healthy", "unhealthy")
    }
    assert found[f"labelstack_container_restarts_total{{{db_labels}}}"] == 4
    assert found[f"labelstack_container_running{{{app_labels}}}"] == 1
    assert found[f"labelstack_container_running{{{db_labels}}}"] == 0
    assert found[f"labelstack_container_restarting{{{db_labels}}}"] == 1
    assert found["labelstack_containers_up"] == 1
    assert [word for word in ("dbclient", "secret") if word in text] == []


def test_container_exporter_skips_a_container_removed_after_the_listing() -> None:
    app = inspected("s-app-1", "s", Status="running")
    listing = fake_docker([app, inspected("s-gone-1", "s")])
    docker = fake_docker([app])
    containers = app_exporter.read_containers("s", lambda path: (listing if "?" in path else docker)(path))
    assert [c["Name"] for c in containers] == ["/s-app-1"]


def test_container_exporter_without_docker_says_so(tmp_path: Path) -> None:
    def unreachable(path: str) -> object:
        return app_exporter.docker_get(path, socket_path=str(tmp_path / "none.sock"), timeout=1)

    found = samples("\n".join(app_exporter.container_lines(app_exporter.read_containers("s", unreachable))))
    assert found == {"labelstack_containers_up": 0}


def test_docker_get_speaks_http_over_a_unix_socket(tmp_path: Path) -> None:
    """docker_get against a server on a Unix socket, as Docker's: GET only, its JSON back, other statuses raise."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.command, self.path))
            body = json.dumps([{"Id": "x"}]).encode() if self.path == "/containers/json" else b"{}"
            self.send_response(200 if self.path == "/containers/json" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

    class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
            request, _ = super().get_request()
            return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) client address

    path = str(tmp_path / "docker.sock")
    server = UnixServer(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert app_exporter.docker_get("/containers/json", socket_path=path) == [{"Id": "x"}]
        with pytest.raises(OSError, match="404"):
            app_exporter.docker_get("/containers/y/json", socket_path=path)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("GET", "/containers/json"), ("GET", "/containers/y/json")]


def test_the_rules_and_the_exporters_agree_on_metric_names() -> None:
    """Every labelstack_* metric an alert rule reads is one the ML backend, app-exporter, a backup or a drill
    writes."""
    groups = yaml.safe_load((REPO / "compose" / "monitoring" / "prometheus" / "rules.yml").read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    written = "".join(
        (REPO / path).read_text()
        for path in (
            "compose/ml-backend/labelstack_ml/metrics.py",
            "compose/monitoring/app-exporter/app_exporter.py",
            "ansible/roles/labelstack/files/labelstack-backup",
            "ansible/roles/labelstack/tasks/steps/drill-record.yml",
        )
    )
    read = set(re.findall(r"labelstack_[a-z0-9_]+", exprs))
    assert len(read) >= 8
    for name in read:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        short = base.removeprefix("labelstack_ml_")
        assert base in written or f'"{short}"' in written, f"{name} is read by rules.yml but written nowhere"


def test_every_alert_has_a_runbook_line_and_a_unit_test_that_fires_it() -> None:
    prometheus = REPO / "compose" / "monitoring" / "prometheus"
    groups = yaml.safe_load((prometheus / "rules.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    runbook = set(re.findall(r"^\| `(\w+)` \|", (REPO / "README.md").read_text(), re.MULTILINE))
    cases = yaml.safe_load((prometheus / "rules.test.yml").read_text())["tests"]
    fired = {check["alertname"] for case in cases for check in case["alert_rule_test"] if check["exp_alerts"]}
    assert len(alerts) >= 17
    assert sorted(alerts - runbook) == [], "alerts without a line in the README's alert table"
    assert sorted(alerts - fired) == [], "alerts no case of rules.test.yml expects to fire"


def test_every_monitoring_service_is_hardened_checked_and_published_on_loopback_only() -> None:
    services = yaml.safe_load((REPO / "compose" / "monitoring.yml").read_text())["services"]
    # app and proxy are docker-compose.yml's; this file only adds to them.
    added = {name: service for name, service in services.items() if name not in ("app", "proxy")}
    assert set(added) == {"app-exporter", "container-exporter", "prometheus", "alertmanager", "node-exporter",
                          "postgres-exporter", "blackbox-exporter"}  # fmt: skip
    for name, service in added.items():
        assert service["extends"] == {"file": "common.yml", "service": "hardened"}, name
        assert service["read_only"] is True, name
        assert service["healthcheck"]["test"], name
        assert not str(service["user"]).startswith("0"), name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            # Data in host folders or in-memory volumes: nothing `down -v` could destroy.
            assert volume.startswith(("${", "/:/host:ro", "app-metrics:", "/var/run/docker.sock:")), f"{name}: {volume}"
    # Docker's socket (no read-only mode exists) goes to container-exporter alone, whose only network is internal.
    assert [name for name, service in added.items() if "/var/run/docker.sock:/var/run/docker.sock" in
            service.get("volumes", [])] == ["container-exporter"]  # fmt: skip
    assert added["container-exporter"]["networks"] == ["container-metrics"]
    assert yaml.safe_load((REPO / "compose" / "monitoring.yml").read_text())["networks"]["container-metrics"] == {
        "internal": True
    }


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool missing (scripts/check-alert-rules.sh installs it)"
)
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """The Grafana dashboard's queries as recording rules, so that promtool parses each one."""
    panels = json.loads((REPO / "compose" / "monitoring" / "grafana" / "labelstack-dashboard.json").read_text())[
        "panels"
    ]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)]}]}  # fmt: skip
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    check = subprocess.run(["promtool", "check", "rules", tmp_path / "dashboard.yml"], capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_app_exporter_leaves_the_old_network_namespace_only_after_seeing_uwsgi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreachable stats from the start (the app migrating) are waited for; lost ones end the process."""
    answers = iter([None, None, None, STATS, None, None, None])
    monkeypatch.setattr(app_exporter, "read_stats", lambda: next(answers))
    clock = iter(range(0, 1000, 30))
    monkeypatch.setattr(app_exporter.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(app_exporter.time, "sleep", lambda _: None)

    class Exited(Exception):
        pass

    def leave(code: int) -> None:
        raise Exited(code)

    monkeypatch.setattr(app_exporter.os, "_exit", leave)
    with pytest.raises(Exited):
        app_exporter.watch_stats(interval=10, patience=60)
    assert list(answers) == []  # three misses before the stats were seen did not count; 60 s of misses after did
