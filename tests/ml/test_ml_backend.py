"""The ML backend learns from annotations: pre-annotation, training by webhook, uncertainty sampling.

The tests of this module run in order against one project (module fixture `ml_project`), like an
annotator's session: untrained, 40 annotations, retraining, restarts, outages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelstack_testlib import Api, Deployment, wait_for

from .mllib import MlProject, annotate, backend_post, check_lowest_score_first, label_of, retrieve_predictions

N_TRAIN = 40
TRAIN_TIMEOUT = 180


def import_one(api: Api, project: int, text: str) -> int:
    created = api.call("POST", f"/api/projects/{project}/import?return_task_ids=true", [{"text": text}])
    return created["task_ids"][0]


def wait_healthy(deployment: Deployment, container: str, message: str) -> None:
    inspect = f"docker inspect -f '{{{{.State.Health.Status}}}}' {container}"
    wait_for(lambda: deployment.host.check_output(inspect) == "healthy", 120, message, 2)


def test_untrained_backend_makes_no_prediction(api: Api, ml_project: MlProject) -> None:
    task_id = next(iter(ml_project.texts))
    task = api.call("GET", f"/api/tasks/{task_id}")  # loading a task asks the backend (show_collab_predictions)
    assert task["data"]["text"]
    assert all(not p.get("result") for p in task.get("predictions") or []), task["predictions"]


def test_annotations_train_the_model_and_predictions_are_accurate(
    api: Api, ml_project: MlProject, record_property: pytest.RecordProperty
) -> None:
    ids = sorted(ml_project.texts)
    train, held_out = ids[:N_TRAIN], ids[-100:]
    for task_id in train:
        annotate(api, ml_project.id, task_id, ml_project.texts[task_id])

    def accurate() -> float | None:
        project = api.call("GET", f"/api/projects/{ml_project.id}")
        if not str(project.get("model_version")).startswith("v"):
            return None  # the backend has not published a trained version yet
        preds = retrieve_predictions(api, ml_project.id, held_out)
        if {p.get("model_version") for p in preds.values()} != {project["model_version"]}:
            return None
        accuracy = sum(label_of(p) == ml_project.texts[t] for t, p in preds.items()) / len(held_out)
        return accuracy if accuracy >= 0.9 else None

    accuracy = wait_for(accurate, TRAIN_TIMEOUT, "held-out accuracy never reached 0.9 after 40 annotations", 3)
    record_property("held_out_accuracy", accuracy)
    assert accuracy >= 0.9


def test_training_again_changes_the_model_version(api: Api, ml_project: MlProject) -> None:
    before = api.call("GET", f"/api/projects/{ml_project.id}")["model_version"]
    task_id = sorted(ml_project.texts)[N_TRAIN]
    annotate(api, ml_project.id, task_id, ml_project.texts[task_id])

    def new_version() -> str | None:
        version = api.call("GET", f"/api/projects/{ml_project.id}")["model_version"]
        return version if version != before else None

    wait_for(new_version, TRAIN_TIMEOUT, f"model_version stayed {before} after a new annotation", 2)

    # Label Studio learns the backend's version from /setup, which it calls before predicting. Trainings
    # queued by the earlier annotations may still publish newer versions: wait until both sides agree.
    def agreed() -> str | None:
        retrieve_predictions(api, ml_project.id, [sorted(ml_project.texts)[-1]])
        project = api.call("GET", f"/api/projects/{ml_project.id}")["model_version"]
        backend = api.call("GET", f"/api/ml/{ml_project.ml_backend}")["model_version"]
        return project if project == backend else None

    assert wait_for(agreed, TRAIN_TIMEOUT, "Label Studio never learned the backend's new version", 2) != before


def test_model_survives_a_backend_restart(api: Api, ml_project: MlProject, deployment: Deployment) -> None:
    version = api.call("GET", f"/api/projects/{ml_project.id}")["model_version"]
    container = deployment.container("ml-backend")
    deployment.host.check_output(f"docker restart {container}")
    wait_healthy(deployment, container, "ml-backend not healthy after restart")
    # A task with no prediction at all is predicted when it loads: by the model loaded from disk.
    task_id = import_one(api, ml_project.id, "goal team coach season")
    task = api.call("GET", f"/api/tasks/{task_id}")
    assert [p["model_version"] for p in task["predictions"]] == [version], task["predictions"]
    assert label_of(task["predictions"][0]) == "Sports"


def test_uncertainty_sampling_serves_the_lowest_score_first(
    api: Api, ml_project: MlProject, ml_settings: dict[str, str]
) -> None:
    check_lowest_score_first(api, ml_settings, ml_project.id)


def test_task_without_the_field_gets_an_empty_result(api: Api, ml_project: MlProject, deployment: Deployment) -> None:
    # Label Studio refuses to import such a task, so ask the backend directly (from inside its container,
    # where its own credentials are in the environment).
    body = json.dumps({"project": f"{ml_project.id}.0", "tasks": [{"id": 1, "data": {"other": "no text here"}}]})
    status, text = backend_post(deployment, "/predict", body)
    assert status == 200, text
    results = json.loads(text)["results"]
    assert len(results) == 1, results
    assert results[0]["result"] == [], results


def test_labeling_works_while_the_backend_is_stopped(api: Api, ml_project: MlProject, deployment: Deployment) -> None:
    container = deployment.container("ml-backend")
    version = api.call("GET", f"/api/projects/{ml_project.id}")["model_version"]
    deployment.host.check_output(f"docker stop {container}")
    try:
        task_id = import_one(api, ml_project.id, "stock bank price fund")
        loaded = api.call("GET", f"/api/tasks/{task_id}")
        assert loaded["data"]["text"] == "stock bank price fund", loaded
        assert not loaded["predictions"], loaded
        annotate(api, ml_project.id, sorted(ml_project.texts)[N_TRAIN + 1], "Weather")
    finally:
        deployment.host.check_output(f"docker start {container}")
        wait_healthy(deployment, container, "ml-backend not healthy after start")

    # Back up: the task that loaded without a prediction gets one on its next load, from the same model.
    def predicted() -> dict[str, Any] | None:
        task = api.call("GET", f"/api/tasks/{task_id}")
        return task if task["predictions"] else None

    task = wait_for(predicted, 60, "no prediction after the backend came back", 2)
    assert label_of(task["predictions"][0]) == "Finance"
    assert task["predictions"][0]["model_version"] == version
