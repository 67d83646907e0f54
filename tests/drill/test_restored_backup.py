"""make drill's own checks of its throwaway stack: what the backup holds came back, and the admin logs in.

`make drill` restores the newest backup into a stack of its own and runs this suite against it (pytest
--secrets-dir <labelstack_drill_dir>/secrets). Before that it writes dump-rows.txt into the drill stack's backup
folder: one line `<table> <project id> <row id>` per row of the project, task and task_completion (annotation)
tables, read from the backup's dump itself (ansible/roles/labelstack/tasks/steps/drill-rows.yml), so what is
compared here is the backup against the restored stack as its users see it, through the API.
"""

from __future__ import annotations

from collections import defaultdict
from urllib.parse import urlsplit

import pytest
from security.probe import login

from labelstack_testlib import Api, Deployment

# Written by the drill beside its copy of the backup (__labelstack_drill_rows).
ROWS_FILE = "dump-rows.txt"

Rows = dict[str, dict[int, set[int]]]  # table -> project id -> row ids


@pytest.fixture(scope="module")
def dumped(deployment: Deployment) -> Rows:
    path = f"{deployment.backup_dir}/{ROWS_FILE}"
    rows_file = deployment.host.file(path)
    if not rows_file.exists:
        pytest.fail(f"{path} not found: tests/drill checks the throwaway stack of make drill, which writes it")
    rows: Rows = defaultdict(lambda: defaultdict(set))
    for line in rows_file.content_string.splitlines():
        table, project, row = line.split()
        rows[table][int(project)].add(int(row))
    return rows


def test_every_project_of_the_backup_is_back(api: Api, dumped: Rows) -> None:
    assert {project["id"] for project in api.all_projects()} == set(dumped["project"])


def test_every_task_and_annotation_of_the_backup_is_back(api: Api, dumped: Rows) -> None:
    for project in dumped["project"]:
        tasks = api.all_tasks(project)
        assert {task["id"] for task in tasks} == dumped["task"][project], f"tasks of project {project}"
        annotations = {annotation["id"] for task in tasks for annotation in task.get("annotations") or []}
        assert annotations == dumped["task_completion"][project], f"annotations of project {project}"


def test_the_admin_logs_in_with_the_backups_password(deployment: Deployment) -> None:
    email = deployment.credentials["LABEL_STUDIO_USERNAME"]
    assert login(deployment.url, urlsplit(deployment.url).netloc, email, deployment.password) == 302
