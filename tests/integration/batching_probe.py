"""Run inside the app container by test_batching.py: `manage.py shell` reads this file on stdin.

PROBE_MODE=setup adds what the API of open-source Label Studio cannot: another user's drafts and comment
authors on some tasks of project PROBE_PROJECT. PROBE_MODE=render prints, as one `RESULT {...}` line, the
data-manager pages (page sizes 10 and 100), the first page of each Data Manager tab of PROBE_VIEWS (a JSON
object: name -> tab id) and the JSON export of that project, each with its query count, the queries that count
or sum the project's tasks and the feature-flag evaluations, rendered by the real views in this process (whose
settings decide whether labelstack_batching is on).
PROBE_MODE=import imports each payload of PROBE_IMPORTS (a JSON object: name -> tasks) into a new project
with the label config of PROBE_PROJECT, through the real import view, and prints the new tasks' rows, the
project's statistics and the import's query count, then deletes those projects. PROBE_MODE=cleanup removes the
other user.
"""

import functools
import json
import os
from collections.abc import Callable

from core.feature_flags import base as feature_flags
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from projects.models import Project, ProjectSummary
from rest_framework.authtoken.models import Token
from tasks.models import AnnotationDraft, Task
from users.models import User

# What an import writes into each task and the project, without ids and times (they differ from run to run).
TASK_FIELDS = ("inner_id", "data", "meta", "overlap", "is_labeled", "total_annotations", "cancelled_annotations",
               "total_predictions", "allow_skip")  # fmt: skip
# The counts the project's page shows (GET /api/projects/<id>).
PROJECT_FIELDS = ("task_number", "total_annotations_number", "total_predictions_number", "num_tasks_with_annotations",
                  "skipped_annotations_number", "useful_annotation_number", "ground_truth_number",
                  "finished_task_number", "model_version")  # fmt: skip

OTHER = "batching-probe@labelstack.invalid"
# How a page's totals query (Label Studio's count of the tasks, its sums of their counters) starts.
TOTALS_QUERIES = ("SELECT COUNT(*)", "SELECT COALESCE(SUM(")
TOTALS_INDEX = "labelstack_task_project_totals"  # labelstack_batching/migrations


def logged(log: list[str], execute: Callable[..., object], sql: str, *args: object) -> object:
    log.append(sql)
    return execute(sql, *args)


def counted(calls: list[object], function: Callable[..., object]) -> Callable[..., object]:
    def call(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return function(*args, **kwargs)

    return call


mode = os.environ["PROBE_MODE"]
project = Project.objects.get(id=int(os.environ["PROBE_PROJECT"])) if mode != "cleanup" else None

if mode == "setup":
    admin = project.created_by
    other, _ = User.objects.get_or_create(email=OTHER, defaults={"username": OTHER})
    tasks = list(Task.objects.filter(project=project).order_by("id")[:6])
    for task in tasks[:3]:
        AnnotationDraft.objects.create(task=task, user=other, result=[], lead_time=1.0)
    for task in tasks[2:6]:
        task.comment_authors.set([admin, other])
    print("RESULT {}")
elif mode == "render":
    token, _ = Token.objects.get_or_create(user=project.created_by)
    client = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    urls = {
        "page10": f"/api/tasks?project={project.id}&page=1&page_size=10&fields=all",
        "page100": f"/api/tasks?project={project.id}&page=1&page_size=100&fields=all",
        "export": f"/api/projects/{project.id}/export?exportType=JSON&download_all_tasks=true",
    }
    urls.update({name: f"/api/tasks?view={tab}&page=1&page_size=10"
                 for name, tab in json.loads(os.environ["PROBE_VIEWS"]).items()})  # fmt: skip
    result = {}
    # Each evaluation of a flag for a user describes the user to the flag client first.
    evaluations: list[object] = []
    feature_flags.get_user_repr = counted(evaluations, feature_flags.get_user_repr)
    for name, url in urls.items():
        evaluations.clear()
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
            body = b"".join(response.streaming_content) if response.streaming else response.content
        assert response.status_code == 200, (url, response.status_code, body[:300])
        totals = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(TOTALS_QUERIES)]
        result[name] = {"body": json.loads(body), "queries": len(queries.captured_queries), "totals": totals,
                        "flag_evaluations": len(evaluations)}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [TOTALS_INDEX])
        result["totals_index_valid"] = (cursor.fetchone() or [None])[0]
    print("RESULT " + json.dumps(result))
elif mode == "import":
    token, _ = Token.objects.get_or_create(user=project.created_by)
    client = Client(SERVER_NAME="localhost", HTTP_AUTHORIZATION=f"Token {token.key}")
    result = {}
    for name, tasks in json.loads(os.environ["PROBE_IMPORTS"]).items():
        target = Project.objects.create(title=f"import-probe {name}", label_config=project.label_config,
                                        created_by=project.created_by, organization=project.organization)  # fmt: skip
        try:
            queries: list[str] = []  # the request resets Django's own query log when it starts: count as they run
            with connection.execute_wrapper(functools.partial(logged, queries)):
                response = client.post(f"/api/projects/{target.id}/import", json.dumps(tasks),
                                       content_type="application/json")  # fmt: skip
            assert response.status_code == 201, (name, response.status_code, response.content[:300])
            rows = [
                {**{field: getattr(task, field) for field in TASK_FIELDS},
                 "annotations": task.annotations.count(), "predictions": task.predictions.count()}
                for task in Task.objects.filter(project=target).order_by("inner_id")
            ]  # fmt: skip
            shown = json.loads(client.get(f"/api/projects/{target.id}").content)
            stats = {field: shown.get(field) for field in PROJECT_FIELDS}
            stats["columns"] = sorted(ProjectSummary.objects.get(project=target).all_data_columns)
            result[name] = {"rows": rows, "project": stats, "queries": len(queries)}
        finally:
            target.delete()
    print("RESULT " + json.dumps(result, default=str))
elif mode == "cleanup":
    User.objects.filter(email=OTHER).delete()
    print("RESULT {}")
