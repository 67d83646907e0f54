"""labelstack_batching: task-list pages and exports load drafts and comment authors per page, not per task, a
page counts its tasks in the query that sums their counters (without the grouping a score ordering brings), feature
flags are read once per page or export batch, and an import without annotations skips Label Studio's recount of
counters the new tasks already hold.

The same project is rendered by the real views twice, inside the app container: once with the batching app
(the deploy's setting) and once without it (Label Studio as shipped). The outputs must be identical, and
only the batched one may do a number of queries that does not grow with the page size. Likewise the same
payloads are imported through the real import view with and without the app: the tasks' rows and the project's
counts must be identical.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelstack_testlib import Api, Deployment
from ml.mllib import CONFIG, choice_result

PROBE = Path(__file__).with_name("batching_probe.py")
N_TASKS = 120
Tasks = list[dict[str, Any]]


def probe(
    deployment: Deployment,
    mode: str,
    project: int | None = None,
    batched: bool = True,
    imports: str = "{}",
    views: str = "{}",
) -> dict[str, Any]:
    app = deployment.container("app")
    env = (f"-e PROBE_MODE={mode} -e PROBE_PROJECT={project or 0} -e PROBE_IMPORTS={shlex.quote(imports)}"
           f" -e PROBE_VIEWS={shlex.quote(views)} -e LABELSTACK_APP_BATCH_QUERIES={str(batched).lower()}")  # fmt: skip
    package_dir = "\\$(python3 -c 'import label_studio, os; print(os.path.dirname(label_studio.__file__))')"
    command = f'docker exec -i {env} {app} sh -c "cd {package_dir} && python3 manage.py shell" < {PROBE}'
    out = deployment.host.run(command)
    assert out.rc == 0, f"probe {mode} failed (rc {out.rc}): {out.stderr[-3000:]}"
    line = next((line for line in out.stdout.splitlines() if line.startswith("RESULT ")), None)
    assert line, f"probe {mode} printed no result: {out.stdout[-2000:]} {out.stderr[-2000:]}"
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def project(deployment: Deployment, api: Api) -> Iterator[int]:
    created = api.call("POST", "/api/projects", {"title": f"batching-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})
    pid = created["id"]
    try:
        # One task in four carries a scored prediction, one in eight two: ordering by score orders something, and
        # joining the tasks with their predictions multiplies some rows.
        tasks = [predicted(f"batching {i}", *scores(i)) if i % 4 == 0 else {"text": f"batching {i}"}
                 for i in range(N_TASKS)]  # fmt: skip
        ids = api.call("POST", f"/api/projects/{pid}/import?return_task_ids=true", tasks)["task_ids"]
        for task_id in ids[:5]:
            api.call("POST", f"/api/tasks/{task_id}/annotations?project={pid}", {"result": choice_result("Sports")})
        for task_id in ids[1:4]:
            api.call("POST", f"/api/tasks/{task_id}/drafts", {"result": choice_result("Finance"), "lead_time": 2.0})
        probe(deployment, "setup", pid)
        yield pid
    finally:
        api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))
        probe(deployment, "cleanup")


def dm_tab(items: list[dict[str, Any]], ordering: tuple[str, ...] = ()) -> dict[str, Any]:
    """A Data Manager tab's filters and ordering as the UI sends them."""
    return {"title": "probe", "type": "list", "target": "tasks", "filters": {"conjunction": "and", "items": items},
            "ordering": list(ordering)}  # fmt: skip


def dm_filter(column: str, operator: str, value: object, kind: str) -> dict[str, Any]:
    item = {"filter": f"filter:tasks:{column}", "operator": operator, "value": value, "type": kind}
    return {**item, "child_filter": None}


def scores(i: int) -> tuple[float, ...]:
    score = (i * 7 % 30) / 30
    return (score, 1 - score) if i % 8 == 0 else (score,)


def views(admin: int) -> dict[str, dict[str, Any]]:
    """Tabs annotators use (the ones of `make bench --scale`), and one filtered through a join with the
    annotations and ordered by an aggregate of them (the totals then come from a grouped subquery)."""
    return {
        "unlabeled": dm_tab([dm_filter("total_annotations", "equal", 0, "Number")]),
        "text": dm_tab([dm_filter("data.text", "contains", "batching 1", "String")]),
        "score": dm_tab([], ("tasks:predictions_score",)),
        "annotator": dm_tab([dm_filter("annotators", "contains", admin, "List")], ("-tasks:annotators",)),
    }


VIEW_TOTALS = {  # what each tab must count: proof that the tab's filter was applied
    "unlabeled": N_TASKS - 5,
    "text": sum(f"batching {i}".startswith("batching 1") for i in range(N_TASKS)),
    "score": N_TASKS,
    "annotator": 5,
}


@pytest.fixture(scope="module")
def renders(deployment: Deployment, api: Api, project: int) -> dict[bool, dict[str, Any]]:
    tabs = {
        name: api.call("POST", f"/api/dm/views?project={project}", {"project": project, "data": data})["id"]
        for name, data in views(api.call("GET", "/api/current-user/whoami")["id"]).items()
    }  # the project's deletion removes them
    return {batched: probe(deployment, "render", project, batched, views=json.dumps(tabs)) for batched in (True, False)}


def test_the_deployed_app_batches(deployment: Deployment) -> None:
    env = deployment.host.check_output(
        "docker exec %s printenv LABELSTACK_APP_BATCH_QUERIES", deployment.container("app")
    )
    assert env == "true", f"LABELSTACK_APP_BATCH_QUERIES={env!r} in the app container"


@pytest.mark.parametrize("view", ["page10", "page100", "export", *VIEW_TOTALS])
def test_batched_output_is_label_studios_output(renders: dict[bool, dict[str, Any]], view: str) -> None:
    assert comparable(renders[True][view]["body"]) == comparable(renders[False][view]["body"])


@pytest.mark.parametrize("view", ["page100", *VIEW_TOTALS])
def test_a_page_counts_and_sums_its_tasks_in_one_query(renders: dict[bool, dict[str, Any]], view: str) -> None:
    batched, shipped = renders[True][view], renders[False][view]
    assert batched["body"]["total"] == VIEW_TOTALS.get(view, N_TASKS), batched["body"]["total"]
    # Label Studio as shipped: the sums, then the paginator's count (if this fails, upstream merged them).
    assert len(shipped["totals"]) == 2, shipped["totals"]
    assert len(batched["totals"]) == 1, batched["totals"]


@pytest.mark.parametrize(("view", "tasks"), [("page100", 100), ("export", N_TASKS)])
def test_feature_flags_are_read_once_per_page_or_export_batch(
    renders: dict[bool, dict[str, Any]], view: str, tasks: int
) -> None:
    batched, shipped = renders[True][view]["flag_evaluations"], renders[False][view]["flag_evaluations"]
    # Label Studio as shipped: two flags per task (if this fails, upstream stopped asking per task).
    assert shipped >= 2 * tasks, shipped
    assert batched <= 20, batched


def test_a_tab_ordered_by_an_aggregate_counts_without_grouping_unless_its_filter_joins(
    renders: dict[bool, dict[str, Any]],
) -> None:
    score, annotator = renders[True]["score"]["totals"], renders[True]["annotator"]["totals"]
    assert all("GROUP BY" in sql for sql in renders[False]["score"]["totals"]), renders[False]["score"]["totals"]
    assert "GROUP BY" not in score[0], score
    assert "GROUP BY" in annotator[0], annotator  # filtered through a join with the annotations: as shipped


def test_the_totals_index_is_built(renders: dict[bool, dict[str, Any]]) -> None:
    assert renders[True]["totals_index_valid"] is True, "labelstack_task_project_totals missing or invalid"


def comparable(body: dict[str, Any] | Tasks) -> dict[str, Any] | Tasks:
    """A page or an export with each task's comment authors sorted: Label Studio lists them in the database's order
    (its query has no ORDER BY), which PostgreSQL does not keep from one query to the next."""
    if isinstance(body, dict):
        return dict(body, tasks=comparable(body["tasks"]))
    return [dict(task, comment_authors=sorted(task["comment_authors"])) for task in body]


def test_the_probe_covers_drafts_and_comment_authors(renders: dict[bool, dict[str, Any]]) -> None:
    page = renders[True]["page100"]["body"]["tasks"]
    assert sum(bool(t["drafts"]) for t in page) == 3, "the admin's three drafts (only the requester's are listed)"
    assert sum(len(t["comment_authors"]) == 2 for t in page) == 4, [t["comment_authors"] for t in page]
    exported = renders[True]["export"]["body"]
    assert len(exported) == N_TASKS
    assert sum(len(t["drafts"]) for t in exported) == 6, "every user's drafts are exported"


def test_batched_queries_do_not_grow_with_the_page(renders: dict[bool, dict[str, Any]]) -> None:
    batched, shipped = renders[True], renders[False]
    assert batched["page100"]["queries"] == batched["page10"]["queries"], batched
    # Label Studio as shipped: two more queries per task (if this fails, upstream fixed it: drop the app).
    assert shipped["page100"]["queries"] - shipped["page10"]["queries"] >= 2 * 90, shipped
    assert batched["export"]["queries"] < 40 <= N_TASKS * 2 <= shipped["export"]["queries"], (batched, shipped)


def imported(text: str, annotations: Tasks = (), predictions: Tasks = ()) -> dict[str, Any]:
    return {"data": {"text": text}, "annotations": list(annotations), "predictions": list(predictions)}


def predicted(text: str, *scores: float) -> dict[str, Any]:
    return imported(
        text, predictions=[{"result": choice_result("Finance"), "score": s, "model_version": "m1"} for s in scores]
    )


# Plain tasks and tasks with predictions only (the recount is skipped), and tasks with annotations (one cancelled)
# among predicted and plain ones (it runs).
IMPORTS = {
    "plain": [{"text": f"plain {i}"} for i in range(60)] + [{"data": {"text": "with meta"}, "meta": {"source": "x"}}],
    "predicted": [predicted(f"predicted {i}", i / 40) for i in range(40)]
    + [predicted("two", 0.1, 0.9), imported("none")],
    "annotated": [
        imported("annotated", [{"result": choice_result("Sports")}]),
        imported("cancelled", [{"result": [], "was_cancelled": True}]),
        imported("predicted", predictions=[{"result": choice_result("Finance"), "score": 0.4, "model_version": "m1"}]),
        imported("plain among them"),
    ],
}


@pytest.fixture(scope="module")
def imports(deployment: Deployment, project: int) -> dict[bool, dict[str, Any]]:
    return {batched: probe(deployment, "import", project, batched, json.dumps(IMPORTS)) for batched in (True, False)}


@pytest.mark.parametrize("payload", IMPORTS)
def test_imported_tasks_are_label_studios(imports: dict[bool, dict[str, Any]], payload: str) -> None:
    batched, shipped = imports[True][payload], imports[False][payload]
    assert len(batched["rows"]) == len(IMPORTS[payload])
    assert batched["rows"] == shipped["rows"]
    assert batched["project"] == shipped["project"]


def test_only_an_import_without_annotations_skips_the_recount(imports: dict[bool, dict[str, Any]]) -> None:
    # Label Studio as shipped: an UPDATE (of every predicted task) and three SELECTs carrying every new task's id
    # (if equal, upstream changed).
    for payload in ("plain", "predicted"):
        assert imports[True][payload]["queries"] <= imports[False][payload]["queries"] - 3, (payload, imports)
    assert imports[True]["annotated"]["queries"] == imports[False]["annotated"]["queries"], imports
    counters = {
        payload: [(r["total_annotations"], r["cancelled_annotations"], r["total_predictions"]) for r in rows]
        for payload in ("annotated", "predicted")
        for rows in [imports[True][payload]["rows"]]
    }
    assert counters["annotated"] == [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 0)], counters
    assert counters["predicted"] == [(0, 0, 1)] * 40 + [(0, 0, 2), (0, 0, 0)], counters
