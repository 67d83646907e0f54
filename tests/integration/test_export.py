"""make export: Label Studio's exporter run in the app container, the file copied to the controller.

This is the path for projects too large for the API's in-request export; here a small project shows that
it exports every task with its annotation, and that an unknown project fails with a message instead of an
empty file.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labelstack_testlib import Api, Deployment, run_playbook
from ml.mllib import CONFIG, choice_result

N_TASKS = 25


@pytest.fixture
def project(api: Api) -> Iterator[int]:
    created = api.call("POST", "/api/projects", {"title": f"export-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    try:
        yield created["id"]
    finally:
        api.call("DELETE", f"/api/projects/{created['id']}", ok=(204, 404))


def export(deployment: Deployment, project: int, dest: Path) -> tuple[int, str]:
    run = run_playbook(
        "export.yml", deployment.inventory, "-e",
        json.dumps({"labelstack_export_project": project, "labelstack_export_dest": str(dest)}),
    )  # fmt: skip
    return run.returncode, run.output


def test_export_holds_every_task_and_annotation(deployment: Deployment, api: Api, project: int, tmp_path: Path) -> None:
    texts = [f"export check {i} {uuid.uuid4().hex}" for i in range(N_TASKS)]
    created = api.call("POST", f"/api/projects/{project}/import?return_task_ids=true", [{"text": t} for t in texts])
    api.call("POST", f"/api/tasks/{created['task_ids'][0]}/annotations?project={project}",
             {"result": choice_result("Sports")})  # fmt: skip

    returncode, output = export(deployment, project, tmp_path)

    assert returncode == 0, output[-4000:]
    files = list(tmp_path.glob(f"project-{project}-*.json"))
    assert len(files) == 1, f"expected one export file in {tmp_path}, found {files}"
    tasks = json.loads(files[0].read_text())
    assert sorted(t["data"]["text"] for t in tasks) == sorted(texts)
    assert sum(len(t["annotations"]) for t in tasks) == 1
    leftovers = deployment.host.run("ls %s/export", deployment.app_data_dir).stdout
    assert files[0].name not in leftovers, "the export was left in the host's data directory"
    assert f"project-{project}-at-" not in leftovers, "the exporter's own copy was left in the host's data directory"


def test_export_of_an_unknown_project_fails_with_a_message(deployment: Deployment, tmp_path: Path) -> None:
    returncode, output = export(deployment, 999999, tmp_path)

    assert returncode != 0
    assert "project 999999 was not exported" in output
    assert not list(tmp_path.iterdir())
