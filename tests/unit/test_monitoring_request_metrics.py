"""The app's request counters and readiness check (compose/monitoring/app), with Django's two names stubbed:
the tooling venv has no Django, and the module only needs a connection and HttpResponse."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from labelstack_testlib import REPO, load_module


class Response:
    def __init__(self, content: str = "", status: int = 200, content_type: str = "") -> None:
        self.content, self.status_code, self.content_type = content, status, content_type


class Cursor:
    fail = False

    def __enter__(self) -> Cursor:
        if Cursor.fail:
            raise ConnectionError("database gone")
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str) -> None:
        assert sql == "SELECT 1"


@pytest.fixture
def metrics_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> types.ModuleType:
    db = types.ModuleType("django.db")
    db.connection = types.SimpleNamespace(cursor=Cursor)  # type: ignore[attr-defined]
    http = types.ModuleType("django.http")
    http.HttpRequest = object  # type: ignore[attr-defined]
    http.HttpResponse = Response  # type: ignore[attr-defined]
    for name, module in {"django": types.ModuleType("django"), "django.db": db, "django.http": http}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("LABELSTACK_METRICS_DIR", str(tmp_path))
    path = REPO / "compose" / "monitoring" / "app" / "labelstack_request_metrics.py"
    module = load_module("labelstack_request_metrics", path)
    monkeypatch.setattr(module, "FLUSH_SECONDS", 0.0)
    return module


def request(path: str, agent: str = "Mozilla/5.0") -> types.SimpleNamespace:
    return types.SimpleNamespace(path=path, headers={"User-Agent": agent})


def test_responses_are_counted_by_class_into_the_process_file(metrics_module: types.ModuleType, tmp_path: Path) -> None:
    statuses = iter([200, 302, 503])
    middleware = metrics_module.RequestMetricsMiddleware(lambda _: Response(status=next(statuses)))
    for _ in range(3):
        middleware(request("/projects/"))

    def failing(_: object) -> Response:
        raise RuntimeError("view bug")

    with pytest.raises(RuntimeError):
        metrics_module.RequestMetricsMiddleware(failing)(request("/api/x"))
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1  # one process, one file
    snapshot = json.loads(files[0].read_text())
    assert snapshot["codes"] == {"2xx": 1, "3xx": 1, "5xx": 2}
    assert snapshot["count"] == 4
    assert snapshot["buckets"][-1] == 4
    assert snapshot["le"] == list(metrics_module.BUCKETS)


def test_ready_answers_503_without_the_database(metrics_module: types.ModuleType) -> None:
    middleware = metrics_module.RequestMetricsMiddleware(lambda _: Response(status=404))
    assert middleware(request("/labelstack/ready")).status_code == 200
    Cursor.fail = True
    try:
        answer = middleware(request("/labelstack/ready"))
    finally:
        Cursor.fail = False
    assert answer.status_code == 503
    assert "ConnectionError" in answer.content


def test_monitoring_requests_are_not_counted(metrics_module: types.ModuleType, tmp_path: Path) -> None:
    """The probes' and Docker's healthcheck's requests stay out of the error ratio; a user's 500 counts."""
    middleware = metrics_module.RequestMetricsMiddleware(lambda _: Response(status=500))
    assert middleware(request("/user/login/", agent=metrics_module.PROBE_AGENT)).status_code == 500
    assert middleware(request("/health", agent="Python-urllib/3.11")).status_code == 500
    assert not list(tmp_path.glob("*.json"))
    middleware(request("/user/login/"))
    snapshot = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert snapshot["codes"] == {"5xx": 1}
