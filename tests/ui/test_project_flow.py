"""A project as a person makes and labels it: template, Import dialog, Data Manager, hotkeys, Export, the model."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from labelstack_testlib import Api, Deployment, JsonValue, host_setting, wait_for

from .uilib import (
    Browser,
    checked_choices,
    choices_of,
    connect_model,
    create_project_from_template,
    export_json,
    import_file,
    label_with_keyboard,
    open_data_manager,
    open_labeling,
    task_counts,
)

LABELS = ("Positive", "Negative", "Neutral")  # the choices of Label Studio's "Text Classification" template
WORDS = {
    "Positive": ("great", "wonderful", "excellent", "lovely", "delightful"),
    "Negative": ("awful", "terrible", "horrible", "dreadful", "miserable"),
    "Neutral": ("average", "ordinary", "plain", "usual", "standard"),
}
TASKS = 24
LABELLED_FIRST = 3  # tasks labelled before the model is connected
TRAINING_TIMEOUT = 120.0  # seconds from the last annotation to predictions, on a busy machine


def make_tasks() -> list[dict[str, str]]:
    """Texts whose words give their sentiment away: a model trained on ten of them labels the others right."""
    tasks = []
    for i in range(TASKS):
        label = LABELS[i % len(LABELS)]
        words = WORDS[label]
        text = f"review {i}: {words[i % 5]} {words[(i + 1) % 5]} {words[(i + 2) % 5]}"
        tasks.append({"text": text, "expected": label})
    return tasks


@dataclass(frozen=True)
class UiProject:
    id: int
    title: str
    expected: dict[int, str]  # task id -> the sentiment its words give


@pytest.fixture(scope="module")
def ui_project(admin: Browser, api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiProject]:
    """A project created from the 'Text Classification' template, TASKS tasks imported with the Import dialog."""
    title = f"ui-{uuid.uuid4().hex[:8]}"
    tasks_file = tmp_path_factory.mktemp("import") / "sentiment-tasks.json"
    tasks_file.write_text(json.dumps(make_tasks()))
    try:
        project_id = create_project_from_template(admin, title, "Natural Language Processing", "Text Classification")
        import_file(admin, project_id, tasks_file)

        def imported() -> list[dict[str, JsonValue]] | None:
            tasks = api.all_tasks(project_id)
            return tasks if len(tasks) == TASKS else None

        tasks = wait_for(imported, 30, f"the Import dialog did not import {TASKS} tasks into project {project_id}")
        yield UiProject(project_id, title, {task["id"]: task["data"]["expected"] for task in tasks})
    finally:  # by title: a project saved by the dialog whose id the test never learnt is removed too
        for project in api.all_projects():
            if project["title"] == title:
                api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))


@pytest.fixture(scope="module")
def annotated(admin: Browser, ui_project: UiProject) -> dict[int, str]:
    """The first LABELLED_FIRST tasks labelled in the labelling view (hotkey, Submit): task id -> choice."""
    open_labeling(admin, ui_project.id)
    done = [label_with_keyboard(admin, ui_project.expected) for _ in range(LABELLED_FIRST)]
    return {task_id: ui_project.expected[task_id] for task_id in done}


def test_project_from_the_template_has_its_text_classification_config(ui_project: UiProject, api: Api) -> None:
    project = api.call("GET", f"/api/projects/{ui_project.id}")
    assert project["title"] == ui_project.title, "the title typed into the dialog was not saved as such"
    config = project["label_config"]
    assert re.search(r'<Choices name="sentiment" toName="text"', config), config
    assert tuple(re.findall(r'<Choice value="([^"]+)"', config)) == LABELS, config


def test_data_manager_counts_the_imported_tasks(admin: Browser, ui_project: UiProject) -> None:
    open_data_manager(admin, ui_project.id)
    counts = admin.wait(lambda: task_counts(admin), "the Data Manager shows no task count")
    admin.see("review 0: ")  # the first task's text is in the table
    admin.step("data-manager")
    assert counts == (TASKS, TASKS), f"the Data Manager counts {counts} tasks, not {TASKS}"


def test_keyboard_labels_are_annotations_in_the_api(annotated: dict[int, str], ui_project: UiProject, api: Api) -> None:
    tasks = {task["id"]: task for task in api.all_tasks(ui_project.id)}
    for task_id, label in annotated.items():
        annotations = tasks[task_id]["annotations"]
        assert [choices_of(a) for a in annotations] == [[label]], f"task {task_id}: {annotations}"
        assert not annotations[0]["was_cancelled"], f"task {task_id} was skipped, not submitted"


def test_export_dialog_downloads_the_annotations(
    admin: Browser, annotated: dict[int, str], ui_project: UiProject
) -> None:
    exported = {task["id"]: task for task in export_json(admin, ui_project.id)}
    # The dialog exports the annotated tasks (Label Studio's default), so at least the ones labelled here.
    assert set(annotated) <= set(exported), f"tasks {sorted(set(annotated) - set(exported))} are not in the export"
    for task_id, label in annotated.items():
        annotations = exported[task_id]["annotations"]
        assert [choices_of(a) for a in annotations] == [[label]], f"task {task_id} in the export: {annotations}"


def test_model_connected_in_settings_prefills_the_next_task(
    admin: Browser, api: Api, deployment: Deployment, ui_project: UiProject, annotated: dict[int, str]
) -> None:
    creds = deployment.credentials
    connect_model(admin, ui_project.id, creds["ML_BACKEND_URL"], creds["ML_BACKEND_USER"], creds["ML_BACKEND_PASSWORD"])
    admin.see("Connected")
    admin.step("model-connected")
    # The card shortens a long URL in its middle (http://ml-backend.in…ernal:9090): the saved one comes from the API.
    backends = api.call("GET", f"/api/ml?project={ui_project.id}")
    assert [b["url"] for b in backends] == [creds["ML_BACKEND_URL"]], backends
    hooks = api.call("GET", f"/api/webhooks?project={ui_project.id}")
    assert any(hook["url"].startswith(creds["ML_BACKEND_URL"]) for hook in hooks), (
        f"connecting made no webhook to the backend, so no annotation reaches it: {hooks}"
    )

    # Label in the labelling view until the backend has enough annotations to train on.
    min_annotations = int(str(host_setting(deployment.host, "labelstack_ml_min_annotations")))
    open_labeling(admin, ui_project.id)
    for _ in range(min_annotations - len(annotated)):
        label_with_keyboard(admin, ui_project.expected)

    def predicted() -> dict[int, str] | None:
        """Unlabelled task id -> the choice predicted by the model version the project uses, once there are any."""
        version = api.call("GET", f"/api/projects/{ui_project.id}")["model_version"]
        tasks = [task for task in api.all_tasks(ui_project.id) if not task["annotations"]]
        found = {
            task["id"]: choices_of(prediction)[0]
            for task in tasks
            for prediction in task["predictions"]
            if prediction["model_version"] == version and choices_of(prediction)
        }
        return found or None

    predictions = wait_for(predicted, TRAINING_TIMEOUT, f"no predictions after {min_annotations} annotations")
    task_id = open_labeling(admin, ui_project.id)
    assert task_id in predictions, f"the labelling view opened task {task_id}, which has no prediction"
    shown = admin.wait(lambda: checked_choices(admin), f"task {task_id} opened with no choice pre-selected")
    admin.step(f"task-{task_id}-prefilled")
    assert shown == [predictions[task_id]], f"task {task_id} shows {shown}, the model predicted {predictions[task_id]}"
