"""The legacy `label_studio_sdk.Client` (what most users' scripts use) against the deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from label_studio_sdk import Client

from labelstack_testlib import Deployment

from .smokelib import NAMED_ENTITIES, OBJECT_DETECTION, OD_LABELS, ProjectFactory, data_signature, open_zip


@pytest.fixture
def client(deployment: Deployment) -> Client:
    return Client(url=deployment.url, api_key=deployment.api_key)


def test_legacy_client_project_lifecycle(client: Client, projects: ProjectFactory, my_user_id: int) -> None:
    assert client.check_connection() == {"status": "UP"}
    case = NAMED_ENTITIES
    title = projects.title("legacy-ner")
    project = client.start_project(title=title, label_config=case.label_config)
    projects.adopt(project.id)
    assert client.get_project(project.id).get_params()["title"] == title

    task_ids = project.import_tasks(list(case.tasks))
    assert len(task_ids) == len(case.tasks), f"import returned task ids {task_ids}"
    ids_by_data = {data_signature(task["data"]): task["id"] for task in project.get_tasks()}
    assert sorted(ids_by_data.values()) == sorted(task_ids)
    for data, result in zip(case.tasks, case.results, strict=True):
        annotation = project.create_annotation(ids_by_data[data_signature(data)], result=result)
        assert annotation["result"] == result
    project.create_prediction(task_ids[0], result=case.results[0], score=0.5, model_version="legacy-v1")

    exported = project.export_tasks()
    assert len(exported) == len(case.tasks), exported
    for task in exported:
        assert [a["result"] for a in task["annotations"]] == [case.results[case.tasks.index(task["data"])]]
        assert task["annotations"][0]["completed_by"] == my_user_id
    predictions = {task["id"]: task["predictions"] for task in project.get_tasks()}
    assert [p["model_version"] for p in predictions[task_ids[0]]] == ["legacy-v1"], predictions


def test_legacy_client_exports_yolo_to_a_file(client: Client, projects: ProjectFactory, tmp_path: Path) -> None:
    case = OBJECT_DETECTION
    project = client.start_project(title=projects.title("legacy-yolo"), label_config=case.label_config)
    projects.adopt(project.id)
    task_ids = project.import_tasks(list(case.tasks))
    for task_id, result in zip(sorted(task_ids), case.results, strict=True):
        project.create_annotation(task_id, result=result)

    # YOLO is a zip archive: the legacy client needs export_location for anything but JSON.
    with pytest.raises(ValueError, match="requires an export location"):
        project.export_tasks(export_type="YOLO")
    path = project.export_tasks(export_type="YOLO", export_location=str(tmp_path / "yolo.zip"))
    archive = open_zip(Path(path).read_bytes(), "legacy YOLO export")
    assert archive.read("classes.txt").decode().splitlines() == list(OD_LABELS)
    labels = [name for name in archive.namelist() if name.startswith("labels/") and name.endswith(".txt")]
    assert len(labels) == len(case.tasks), archive.namelist()


def test_legacy_client_with_a_wrong_token_gets_401(deployment: Deployment) -> None:
    client = Client(url=deployment.url, api_key="not-the-right-token-0123456789")  # /api/version needs no token
    with pytest.raises(requests.HTTPError) as caught:
        client.list_projects()
    assert caught.value.response is not None
    assert caught.value.response.status_code == 401
