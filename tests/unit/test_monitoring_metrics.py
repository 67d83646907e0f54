"""Metrics for monitoring (labelstack_monitoring_enabled): the ML backend's /metrics and app-exporter's output."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
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


def docker_state(folder: Path, name: str, project: str, **state: object) -> None:
    """A container's state file as Docker writes it (the fields container-exporter reads, plus a secret)."""
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": name.split("-")[1]}
    if state.pop("oneoff", False):
        labels["com.docker.compose.oneoff"] = "True"
    folder.mkdir()
    (folder / "config.v2.json").write_text(json.dumps({
        "Name": f"/{name}", "RestartCount": state.pop("restarts", 0), "State": state,
        "Config": {"Labels": labels, "Env": ["DB_PASSWORD=secret"]}}))  # fmt: skip


def test_container_exporter_reports_the_projects_containers_only(tmp_path: Path) -> None:
    docker_state(tmp_path / "a", "s-app-1", "s", Running=True, Health={"Status": "unhealthy", "FailingStreak": 3})
    docker_state(tmp_path / "b", "s-db-1", "s", Running=False, Restarting=True, restarts=4)
    docker_state(tmp_path / "c", "s-dbclient-1", "s", Running=False, oneoff=True)
    docker_state(tmp_path / "d", "other-app-1", "other", Running=True, Health={"Status": "healthy"})
    (tmp_path / "e").mkdir()  # a container being created: no state file yet
    text = "\n".join(app_exporter.container_lines(app_exporter.read_containers(tmp_path, "s")))
    found = samples(text)
    app, db = 'container="s-app-1",service="app"', 'container="s-db-1",service="db"'
    assert {key: value for key, value in found.items() if "health" in key} == {
        f'labelstack_container_health{{{app},status="{status}"}}': float(status == "unhealthy")
        for status in ("starting", "healthy", "unhealthy")
    }
    assert found[f"labelstack_container_restarts_total{{{db}}}"] == 4
    assert found[f"labelstack_container_running{{{app}}}"] == 1
    assert found[f"labelstack_container_restarting{{{db}}}"] == 1
    assert found["labelstack_containers_up"] == 1
    assert [word for word in ("other", "dbclient", "secret") if word in text] == []


def test_container_exporter_without_dockers_folder_says_so(tmp_path: Path) -> None:
    found = samples("\n".join(app_exporter.container_lines(app_exporter.read_containers(tmp_path / "none", "s"))))
    assert found == {"labelstack_containers_up": 0}


def test_the_rules_and_the_exporters_agree_on_metric_names() -> None:
    """Every labelstack_* metric an alert rule reads is one the ML backend or app-exporter writes."""
    groups = yaml.safe_load((REPO / "compose" / "monitoring" / "prometheus" / "rules.yml").read_text())["groups"]
    exprs = " ".join(rule["expr"] for group in groups for rule in group["rules"])
    written = "".join(
        (REPO / path).read_text()
        for path in (
            "compose/ml-backend/labelstack_ml/metrics.py",
            "compose/monitoring/app-exporter/app_exporter.py",
            "ansible/roles/labelstack/tasks/steps/monitoring-backup-metric.yml",
        )
    )
    read = set(re.findall(r"labelstack_[a-z0-9_]+", exprs))
    assert len(read) >= 8
    for name in read:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        short = base.removeprefix("labelstack_ml_")
        assert base in written or f'"{short}"' in written, f"{name} is read by rules.yml but written nowhere"


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
        # Root (without capabilities: common.yml) only to read Docker's 0600 state files, mounted read-only.
        if name == "container-exporter":
            assert service["volumes"][-1] == "${LABELSTACK_DOCKER_ROOT:?}/containers:/docker-containers:ro"
        else:
            assert not str(service["user"]).startswith("0"), name
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for volume in service.get("volumes", []):
            # Data in host folders or in-memory volumes: nothing `down -v` could destroy.
            assert volume.startswith(("${", "/:/host:ro", "app-metrics:")), f"{name}: {volume}"


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
