"""A user's own model, deployed by variable: the integration guide's TextClassifierBackend
(compose/ml-backend/examples/text-classifier, a small scikit-learn model in place of transformers.pipeline) as an
item of labelstack_ml_backends with model_dir. Connected as the UI does, it serves the predictions Label Studio
shows, and annotation events call its fit (a new model version).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from labelstack_testlib import Api, wait_for

from .mllib import MlProject, connect_as_the_ui_does, label_of, retrieve_predictions

GUIDE_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>"""
TEXTS = {
    "great product, I love it and it works perfectly": "Positive",
    "very happy with the excellent service": "Positive",
    "terrible, it broke after one day": "Negative",
    "awful quality and a waste of money": "Negative",
    "the box arrived on monday": "Neutral",
    "a grey jacket with a zip": "Neutral",
    "brilliant, would recommend to everyone": "Positive",
    "disappointed, support never answered": "Negative",
}


def user_backends(ml_settings: dict[str, str]) -> dict[str, str]:
    """The stack's ML backends other than the default one, name -> URL (credentials.env's ML_BACKENDS)."""
    pairs = dict(item.split("=", 1) for item in ml_settings.get("ML_BACKENDS", "").split())
    return {name: url for name, url in pairs.items() if url != ml_settings["ML_BACKEND_URL"]}


@pytest.fixture(scope="module")
def guide_project(api: Api, ml_settings: dict[str, str]) -> Iterator[MlProject]:
    backends = user_backends(ml_settings)
    if not backends:
        pytest.skip("this inventory deploys no model of a user's (labelstack_ml_backends item with model_dir)")
    body = {"title": f"ml-byo-{uuid.uuid4().hex[:10]}", "label_config": GUIDE_CONFIG}
    project = api.call("POST", "/api/projects", body)
    try:
        tasks = [{"text": text, "truth": label} for text, label in TEXTS.items()]
        api.call("POST", f"/api/projects/{project['id']}/import", tasks)
        truth = {t["id"]: t["data"]["truth"] for t in api.all_tasks(project["id"])}
        backend = connect_as_the_ui_does(api, ml_settings, project["id"], next(iter(backends.values())), "guide model")
        yield MlProject(project["id"], truth, backend["id"])
    finally:
        api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))


def test_the_guides_class_serves_the_predictions_label_studio_shows(api: Api, guide_project: MlProject) -> None:
    assert api.call("GET", f"/api/ml/{guide_project.ml_backend}")["readable_state"] == "Connected"
    ids = sorted(guide_project.texts)
    predictions = retrieve_predictions(api, guide_project.id, ids)
    assert set(predictions) == set(ids), f"no prediction for tasks {sorted(set(ids) - set(predictions))}"
    for prediction in predictions.values():
        assert label_of(prediction) in {"Positive", "Negative", "Neutral"}, prediction
        assert 0 < prediction["score"] <= 1, prediction


def test_annotation_events_call_its_fit(api: Api, guide_project: MlProject) -> None:
    """Its fit returns a train_output: the backend then names a new model version and publishes it."""
    before = api.call("GET", f"/api/projects/{guide_project.id}")["model_version"]
    for task_id, label in sorted(guide_project.texts.items())[:4]:
        result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
        api.call("POST", f"/api/tasks/{task_id}/annotations?project={guide_project.id}", {"result": result})

    def trained() -> str | None:
        version = api.call("GET", f"/api/projects/{guide_project.id}")["model_version"]
        return version if version != before and version.startswith("v") else None

    wait_for(trained, 180, f"the guide's model was never retrained after annotations (version stayed {before!r})", 3)
