"""The ML backend's routes with Flask's test client: auth, bad input (400/404/413, never 500), the webhook's trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from labelstack_ml.server import ConfigError, Settings
from labelstack_testlib import REPO

CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="topic" toName="text"><Choice value="A"/></Choices></View>'
)
Backend = Callable[..., FlaskClient]


def setup_project(client: FlaskClient, project: int = 7) -> str:
    response = client.post("/setup", json={"project": f"{project}.1700000000", "schema": CONFIG})
    assert response.status_code == 200, response.json
    return response.json["model_version"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/setup"),
        ("POST", "/predict"),
        ("POST", "/train"),
        ("GET", "/versions"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("auth", ["", "wrong"])
def test_routes_need_basic_auth(backend: Backend, method: str, path: str, auth: str) -> None:
    response = backend(auth=auth).open(path, method=method, json={"project": "7.1"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_health_and_webhook_need_no_auth(backend: Backend) -> None:
    client = backend(auth="")
    assert client.get("/health").json == {"status": "UP", "model_class": "BuiltinModels", "training": []}
    assert client.post("/webhook", json={"action": "PROJECT_UPDATED"}).status_code == 200


def test_setup_answers_the_model_version(backend: Backend) -> None:
    client = backend()
    assert setup_project(client) == "untrained"
    assert client.get("/versions?project=7.1700000000").json == {"versions": ["untrained"]}


@pytest.mark.parametrize("path", ["/setup", "/predict", "/train", "/webhook"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, 2]", "request body must be a JSON object, got [1, 2]"),
        (b'"text"', 'request body must be a JSON object, got "text"'),
        (b'{"project": ', "request body is not JSON: Expecting value"),
        (b"", "request body is not JSON"),
        (b"\xff\xfe", "request body is not JSON"),
    ],
)
def test_a_body_that_is_not_a_json_object_gets_400(backend: Backend, path: str, body: bytes, message: str) -> None:
    response = backend().post(path, data=body, content_type="application/json")
    assert response.status_code == 400, response.data
    assert response.json["error"].startswith(message), response.json


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/setup",
            {"project": "seven", "schema": CONFIG},
            "project must be a project id or '<id>.<timestamp>', got \"seven\"",
        ),
        ("/setup", {"project": True, "schema": CONFIG}, "project must be a project id"),
        ("/setup", {"project": "7.1"}, "schema must be the label config (a string), got null"),
        ("/predict", {"project": "7.1", "tasks": "all"}, 'tasks must be a list of tasks, got "all"'),
        ("/predict", {"project": "7.1", "tasks": [{"data": {}}, 3]}, "tasks[1] must be a task object, got 3"),
        ("/predict", {"project": "7.1", "tasks": [], "params": []}, "params must be an object, got []"),
        ("/train", {"project": None}, "project must be a project id or '<id>.<timestamp>', got null"),
        ("/webhook", {"action": 5}, "action must be a Label Studio event name, got 5"),
        ("/webhook", {"action": "ANNOTATION_CREATED"}, "project must be a project id"),
    ],
)
def test_bad_fields_get_400_naming_the_value(backend: Backend, path: str, body: dict, message: str) -> None:
    client = backend()
    setup_project(client)
    response = client.post(path, json=body)
    assert response.status_code == 400, response.data
    assert response.json["error"] == message or response.json["error"].startswith(message), response.json


def test_a_long_bad_value_is_shortened_in_the_message(backend: Backend) -> None:
    response = backend().post("/setup", json={"project": "x" * 10_000, "schema": CONFIG})
    assert response.status_code == 400
    assert len(response.json["error"]) < 200, response.json


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/predict", {"project": "8.1", "tasks": []}),
        ("/train", {"project": "8.1", "annotations": []}),
        ("/webhook", {"action": "ANNOTATION_CREATED", "project": {"id": 8}}),
        ("/webhook", {"action": "ANNOTATIONS_CREATED", "annotation": [{"project": 8}], "task": [{"project": 8}]}),
    ],
)
def test_unknown_project_gets_404(backend: Backend, path: str, body: dict, tmp_path: Path) -> None:
    setup_project(backend(data_dir=tmp_path), 7)
    # Webhooks as Label Studio sends them: without credentials.
    client = backend(data_dir=tmp_path, auth="" if path == "/webhook" else "secret")
    response = client.post(path, json=body)
    assert response.status_code == 404, response.data
    assert response.json["error"].startswith("project 8 is unknown to this backend"), response.json
    assert client.get("/health").json["training"] == []


def test_versions_of_unknown_or_missing_project_get_404_or_400(backend: Backend) -> None:
    client = backend()
    assert client.get("/versions?project=8.1").status_code == 404
    assert client.get("/versions").status_code == 400


def test_oversize_body_gets_413(backend: Backend) -> None:
    client = backend(max_request_bytes=2048)
    body = json.dumps({"project": "7.1", "tasks": [{"data": {"text": "x" * 4096}}]})
    for path in ("/setup", "/predict", "/train", "/webhook"):
        response = client.post(path, data=body, content_type="application/json")
        assert response.status_code == 413, (path, response.data)
        assert response.json == {"error": "request body larger than 2048 bytes (ML_MAX_REQUEST_BYTES)"}


def test_predict_as_label_studio_sends_it(backend: Backend) -> None:
    client = backend()
    setup_project(client)
    body = {
        "tasks": [{"id": 1, "data": {"text": "hello"}, "annotations": [], "predictions": []}],
        "project": "7.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": None},
    }
    response = client.post("/predict", json=body)
    assert response.status_code == 200
    assert response.json == {"results": []}  # untrained: no prediction, so Label Studio asks again later


def test_predict_registers_a_project_it_describes(backend: Backend) -> None:
    client = backend()
    body = {"project": "9.1", "tasks": [], "label_config": CONFIG}
    assert client.post("/predict", json=body).status_code == 200
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 9}}).status_code == 201


def test_webhook_only_schedules_a_run_of_a_project_set_up_before(backend: Backend, tmp_path: Path) -> None:
    anonymous = backend(data_dir=tmp_path, auth="", train_delay=3.0)
    assert anonymous.post("/setup", json={"project": "7.1", "schema": CONFIG}).status_code == 401
    hook = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "annotation": {"result": "ignored"}}
    assert anonymous.post("/webhook", json=hook).status_code == 404
    setup_project(backend(data_dir=tmp_path))
    response = anonymous.post("/webhook", json={**hook, "tasks": [{"data": {"text": "planted"}}]})
    assert response.status_code == 201, response.data
    assert response.json == {"status": "training scheduled", "project": 7}
    assert anonymous.get("/health").json["training"] == [7]


def test_a_webhook_with_the_backends_credentials_vouches_for_its_project(backend: Backend) -> None:
    response = backend(train_delay=3.0).post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 8}})
    assert response.status_code == 201, response.data


def test_train_as_label_studio_sends_it_schedules_a_run(backend: Backend) -> None:
    client = backend(train_delay=3.0)
    body = {
        "annotations": [{"id": 1, "data": {"text": "hi"}, "annotations": [{"result": []}]}],
        "project": "7.1700000000",
        "label_config": CONFIG,
        "params": {"login": None, "password": None},
    }
    response = client.post("/train", json=body)
    assert response.status_code == 201, response.data
    assert client.get("/health").json["training"] == [7]


def test_known_projects_survive_a_restart(backend: Backend, tmp_path: Path) -> None:
    setup_project(backend(data_dir=tmp_path))
    after_restart = backend(data_dir=tmp_path, auth="", train_delay=3.0)
    hook = {"action": "ANNOTATION_UPDATED", "project": {"id": 7}}
    assert after_restart.post("/webhook", json=hook).status_code == 201


def test_a_full_queue_answers_503(backend: Backend) -> None:
    client = backend(train_delay=3.0, train_max_pending=2)
    for project in (1, 2, 3):
        setup_project(client, project)
    codes = [
        client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": p}}).status_code for p in (1, 2, 3)
    ]
    assert codes == [201, 201, 503]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BASIC_AUTH_USER": "ml", "BASIC_AUTH_PASS": ""}, "BASIC_AUTH_PASS is empty"),
        ({"BASIC_AUTH_USER": ""}, "BASIC_AUTH_USER is empty"),
        ({"ML_TRAIN_WORKERS": "many"}, "ML_TRAIN_WORKERS must be a number, got 'many'"),
        ({"ML_MAX_REQUEST_BYTES": "10"}, "ML_MAX_REQUEST_BYTES must be at least 1024, got '10'"),
        ({"ML_MODEL_CLASS": "nosuchmodule:X"}, "ML_MODEL_CLASS='nosuchmodule:X': cannot import 'nosuchmodule'"),
        ({"ML_MODEL_CLASS": "labelstack_ml.model:Trained"}, "ML_MODEL_CLASS='labelstack_ml.model:Trained' names 0"),
    ],
)
def test_settings_refuse_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"BASIC_AUTH_USER": "ml", "BASIC_AUTH_PASS": "x", **env})
    assert str(info.value).startswith(message), info.value


def test_the_backend_refuses_to_start_without_a_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASIC_AUTH_", "ML_"))}
    env.update(BASIC_AUTH_USER="ml", BASIC_AUTH_PASS="", PYTHONPATH=str(REPO / "compose" / "ml-backend"))
    proc = subprocess.run(
        [sys.executable, "-c", "import labelstack_ml.wsgi"], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "FAIL: BASIC_AUTH_PASS is empty: the backend does not run without basic auth"
    ]
