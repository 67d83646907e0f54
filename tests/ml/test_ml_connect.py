"""A project connected the way Label Studio teaches (Settings -> Model -> Connect Model, i.e. POST /api/ml with
the URL from credentials.env and basic auth), not by labelstack-ml: it learns, "Start Training" retrains, old
predictions are pruned, and the backend refuses bad input with 4xx.

The tests of this module run in order against one project, like a new user's first session.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import Api, Deployment, wait_for

from .mllib import (
    CONFIG,
    MlProject,
    annotate,
    backend_post,
    connect_as_the_ui_does,
    label_of,
    make_texts,
    retrieve_predictions,
    wait_until_learned,
)

N_TRAIN = 40
TRAIN_TIMEOUT = 180
BACKEND_TITLE = "my text model"  # what a user types as "Name" in the Connect Model form


@pytest.fixture(scope="module")
def ui_project(api: Api, ml_settings: dict[str, str]) -> Iterator[MlProject]:
    """300 synthetic texts (uncertainty sampling chosen at creation), connected as the UI does."""
    body = {"title": f"ml-ui-{uuid.uuid4().hex[:10]}", "label_config": CONFIG, "sampling": "Uncertainty sampling"}
    project = api.call("POST", "/api/projects", body)
    try:
        rows = make_texts()
        api.call("POST", f"/api/projects/{project['id']}/import", [{"text": t, "truth": lab} for t, lab in rows])
        truth = {t["id"]: t["data"]["truth"] for t in api.all_tasks(project["id"])}
        backend = connect_as_the_ui_does(api, ml_settings, project["id"], ml_settings["ML_BACKEND_URL"], BACKEND_TITLE)
        yield MlProject(project["id"], truth, backend["id"])
    finally:
        api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))


def backend_version(api: Api, project: MlProject) -> str:
    """The version the backend reports on /setup (Label Studio asks it again on every GET of the backend)."""
    return api.call("GET", f"/api/ml/{project.ml_backend}")["model_version"]


def start_training(api: Api, project: MlProject) -> str:
    """Press "Start Training" (POST /api/ml/{id}/train, no body: Label Studio sends its own /train request);
    the new version, once the project's model_version follows it.
    """
    before = backend_version(api, project)
    api.call("POST", f"/api/ml/{project.ml_backend}/train")

    def new_version() -> str | None:
        version = backend_version(api, project)
        return version if version != before and version.startswith("v") else None

    version = wait_for(new_version, TRAIN_TIMEOUT, f"the backend's version stayed {before} after Start Training", 2)
    wait_for(
        lambda: api.call("GET", f"/api/projects/{project.id}")["model_version"] == version or None,
        TRAIN_TIMEOUT,
        f"the project's model_version never became {version}",
        2,
    )
    return version


def annotate_first(api: Api, project: MlProject, n: int) -> None:
    """Annotate the first `n` tasks (by id) with their true label, skipping those already annotated."""
    done = {t["id"] for t in api.all_tasks(project.id) if t.get("total_annotations")}
    for task_id in sorted(project.texts)[:n]:
        if task_id not in done:
            annotate(api, project.id, task_id, project.texts[task_id])


def test_the_connect_form_gives_a_connected_backend(api: Api, ui_project: MlProject) -> None:
    backend = api.call("GET", f"/api/ml/{ui_project.ml_backend}")
    assert backend["readable_state"] == "Connected", backend
    assert backend["model_version"] == "untrained", backend
    assert api.call("GET", f"/api/projects/{ui_project.id}")["model_version"] == BACKEND_TITLE


def test_label_studio_creates_the_training_webhook(
    api: Api, ml_settings: dict[str, str], ui_project: MlProject
) -> None:
    hooks = api.call("GET", f"/api/webhooks/?project={ui_project.id}")
    assert f"{ml_settings['ML_BACKEND_URL'].rstrip('/')}/webhook" in [h["url"] for h in hooks], hooks


def test_40_annotations_train_the_model_without_any_other_call(
    api: Api, ui_project: MlProject, deployment: Deployment, record_property: pytest.RecordProperty
) -> None:
    annotate_first(api, ui_project, N_TRAIN)
    held_out = sorted(ui_project.texts)[-100:]

    def accurate() -> float | None:
        version = api.call("GET", f"/api/projects/{ui_project.id}")["model_version"]
        if not version.startswith("v"):
            return None  # no trained version published yet
        preds = retrieve_predictions(api, ui_project.id, held_out)
        if {p.get("model_version") for p in preds.values()} != {version}:
            return None
        accuracy = sum(label_of(p) == ui_project.texts[t] for t, p in preds.items()) / len(held_out)
        return accuracy if accuracy >= 0.9 else None

    accuracy = wait_for(accurate, TRAIN_TIMEOUT, "held-out accuracy never reached 0.9 after 40 annotations", 3)
    record_property("held_out_accuracy", accuracy)
    # Every annotation's webhook queues a training; compare against the version the last one published.
    wait_until_learned(deployment)
    version = api.call("GET", f"/api/projects/{ui_project.id}")["model_version"]
    scores = [
        p["score"]
        for t in api.all_tasks(ui_project.id)
        if not t.get("total_annotations")
        for p in t.get("predictions") or []
        if p.get("model_version") == version
    ]
    nxt = api.call("GET", f"/api/projects/{ui_project.id}/next")
    score = {p["model_version"]: p["score"] for p in nxt["predictions"]}.get(version)
    assert score == pytest.approx(min(scores)), (nxt["id"], score, min(scores))


def test_start_training_starts_a_run(api: Api, ui_project: MlProject) -> None:
    annotate_first(api, ui_project, N_TRAIN)
    before = backend_version(api, ui_project)
    assert start_training(api, ui_project) != before


def test_retrieve_predictions_serves_the_trained_model(api: Api, ui_project: MlProject) -> None:
    version = backend_version(api, ui_project)
    assert version.startswith("v"), version
    held_out = sorted(ui_project.texts)[-100:]
    preds = retrieve_predictions(api, ui_project.id, held_out)
    assert {p["model_version"] for p in preds.values()} == {version}
    accuracy = sum(label_of(p) == ui_project.texts[t] for t, p in preds.items()) / len(held_out)
    assert accuracy >= 0.9, accuracy


def test_retraining_leaves_one_prediction_per_task(
    api: Api, ui_project: MlProject, deployment: Deployment, record_property: pytest.RecordProperty
) -> None:
    # Ten retrainings, each publishing a prediction for every unlabeled task: without pruning, ten times as many.
    retrainings = 10
    versions = [start_training(api, ui_project) for _ in range(retrainings)]
    wait_until_learned(deployment)  # the last run prunes after publishing
    counts = api.call("GET", f"/api/projects/{ui_project.id}/model-versions")
    record_property("predictions_after_retrainings", counts)
    assert len(set(versions)) == retrainings
    unlabeled = sum(not t.get("total_annotations") for t in api.all_tasks(ui_project.id))
    assert counts == {versions[-1]: unlabeled}, counts


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/setup", "[1, 2]", 400),
        ("/predict", '"a string"', 400),
        ("/train", '{"project": ', 400),
        ("/webhook", "", 400),
        ("/predict", json.dumps({"project": "999999.1", "tasks": []}), 404),
        ("/webhook", json.dumps({"action": "ANNOTATION_CREATED", "project": {"id": 999999}}), 404),
        ("/predict", "OVERSIZE", 413),
        ("/webhook", "OVERSIZE", 413),
    ],
)
def test_the_deployed_backend_refuses_bad_input(deployment: Deployment, path: str, body: str, status: int) -> None:
    # Webhooks as Label Studio sends them: without credentials (a hook with them vouches for its project).
    got, text = backend_post(deployment, path, body, auth=path != "/webhook")
    assert got == status, text
    assert json.loads(text)["error"], text


def test_the_webhook_needs_no_credentials_but_the_other_routes_do(deployment: Deployment) -> None:
    hook = json.dumps({"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert backend_post(deployment, "/webhook", hook, auth=False)[0] == 200
    setup = json.dumps({"project": "1.1", "schema": CONFIG})
    assert backend_post(deployment, "/setup", setup, auth=False)[0] == 401


def test_the_backends_token_is_not_the_admins(deployment: Deployment) -> None:
    """The backends use an account of their own, not the admin's (labelstack_ml_account: no staff, no password)."""
    token = deployment.host.check_output(
        "docker exec %s printenv LABEL_STUDIO_API_KEY", deployment.container("ml-backend")
    )
    # Compared as digests, so a failure prints no token.
    assert hashlib.sha256(token.encode()).hexdigest() != hashlib.sha256(deployment.api_key.encode()).hexdigest()
    me = Api(deployment.url, token).call("GET", "/api/current-user/whoami")
    assert me["email"] != deployment.credentials["LABEL_STUDIO_USERNAME"], me["email"]
