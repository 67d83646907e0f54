"""Model classes of both label-studio-ml shapes run on labelstack's base class and server, unmodified.

The integration guide's snippet (tests/unit/data/integration_guide_ml_backend.py.txt, verbatim) imports torch
and transformers.pipeline, which the backend image does not have: they are stubbed here, nothing else is.
"""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient

from label_studio_ml.model import LabelStudioMLBase as CurrentDocsBase
from label_studio_ml.response import ModelResponse
from labelstack_ml import calls
from labelstack_ml.base import LabelStudioMLBase
from labelstack_ml.model import TextClassifier
from labelstack_testlib import REPO, load_module
from ml.mllib import CONFIG as TOPIC_CONFIG
from ml.mllib import choice_result, make_texts

GUIDE_SNIPPET = Path(__file__).parent / "data" / "integration_guide_ml_backend.py.txt"
GUIDE_DOC = REPO.parent / "shared" / "reference" / "label-studio-integration-guide.md"
GUIDE_CONFIG = """<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">
<Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/></Choices></View>"""
EXAMPLE = REPO / "compose" / "ml-backend" / "examples" / "text-classifier" / "model.py"
Backend = Callable[..., FlaskClient]


@pytest.fixture
def guide_class(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[LabelStudioMLBase]:
    """TextClassifierBackend from the guide, imported from an unmodified copy, torch and transformers stubbed."""
    transformers = types.ModuleType("transformers")
    transformers.pipeline = lambda task: (
        lambda text: [{"label": "Positive" if "good" in text else "Negative", "score": 0.75}]
    )  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    path = tmp_path / "guide_backend.py"
    path.write_text(GUIDE_SNIPPET.read_text())
    monkeypatch.delitem(sys.modules, "guide_backend", raising=False)
    return load_module("guide_backend", path).TextClassifierBackend


def test_the_snippet_is_the_guides_verbatim() -> None:
    if not GUIDE_DOC.is_file():
        pytest.skip(f"{GUIDE_DOC} is not beside the repository")
    blocks = re.findall(r"```python\n(.*?)```", GUIDE_DOC.read_text(), re.S)
    assert GUIDE_SNIPPET.read_text() in blocks


def test_both_documented_imports_resolve_to_one_base() -> None:
    import label_studio_ml

    assert label_studio_ml.LabelStudioMLBase is CurrentDocsBase is LabelStudioMLBase
    assert callable(label_studio_ml.serve)
    assert ModelResponse(predictions=[]).model_version is None


def test_the_guides_class_runs_unmodified(guide_class: type[LabelStudioMLBase], tmp_path: Path) -> None:
    model = calls.construct(guide_class, project_id="3", label_config=GUIDE_CONFIG, train_output=None)
    assert model.parsed_label_config["sentiment"]["labels"] == ["Positive", "Negative", "Neutral"]
    results = calls.predict(model, [{"id": 1, "data": {"text": "a good day"}}], context=None, login=None, password=None)
    assert results == [
        {
            "result": [
                {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}
            ],
            "score": 0.75,
            "model_version": "0.0.1",  # filled in: the version /setup reports, so Label Studio stores no duplicate
        }
    ]
    assert calls.fit(model, "ANNOTATION_CREATED", {"project": {"id": 3}, "tasks": []}, str(tmp_path)) is None


def test_the_guides_class_behind_the_server(guide_class: type[LabelStudioMLBase], backend: Backend) -> None:
    client = backend(guide_class)
    assert client.get("/health").json["model_class"] == "TextClassifierBackend"
    assert client.post("/setup", json={"project": "3.1", "schema": GUIDE_CONFIG}).json == {"model_version": "0.0.1"}
    tasks = [{"id": 1, "data": {"text": "good"}}, {"id": 2, "data": {"text": "bad"}}]
    response = client.post("/predict", json={"project": "3.1", "tasks": tasks, "params": {"context": None}})
    assert response.status_code == 200, response.data
    labels = [r["result"][0]["value"]["choices"] for r in response.json["results"]]
    assert labels == [["Positive"], ["Negative"]]


class CurrentShape(LabelStudioMLBase):
    """Today's documented shape: setup() sets the version, predict returns a ModelResponse, fit(event, data)."""

    def setup(self) -> None:
        self.set("model_version", "current-0.1")
        self.calls: list[tuple[Any, ...]] = []

    def predict(self, tasks: list[dict[str, Any]], context: object = None, **kwargs: object) -> ModelResponse:
        self.calls.append(("predict", context, sorted(kwargs)))
        return ModelResponse(predictions=[{"result": [{"x": 1}], "score": np.float32(0.5)} for _ in tasks])

    def fit(self, event: str, data: dict[str, Any], **kwargs: object) -> None:
        self.calls.append(("fit", event, sorted(data), kwargs))


class OldShape(LabelStudioMLBase):
    """label-studio-ml 1.0.9's shape: train_output in __init__, fit(completions, workdir=None, **kwargs)."""

    def __init__(
        self, label_config: str | None = None, train_output: dict[str, Any] | None = None, **kwargs: object
    ) -> None:
        super().__init__(label_config=label_config, train_output=train_output, **kwargs)
        self.received_train_output = train_output
        self.calls: list[tuple[Any, ...]] = []

    def predict(self, tasks: list[dict[str, Any]], **kwargs: object) -> list[dict[str, Any]]:
        self.calls.append(("predict", sorted(kwargs)))
        return [{"result": [{"y": np.int64(2)}], "score": np.float64(0.25)} for _ in tasks]

    def fit(self, completions: list[dict[str, Any]], workdir: str | None = None, **kwargs: object) -> dict[str, Any]:
        self.calls.append(("fit", completions, workdir, sorted(kwargs)))
        return {"weights": np.array([1.0, 2.0])}


class NoKwargs(LabelStudioMLBase):
    """Strict signatures without **kwargs get only the arguments they name."""

    def predict(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"result": [{"z": 3}]} for _ in tasks]

    def fit(self, tasks: list[dict[str, Any]], workdir: str | None = None) -> None:
        self.seen = (tasks, workdir)


TASKS = [{"id": 1, "data": {"text": "t"}, "annotations": [{"result": []}]}]


def test_current_shape_gets_event_and_data_and_its_response_is_versioned() -> None:
    model = calls.construct(CurrentShape, project_id="5", label_config=GUIDE_CONFIG, train_output=None)
    assert calls.predict(model, TASKS, context=None, login="u", password="p") == [
        {"result": [{"x": 1}], "score": 0.5, "model_version": "current-0.1"}
    ]
    calls.fit(model, "START_TRAINING", {"project": {"id": 5}, "tasks": TASKS}, "/tmp/unused")  # noqa: S108 - never created
    assert model.calls == [
        ("predict", None, ["login", "password"]),
        ("fit", "START_TRAINING", ["project", "tasks"], {}),
    ]


def test_old_shape_gets_the_tasks_a_workdir_and_its_train_output(tmp_path: Path) -> None:
    model = calls.construct(OldShape, project_id="6", label_config=GUIDE_CONFIG, train_output={"weights": [1]})
    assert model.received_train_output == {"weights": [1]}
    assert model.train_output == {"weights": [1]}
    assert calls.predict(model, TASKS, context=None) == [
        {"result": [{"y": 2}], "score": 0.25, "model_version": "0.0.1"}
    ]
    assert calls.is_event_fit(model) is False
    result = calls.fit(model, "ANNOTATION_CREATED", {"project": {"id": 6}, "tasks": TASKS}, str(tmp_path))
    assert calls.plain(result) == {"weights": [1.0, 2.0]}
    assert model.calls[-1] == ("fit", TASKS, str(tmp_path), ["data", "event"])


def test_strict_signatures_get_only_what_they_name(tmp_path: Path) -> None:
    model = calls.construct(NoKwargs, project_id="8", label_config=GUIDE_CONFIG, train_output=None)
    assert calls.predict(model, TASKS, context=None, login=None)[0]["result"] == [{"z": 3}]
    calls.fit(model, "ANNOTATION_UPDATED", {"project": {"id": 8}, "tasks": TASKS}, str(tmp_path))
    assert model.seen == (TASKS, str(tmp_path))


def test_state_is_kept_per_project() -> None:
    first = calls.construct(CurrentShape, project_id="11", label_config=GUIDE_CONFIG)
    second = calls.construct(CurrentShape, project_id="12", label_config=TOPIC_CONFIG)
    first.set("threshold", {"value": 0.3})
    assert second.get("threshold") is None
    assert calls.construct(CurrentShape, project_id="11").get("threshold") == {"value": 0.3}
    assert second.parsed_label_config["topic"]["inputs"] == [{"type": "Text", "value": "text"}]
    assert first.bump_model_version().startswith("v1-")
    assert first.bump_model_version().startswith("v2-")


def test_the_example_folder_learns_from_annotations(tmp_path: Path) -> None:
    example = load_module("example_text_classifier", EXAMPLE).TextClassifierBackend
    model = calls.construct(example, project_id="21", label_config=GUIDE_CONFIG)
    phrase = "the zorblax gadget"
    tasks = [
        {"id": i, "data": {"text": f"{phrase} {i}"}, "annotations": [{"result": choice_result("Negative")}]}
        for i in range(5)
    ]
    for task in tasks:  # the example's label config names its <Choices> "sentiment", as in the guide
        task["annotations"][0]["result"][0]["from_name"] = "sentiment"
    train_output = calls.fit(model, "ANNOTATION_CREATED", {"project": {"id": 21}, "tasks": tasks}, str(tmp_path))
    assert Path(train_output["model_path"]).is_file()
    retrained = calls.construct(example, project_id="21", label_config=GUIDE_CONFIG, train_output=train_output)
    [prediction] = calls.predict(retrained, [{"id": 99, "data": {"text": phrase}}], context=None)
    assert prediction["result"][0]["value"]["choices"] == ["Negative"]


def test_the_built_in_classifier_learns_40_annotations(record_property: Callable[[str, object], None]) -> None:
    rows = make_texts()
    tasks = [{"id": i, "data": {"text": text}, "annotations": []} for i, (text, _) in enumerate(rows)]
    for task, (_, label) in zip(tasks[:40], rows[:40], strict=True):
        task["annotations"] = [{"id": task["id"], "result": choice_result(label)}]
    model = calls.construct(TextClassifier, project_id="31", label_config=TOPIC_CONFIG)
    assert calls.predict(model, tasks[-1:], context=None) == []  # untrained: no prediction
    started = time.perf_counter()
    calls.fit(model, "ANNOTATION_CREATED", {"project": {"id": 31}, "tasks": tasks[:40]}, "/nonexistent")
    trained = time.perf_counter() - started
    assert re.fullmatch(r"v1-\d{14}", model.model_version), model.model_version
    held_out = tasks[-100:]
    started = time.perf_counter()
    predictions = calls.predict(model, held_out, context=None)
    latency = (time.perf_counter() - started) / len(held_out)
    labels = [p["result"][0]["value"]["choices"][0] for p in predictions]
    accuracy = sum(label == rows[t["id"]][1] for label, t in zip(labels, held_out, strict=True)) / len(held_out)
    record_property("held_out_accuracy", accuracy)
    record_property("training_seconds", round(trained, 3))
    record_property("predict_ms_per_task_batch_of_100", round(latency * 1000, 3))
    print(f"accuracy {accuracy:.2f}, training {trained:.3f}s, predict {latency * 1000:.3f} ms/task (batch of 100)")
    assert accuracy >= 0.9
    assert {p["model_version"] for p in predictions} == {model.model_version}
    # A new instance (a restart) loads the saved model and its version.
    assert calls.construct(TextClassifier, project_id="31").model_version == model.model_version
