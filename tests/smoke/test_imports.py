"""Ways to import tasks: a JSON list through the API, uploaded JSON and CSV files, tasks with predictions."""

from __future__ import annotations

import csv
import io
import json

from label_studio_sdk import LabelStudio

from labelstack_testlib import Api, JsonValue, expect

from .smokelib import TEXT_CLASSIFICATION, ProjectFactory

TEXTS = ["First smoke text.", 'Second one, with a comma and "quotes".', "Dritter Text: Grüße ✓"]


def task_data(ls: LabelStudio, project_id: int) -> list[dict[str, JsonValue]]:
    """Data of the project's tasks, in id order."""
    return [task.data for task in sorted(ls.tasks.list(project=project_id), key=lambda task: task.id)]


def test_json_task_list_via_api(ls: LabelStudio, api: Api, projects: ProjectFactory) -> None:
    project_id = projects.create("import-json-api", TEXT_CLASSIFICATION.label_config)
    tasks = [{"text": text, "source": "api"} for text in TEXTS]
    body = expect(api.post(f"/api/projects/{project_id}/import", json=tasks), 201, "JSON list import")
    assert body["task_count"] == len(TEXTS), body
    assert task_data(ls, project_id) == tasks


def test_uploaded_json_file(ls: LabelStudio, api: Api, projects: ProjectFactory) -> None:
    project_id = projects.create("import-json-file", TEXT_CLASSIFICATION.label_config)
    tasks = [{"text": text} for text in TEXTS]
    upload = {"file": ("smoke-tasks.json", json.dumps(tasks).encode(), "application/json")}
    body = expect(api.post(f"/api/projects/{project_id}/import", files=upload), 201, "JSON file upload")
    assert body["task_count"] == len(TEXTS), body
    assert body["found_formats"] == {".json": 1}, body
    assert len(body["file_upload_ids"]) == 1, body
    assert task_data(ls, project_id) == tasks


def test_uploaded_csv_file(ls: LabelStudio, api: Api, projects: ProjectFactory) -> None:
    project_id = projects.create("import-csv-file", TEXT_CLASSIFICATION.label_config)
    rows = [{"text": text, "lang": lang} for text, lang in zip(TEXTS, ["en", "en", "de"], strict=True)]
    content = io.StringIO()
    writer = csv.DictWriter(content, fieldnames=["text", "lang"])
    writer.writeheader()
    writer.writerows(rows)
    upload = {"file": ("smoke-tasks.csv", content.getvalue().encode(), "text/csv")}
    body = expect(api.post(f"/api/projects/{project_id}/import", files=upload), 201, "CSV file upload")
    assert body["task_count"] == len(TEXTS), body
    assert body["found_formats"] == {".csv": 1}, body
    assert sorted(body["data_columns"]) == ["lang", "text"], body
    assert task_data(ls, project_id) == rows


def test_tasks_with_predictions(ls: LabelStudio, api: Api, projects: ProjectFactory) -> None:
    project_id = projects.create("import-predictions", TEXT_CLASSIFICATION.label_config)
    predicted = {TEXTS[0]: ("Positive", 0.91), TEXTS[1]: ("Negative", 0.42)}
    tasks = [
        {
            "data": {"text": text},
            "predictions": [
                {
                    "model_version": "smoke-model-v1",
                    "score": score,
                    "result": [
                        {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}
                    ],
                }
            ],
        }
        for text, (label, score) in predicted.items()
    ]
    body = expect(api.post(f"/api/projects/{project_id}/import", json=tasks), 201, "import with predictions")
    assert (body["task_count"], body["prediction_count"]) == (2, 2), body

    for task in ls.tasks.list(project=project_id):
        _label, score = predicted[task.data["text"]]
        assert task.data == {"text": task.data["text"]}, "predictions leaked into the task data"
        assert task.total_predictions == 1, f"task {task.id}: total_predictions={task.total_predictions}"
        predictions = list(ls.predictions.list(task=task.id))
        assert len(predictions) == 1, f"task {task.id}: predictions {predictions}"
        prediction = predictions[0]
        assert prediction.model_version == "smoke-model-v1"
        assert prediction.score == score
        assert prediction.result == tasks[TEXTS.index(task.data["text"])]["predictions"][0]["result"]
