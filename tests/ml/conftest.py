"""Fixtures for the ML backend tests: the backend's settings, a project connected to it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import Api, Deployment

from .mllib import CONFIG, MlProject, make_texts, ml_tool


@pytest.fixture(scope="session")
def ml_settings(deployment: Deployment) -> dict[str, str]:
    if "ML_BACKEND_PASSWORD" not in deployment.credentials:
        pytest.exit("FAIL: the deployment has no ML backend credentials: deploy this version first", 1)
    return deployment.credentials


@pytest.fixture(scope="module")
def ml_project(api: Api, ml_settings: dict[str, str]) -> Iterator[MlProject]:
    title = f"ml-test-{uuid.uuid4().hex[:10]}"
    project = api.call("POST", "/api/projects", {"title": title, "label_config": CONFIG})
    try:
        rows = make_texts()
        api.call("POST", f"/api/projects/{project['id']}/import", [{"text": t, "truth": lab} for t, lab in rows])
        truth = {t["id"]: t["data"]["truth"] for t in api.all_tasks(project["id"])}
        out = json.loads(ml_tool(ml_settings, "connect", str(project["id"])))
        yield MlProject(project["id"], truth, out["ml_backend"])
    finally:
        api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))
