"""Each canonical label config: create the project, import, annotate through the API, export and read back."""

from __future__ import annotations

import json

import pytest
from label_studio_sdk import LabelStudio

from .smokelib import CASES, LabelConfigCase, ProjectFactory, data_signature


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_annotations_come_back_in_the_json_export(
    case: LabelConfigCase, ls: LabelStudio, projects: ProjectFactory, my_user_id: int
) -> None:
    project_id = projects.create(case.name, case.label_config)
    project = ls.projects.get(project_id)
    assert project.label_config.strip() == case.label_config.strip(), (
        "the stored label config differs from the sent one"
    )
    assert {c.name for c in project.get_label_interface().controls} == {case.from_name}

    imported = ls.projects.import_tasks(id=project_id, request=list(case.tasks), return_task_ids=True)
    assert imported.task_count == len(case.tasks), f"import response: {imported!r}"
    tasks = {data_signature(task.data): task.id for task in ls.tasks.list(project=project_id)}
    assert sorted(tasks) == sorted(data_signature(data) for data in case.tasks), "imported task data differs"

    for data, result in zip(case.tasks, case.results, strict=True):
        annotation = ls.annotations.create(id=tasks[data_signature(data)], result=result)
        assert annotation.id, f"no annotation id returned for {data}"
        assert annotation.result == result, "the API changed the annotation result on creation"

    exported = json.loads(b"".join(ls.projects.exports.download_sync(project_id, export_type="JSON")))
    assert len(exported) == len(case.tasks), f"JSON export has {len(exported)} tasks, expected {len(case.tasks)}"
    by_data = {data_signature(task["data"]): task for task in exported}
    for data, result in zip(case.tasks, case.results, strict=True):
        task = by_data.get(data_signature(data))
        assert task is not None, f"task {data} missing from the export"
        assert task["id"] == tasks[data_signature(data)]
        assert len(task["annotations"]) == 1, f"task {data}: {len(task['annotations'])} annotations exported"
        annotation = task["annotations"][0]
        assert annotation["result"] == result, f"task {data}: exported result differs from the created one"
        assert annotation["completed_by"] == my_user_id
        assert annotation["was_cancelled"] is False
