#!/usr/bin/env python3
"""Benchmark a deployed labelstack against Label Studio's quick start, with the same client and workload.

Side "deployed": the stack whose credentials file is given (--credentials, or the one of --inventory's
first `labelstack` host, which must be this machine, found in the inventory's labelstack_secrets_dir or the
role's default one; root only): LABELSTACK_LOCAL_URL (or LABEL_STUDIO_URL), LABEL_STUDIO_API_KEY,
LABELSTACK_CA_CERT for HTTPS with the deploy's generated CA, LABELSTACK_PROJECT_NAME for its containers.

Side "quickstart": `pip install label-studio==VERSION && label-studio start` in a virtualenv cached under
--cache-dir (keyed by version), SQLite and the development server on a free loopback port, an admin user and
legacy token made from the environment; stopped at the end, also when the run fails. VERSION is the deployed
stack's (LABELSTACK_LABEL_STUDIO_VERSION of its credentials file) unless --version names another.

Workload, one side after the other: import N text tasks in one request; annotations created by C concurrent
clients; task-list pages of 100 tasks fetched by C concurrent clients; export of the whole project as JSON.
Figures: import seconds, annotations/s and p95, pages/s and p95, export seconds, peak resident memory (RSS
summed over the stack's containers' process trees, or over the quick start's process tree, sampled each
second). The exported task count must equal the imported count on both sides, else the run fails.

--scale runs that workload at several sizes (--scale-sizes, default 20,000 and 200,000 tasks; 16 clients),
deployed stack and quick start one after the other at each size (one quick start serves every size). Its tasks
carry one prediction each (a score, so that ordering by it means something), one in 20 holds the word
"refund", and each run adds what annotators and managers wait for at that size, as the browser asks for it:
three Data Manager filters (tasks without annotations, text contains a word, order by prediction score: the
tab is PATCHed with the filter, then its first page of 30 tasks is read, each result checked), the projects
page's counters and the Data Manager's poll of the project's counters. The report adds each figure's growth
from the first size to the last (the cost curve) and the targets of issue 18.

Results: <output dir>/<UTC time>.json and .md (ratios deployed ÷ quick start, the machine, the load), also
copied to latest.json / latest.md. --quick runs a small workload (a few minutes, used by the test suite); with
--scale, at 200 and 400 tasks with half its annotations and pages each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
# How the test suites find a deployment and read its credentials.env (the folder just put on sys.path).
from labelstack_testlib import (  # noqa: E402
    NotDeployedError,
    ansible_environment,
    inventory_host,
    parse_env_file,
    read_credentials,
)

LABEL_CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="label" toName="text" choice="single">
    <Choice value="positive"/>
    <Choice value="negative"/>
  </Choices>
</View>"""
PAGE_SIZE = 100
REQUEST_TIMEOUT = 3600  # seconds: imports and exports of the full workload run inside one request
START_TIMEOUT = 600  # seconds for the quick start's first boot (migrations on SQLite)
SENTENCE = "the quick brown fox jumps over a lazy dog while labelers annotate every sentence"
SCALE_SIZES = (20000, 200000)
QUICK_SCALE_SIZES = (200, 400)
# What the browser sends (Label Studio 1.23.2's front end, read from its source maps in web/dist). Its API client
# drops trailing slashes and adds ?project=<id> to every Data Manager request (and "project" to their bodies);
# Label Studio then resolves each such path twice (CommonMiddlewareAppendSlashWithoutRedirect), a cost the
# browser pays too. The Data Manager reads 30 tasks a page until the user picks another size (DEFAULT_PAGE_SIZE
# of its Pagination component); the projects page lists 30 projects, then asks for the counters of those it
# shows (pages/Projects/Projects.jsx); the Data Manager polls /api/dm/project every 20 s for its counters
# (AppStore.fetchProject with interaction "timer").
DM_PAGE_SIZE = 30
PROJECTS_PAGE_SIZE = 30
PROJECT_LIST_FIELDS = "id,title,created_by,created_at,color,is_published,assignment_settings,state"
PROJECT_COUNT_FIELDS = (
    "id,description,num_tasks_with_annotations,task_number,skipped_annotations_number,total_annotations_number,"
    "total_predictions_number,ground_truth_number,finished_task_number"
)
DM_POLL_FIELDS = "task_count,task_number,annotation_count,num_tasks_with_annotations,queue_total"
# Scale tasks: one in FILTER_WORD_EVERY holds FILTER_WORD (absent from SENTENCE), what "text contains" looks for.
FILTER_WORD = "refund"
FILTER_WORD_EVERY = 20
SCORE_MODEL = "bench"
# The golden ratio's fractional multiples are all distinct: every task has its own score, so the order is unique.
GOLDEN = (math.sqrt(5) - 1) / 2
# Acceptance targets of the deployed stack relative to the quick start (deployed ÷ quick start).
TARGETS = {
    "import_s": ("<=", 1.0),
    "annotations_per_s": (">=", 1.8),
    "pages_per_s": (">=", 1.8),
    "page_p95_ms": ("<=", 0.5),
    "export_s": ("<=", 0.5),
}
# Issue 18's targets, at every size of a scale run; and the deployed side's growth from the first size to the last.
SCALE_TARGETS = {
    "import_s": ("<=", 1.0),
    "annotations_per_s": (">=", 2.5),
    "pages_per_s": (">=", 2.5),
    "page_p95_ms": ("<=", 0.4),
    "export_s": ("<=", 0.4),
    "filter_unlabeled_p95_ms": ("<=", 0.5),
    "filter_text_p95_ms": ("<=", 0.5),
    "filter_score_p95_ms": ("<=", 0.5),
}
GROWTH_TARGETS = {"page_p95_ms": ("<=", 1.5)}
FIGURES = (
    ("import_s", "import (s)"),
    ("annotations_per_s", "annotations/s"),
    ("annotation_p95_ms", "annotation p95 (ms)"),
    ("pages_per_s", "task-list pages/s"),
    ("page_p95_ms", "page p95 (ms)"),
    ("export_s", "export JSON (s)"),
    ("peak_rss_mib", "peak resident memory (MiB)"),
    ("exported_tasks", "exported tasks"),
)
SCALE_FIGURES = (
    *FIGURES[:5],
    ("filter_unlabeled_p95_ms", "filter: tasks without annotations, p95 (ms)"),
    ("filter_text_p95_ms", f"filter: text contains '{FILTER_WORD}', p95 (ms)"),
    ("filter_score_p95_ms", "filter: order by prediction score, p95 (ms)"),
    ("project_counts_p95_ms", "projects page counts p95 (ms)"),
    ("dm_counts_p95_ms", "Data Manager counts poll p95 (ms)"),
    *FIGURES[5:7],
    ("delete_s", "delete project (s)"),
    ("exported_tasks", "exported tasks"),
)


class BenchError(Exception):
    """A side failed: the message says what and why."""


@dataclass(frozen=True)
class Workload:
    tasks: int
    annotations: int
    pages: int
    clients: int
    # Scale runs: predictions on import, Data Manager filters and project counts, each sampled this many times.
    scale: bool = False
    filter_samples: int = 0
    # Tasks per import request; 0: all of them in one request.
    import_chunk: int = 0


@dataclass
class SideResult:
    name: str
    url: str
    tasks: int = 0
    import_s: float = 0.0
    import_requests: int = 0
    annotations_per_s: float = 0.0
    annotation_p95_ms: float = 0.0
    pages_per_s: float = 0.0
    page_p95_ms: float = 0.0
    filter_unlabeled_p95_ms: float | None = None
    filter_text_p95_ms: float | None = None
    filter_score_p95_ms: float | None = None
    project_counts_p95_ms: float | None = None
    dm_counts_p95_ms: float | None = None
    export_s: float = 0.0
    delete_s: float = 0.0
    retried: list[str] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    exported_tasks: int = 0
    exported_annotations: int = 0
    duration_s: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DmFilter:
    """One Data Manager filter as its tab stores it: filter items, ordering, and the interaction the UI names."""

    key: str
    items: tuple[dict[str, Any], ...]
    ordering: tuple[str, ...]
    interaction: str


DM_FILTERS = (
    DmFilter(
        "filter_unlabeled",
        (
            {
                "filter": "filter:tasks:total_annotations",
                "operator": "equal",
                "value": 0,
                "child_filter": None,
                "type": "Number",
            },
        ),
        (),
        "filter",
    ),
    DmFilter(
        "filter_text",
        (
            {
                "filter": "filter:tasks:data.text",
                "operator": "contains",
                "value": FILTER_WORD,
                "child_filter": None,
                "type": "String",
            },
        ),
        (),
        "filter",
    ),
    DmFilter("filter_score", (), ("tasks:predictions_score",), "ordering"),
)


# ---------------------------------------------------------------- memory of process trees


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces and parentheses: split after its closing one.
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process exited while we read it
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_rss_bytes(roots: list[int]) -> int:
    """Resident memory summed over the processes under `roots` (themselves included)."""
    children = _children_map()
    page = os.sysconf("SC_PAGE_SIZE")
    total, stack, seen = 0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


class PeakMemory:
    """Samples a process tree's resident memory every second in a thread; `peak` is the largest sum."""

    def __init__(self, roots: Callable[[], list[int]]) -> None:
        self._roots = roots
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_bytes(self._roots()))
            if self._stop.wait(1.0):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss_bytes(self._roots()))


# ---------------------------------------------------------------- the client and the workload


class Client:
    """One requests.Session per thread (connection reuse like a real client), token authentication."""

    def __init__(self, url: str, token: str, verify: str | bool) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Token {token}"}
        self._verify = verify
        self._local = threading.local()
        self.retried: list[str] = []  # "METHOD path: status" of each request sent again after a server error

    @classmethod
    def of_stack(cls, creds: dict[str, str]) -> Client:
        """The admin's client of a deployed stack, by the URL that works on its host, trusting its CA if any."""
        url = creds.get("LABELSTACK_LOCAL_URL") or creds["LABEL_STUDIO_URL"]
        return cls(url, creds["LABEL_STUDIO_API_KEY"], creds.get("LABELSTACK_CA_CERT") or True)

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
        return session

    def call(
        self, method: str, path: str, ok: tuple[int, ...] = (200, 201), retry: bool = False, **kwargs: object
    ) -> requests.Response:
        """One request; with retry, a server error (5xx) is answered by sending it once more (recorded)."""
        # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment.
        response = self._session().request(
            method, self.url + path, timeout=REQUEST_TIMEOUT, verify=self._verify, **kwargs
        )
        if retry and response.status_code >= 500:
            self.retried.append(f"{method} {path}: {response.status_code}")
            return self.call(method, path, ok, **kwargs)
        if response.status_code not in ok:
            raise BenchError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response


def p95_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)] * 1000


def timed(fn: Callable[[int], object]) -> Callable[[int], float]:
    def run(item: int) -> float:
        start = time.perf_counter()
        fn(item)
        return time.perf_counter() - start

    return run


def concurrently(fn: Callable[[int], object], items: list[int], clients: int) -> tuple[float, float]:
    """Run fn over items on `clients` threads: (items per second, p95 latency in ms)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        latencies = list(pool.map(timed(fn), items))
    return len(items) / (time.perf_counter() - start), p95_ms(latencies)


def task_text(i: int) -> str:
    words = SENTENCE.split()
    return f"task {i}: " + " ".join(words[(i + k) % len(words)] for k in range(24))


def task_score(i: int) -> float:
    return (i * GOLDEN) % 1.0


def task_payload(i: int, scale: bool) -> dict[str, Any]:
    """Task i as imported: plain text, or (scale runs) with the filter word in some and one scored prediction."""
    if not scale:
        return {"text": task_text(i)}
    text = task_text(i) + (f" {FILTER_WORD}" if i % FILTER_WORD_EVERY == 0 else "")
    choice = "positive" if i % 2 else "negative"
    prediction = {
        "model_version": SCORE_MODEL,
        "score": task_score(i),
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}],
    }
    return {"data": {"text": text}, "predictions": [prediction]}


def task_index(task: dict[str, Any]) -> int:
    """The i of task_text(i), read back from a task the API returned."""
    return int(task["data"]["text"].split(":", 1)[0].removeprefix("task "))


def import_chunks(workload: Workload) -> list[bytes]:
    """The import's request bodies, serialized before the clock starts (the client's JSON work is not measured)."""
    size = workload.import_chunk or workload.tasks
    return [
        json.dumps([task_payload(i, workload.scale) for i in range(start, min(start + size, workload.tasks))]).encode()
        for start in range(0, workload.tasks, size)
    ]


def import_tasks(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    bodies = import_chunks(workload)
    imported = 0
    start = time.perf_counter()
    for body in bodies:
        try:
            answer = client.call(
                "POST", f"/api/projects/{project}/import", data=body, headers={"Content-Type": "application/json"}
            ).json()
        except (BenchError, requests.RequestException) as exc:
            raise BenchError(
                f"{result.name}: import request of {len(body) >> 20} MiB failed after"
                f" {time.perf_counter() - start:.0f}s ({exc}); --import-chunk sends fewer tasks per request"
            ) from exc
        imported += answer.get("task_count") or 0
    result.import_s = time.perf_counter() - start
    result.import_requests = len(bodies)
    if imported != workload.tasks:
        raise BenchError(f"{result.name}: import reported {imported} tasks, sent {workload.tasks}")
    log(f"{result.name}: imported {workload.tasks} tasks in {result.import_s:.1f}s ({len(bodies)} requests)")


@contextmanager
def phase(result: SideResult, name: str) -> Iterator[None]:
    """Records a phase's wall time (requests and checks) in result.phases_s: where a run's minutes go."""
    start = time.perf_counter()
    try:
        yield
    finally:
        result.phases_s[name] = round(time.perf_counter() - start, 1)


def run_workload(client: Client, workload: Workload, result: SideResult) -> None:
    """Create a project, run the phases, check the export, delete the project."""
    began = time.perf_counter()
    result.tasks = workload.tasks
    client.call("GET", "/api/projects")  # warm up: the first request of a worker loads lazy parts of Django
    project = client.call(
        "POST", "/api/projects", json={"title": f"bench-{secrets.token_hex(4)}", "label_config": LABEL_CONFIG}
    ).json()["id"]
    try:
        with phase(result, "import"):
            import_tasks(client, project, workload, result)
        with phase(result, "annotations"):
            annotate(client, project, workload, result)
        with phase(result, "pages"):
            read_pages(client, project, workload, result)
        if workload.scale:
            with phase(result, "filters"):
                run_filters(client, project, workload, result)
            with phase(result, "counts"):
                run_counts(client, project, workload, result)
        with phase(result, "export"):
            export(client, project, workload, result)
    finally:
        # A failed delete (a 200,000-task project deleted in one request may outlast the stack's request timeout)
        # must neither lose the figures measured nor hide the error that ended the run: it is logged only.
        try:
            with phase(result, "delete"):
                client.call("DELETE", f"/api/projects/{project}", ok=(204, 404))
        except (BenchError, requests.RequestException) as exc:
            log(f"{result.name}: WARNING: project {project} not deleted ({exc}); delete it by hand")
        result.delete_s = result.phases_s["delete"]
        result.duration_s = round(time.perf_counter() - began, 1)


def annotate(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    listing = client.call(
        "GET", "/api/tasks", params={"project": project, "page_size": workload.annotations, "fields": "task_only"}
    ).json()
    task_ids = [t["id"] for t in listing["tasks"]]
    if len(task_ids) < workload.annotations:
        raise BenchError(f"{result.name}: {len(task_ids)} tasks listed, need {workload.annotations}")
    payload = {
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}]
    }

    def one(task: int) -> None:
        client.call("POST", f"/api/tasks/{task}/annotations?project={project}", json=payload)

    result.annotations_per_s, result.annotation_p95_ms = concurrently(one, task_ids, workload.clients)
    log(f"{result.name}: {result.annotations_per_s:.1f} annotations/s, p95 {result.annotation_p95_ms:.0f} ms")


def read_pages(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    n_pages = max(1, workload.tasks // PAGE_SIZE)

    def page(number: int) -> None:
        params = {"project": project, "page": number % n_pages + 1, "page_size": PAGE_SIZE}
        got = len(client.call("GET", "/api/tasks", params=params).json()["tasks"])
        if got != min(PAGE_SIZE, workload.tasks):
            raise BenchError(f"{result.name}: page {params['page']} held {got} tasks")

    result.pages_per_s, result.page_p95_ms = concurrently(page, list(range(workload.pages)), workload.clients)
    log(f"{result.name}: {result.pages_per_s:.1f} pages/s, p95 {result.page_p95_ms:.0f} ms")


def export(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryFile() as spool:
        response = client.call(
            "GET",
            f"/api/projects/{project}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
            stream=True,
        )
        for chunk in response.iter_content(1 << 20):
            spool.write(chunk)
        result.export_s = time.perf_counter() - start
        spool.seek(0)
        exported = json.load(spool)
    result.exported_tasks = len(exported)
    result.exported_annotations = sum(len(t.get("annotations") or []) for t in exported)
    log(f"{result.name}: exported {result.exported_tasks} tasks in {result.export_s:.1f}s")
    if (result.exported_tasks, result.exported_annotations) != (workload.tasks, workload.annotations):
        raise BenchError(
            f"{result.name}: exported {result.exported_tasks} tasks / {result.exported_annotations} annotations,"
            f" expected {workload.tasks} / {workload.annotations}"
        )


# ---------------------------------------------------------------- scale runs: Data Manager filters, project counts


def dm_hidden_columns(client: Client, project: int) -> dict[str, list[str]]:
    """The hidden columns a new Data Manager tab starts with (TabStore.fetchColumns: each column's
    visibility_defaults). They matter: Label Studio computes only the fields of visible columns."""
    columns = client.call("GET", "/api/dm/columns", params={"project": project}).json()["columns"]

    def path(column: dict[str, Any]) -> str:
        parent = next(
            (
                c
                for c in columns
                if not c.get("parent") and c["id"] == column.get("parent") and c["target"] == column["target"]
            ),
            None,
        )
        return f"{path(parent)}.{column['id']}" if parent else column["id"]

    hidden: dict[str, list[str]] = {"explore": [], "labeling": []}
    for column in columns:
        for where, visible in (column.get("visibility_defaults") or {}).items():
            if not visible:
                hidden.setdefault(where, []).append(f"{column['target']}:{path(column)}")
    return hidden


def dm_tab(hidden: dict[str, list[str]], dm_filter: DmFilter | None) -> dict[str, Any]:
    """A tab's `data` as the Data Manager serializes it (Tab.serialize, API version 2)."""
    return {
        "title": "Default",
        "ordering": list(dm_filter.ordering) if dm_filter else [],
        "type": "list",
        "target": "tasks",
        "filters": {"conjunction": "and", "items": list(dm_filter.items) if dm_filter else []},
        "hiddenColumns": hidden,
        "columnsWidth": {},
        "columnsDisplayType": {},
        "gridWidth": 4,
        "gridFitImagesToWidth": False,
        "semantic_search": [],
        "agreement_selected": {},
    }


def filter_check(dm_filter: DmFilter, workload: Workload) -> Callable[[dict[str, Any]], str | None]:
    """What the filtered first page must hold on both sides (a message when it does not)."""
    if dm_filter.key == "filter_unlabeled":
        total = workload.tasks - workload.annotations
    elif dm_filter.key == "filter_text":
        total = -(-workload.tasks // FILTER_WORD_EVERY)
    else:
        total = workload.tasks
    lowest = sorted(range(workload.tasks), key=task_score)[:DM_PAGE_SIZE]

    def check(page: dict[str, Any]) -> str | None:
        tasks = page["tasks"]
        if page["total"] != total:
            return f"total {page['total']}, expected {total}"
        if len(tasks) != min(DM_PAGE_SIZE, total):
            return f"{len(tasks)} tasks on the first page"
        if dm_filter.key == "filter_unlabeled" and any(t.get("total_annotations") for t in tasks):
            return "an annotated task listed"
        if dm_filter.key == "filter_text" and any(FILTER_WORD not in t["data"]["text"] for t in tasks):
            return f"a task without {FILTER_WORD!r} listed"
        if dm_filter.key == "filter_score" and [task_index(t) for t in tasks] != lowest:
            return "tasks not in ascending prediction score"
        return None

    return check


def run_filters(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    """Each filter as annotators apply it: PATCH of their tab, then its first page (timed together)."""
    hidden = dm_hidden_columns(client, project)
    for dm_filter in DM_FILTERS:
        p95 = run_filter(client, project, workload, result.name, hidden, dm_filter)
        setattr(result, f"{dm_filter.key}_p95_ms", p95)
        log(f"{result.name}: {dm_filter.key} p95 {p95:.0f} ms")


def run_filter(
    client: Client, project: int, workload: Workload, side: str, hidden: dict[str, list[str]], dm_filter: DmFilter
) -> float:
    """p95 of one filter. Every client has its own tab, created as the browser creates a new one (no filter)
    before the clock starts, and a sample takes a tab no other sample holds: one browser tab is never PATCHed by
    two requests at once (Label Studio rewrites the tab's filters on each PATCH; two at once on one tab failed
    with 500 on the quick start)."""
    tabs: queue.Queue[int] = queue.Queue()
    for _ in range(workload.clients):
        new_tab = {"data": dm_tab(hidden, None), "project": project}
        tabs.put(client.call("POST", "/api/dm/views", params={"project": project}, json=new_tab).json()["id"])
    data = dm_tab(hidden, dm_filter)
    check = filter_check(dm_filter, workload)

    def apply(_: int) -> None:
        tab = tabs.get()
        try:
            params = {"interaction": dm_filter.interaction, "project": project}
            body = {"id": tab, "data": data, "project": project}
            # The quick start's SQLite answered one of these with 500 under 16 clients and ended a 40-minute run:
            # the same PATCH is sent once more (its time counts) and the report lists it.
            client.call("PATCH", f"/api/dm/views/{tab}", params=params, json=body, retry=True)
            params.update(page=1, page_size=DM_PAGE_SIZE, view=tab)
            wrong = check(client.call("GET", "/api/tasks", params=params).json())
        finally:
            tabs.put(tab)
        if wrong:
            raise BenchError(f"{side}: {dm_filter.key}: {wrong}")

    return concurrently(apply, list(range(workload.filter_samples)), workload.clients)[1]


def run_counts(client: Client, project: int, workload: Workload, result: SideResult) -> None:
    """The projects page (list, then the counters of the projects shown: here the benchmark's own) and the
    Data Manager's poll of its project's counters, each checked against what was imported and annotated
    (the projects list annotates the counters it is asked for; the poll's view adds task_count and
    annotation_count to the project's serializer, whose counter fields stay empty there)."""

    def verify(what: str, counts: dict[str, Any], expected: dict[str, int]) -> None:
        got = {key: counts.get(key) for key in expected}
        if got != expected:
            raise BenchError(f"{result.name}: {what} counted {got}, expected {expected}")

    def projects_page(_: int) -> None:
        params = {"page": 1, "page_size": PROJECTS_PAGE_SIZE, "include": PROJECT_LIST_FIELDS}
        client.call("GET", "/api/projects", params=params)
        params = {"ids": project, "include": PROJECT_COUNT_FIELDS, "page_size": PROJECTS_PAGE_SIZE}
        listed = client.call("GET", "/api/projects", params=params).json()["results"]
        ours = next((p for p in listed if p["id"] == project), {})
        verify(
            "the projects page",
            ours,
            {"task_number": workload.tasks, "num_tasks_with_annotations": workload.annotations},
        )

    def dm_poll(_: int) -> None:
        params = {"interaction": "timer", "include": DM_POLL_FIELDS, "project": project}
        counts = client.call("GET", "/api/dm/project", params=params).json()
        verify(
            "the Data Manager poll", counts, {"task_count": workload.tasks, "annotation_count": workload.annotations}
        )

    samples = list(range(workload.filter_samples))
    _, result.project_counts_p95_ms = concurrently(projects_page, samples, workload.clients)
    _, result.dm_counts_p95_ms = concurrently(dm_poll, samples, workload.clients)
    log(
        f"{result.name}: counts p95 {result.project_counts_p95_ms:.0f} ms (projects page),"
        f" {result.dm_counts_p95_ms:.0f} ms (Data Manager poll)"
    )


# ---------------------------------------------------------------- side (a): the deployed stack


def stack_credentials(credentials: Path | None, inventory: str) -> dict[str, str]:
    """The credentials file given, else the one of the inventory's first `labelstack` host."""
    if credentials:
        if not credentials.is_file():
            raise BenchError(f"{credentials} not found")
        return parse_env_file(credentials.read_text())
    return read_credentials(inventory_host(inventory), inventory)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def stack_pids(project_name: str) -> list[int]:
    ids = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project_name}").split()
    if not ids:
        raise BenchError(f"no running container of compose project {project_name!r}")
    return [int(pid) for pid in docker("inspect", "--format", "{{.State.Pid}}", *ids).split()]


def app_settings(project_name: str) -> dict[str, str]:
    """The uWSGI settings of the stack's app container, recorded with the figures."""
    ids = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.compose.project={project_name}",
        "--filter",
        "label=com.docker.compose.service=app",
    ).split()
    if not ids:
        return {}
    env = json.loads(docker("inspect", "--format", "{{json .Config.Env}}", ids[0]))
    return dict(item.split("=", 1) for item in env if item.startswith("UWSGI_"))


@dataclass
class Side:
    """One side under test: its client, the processes whose memory counts, what is recorded with it."""

    name: str
    client: Client
    roots: Callable[[], list[int]]
    settings: dict[str, str]

    def measure(self, workload: Workload) -> SideResult:
        result = SideResult(self.name, self.client.url, settings=self.settings)
        before = len(self.client.retried)
        try:
            with PeakMemory(self.roots) as memory:
                run_workload(self.client, workload, result)
        finally:
            result.retried = self.client.retried[before:]
        result.peak_rss_mib = memory.peak / 2**20
        return result


def deployed_side(creds: dict[str, str]) -> Side:
    project_name = creds["LABELSTACK_PROJECT_NAME"]
    return Side("deployed", Client.of_stack(creds), lambda: stack_pids(project_name), app_settings(project_name))


# ---------------------------------------------------------------- side (b): the quick start


def quickstart_venv(cache_dir: Path, version: str) -> Path:
    """A virtualenv with label-studio==version, built once per version and reused.

    A marker file is written last, so a build that was interrupted is started again from scratch.
    """
    venv = cache_dir / f"label-studio-{version}"
    marker = venv / ".labelstack-bench-complete"
    if marker.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"quickstart: building {venv} (pip install label-studio=={version}, a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"label-studio=={version}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        raise BenchError(f"pip install label-studio=={version} failed:\n{pip.stderr[-3000:]}")
    marker.touch()
    return venv


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def quickstart_server(venv: Path, workdir: Path, token: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`label-studio start` (SQLite, development server) on a free loopback port; stopped on exit."""
    port = free_port()
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(workdir / "data"),
        "LABEL_STUDIO_USERNAME": "bench@localhost",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(16),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    log_path = workdir / "label-studio.log"
    command = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _healthy(url):
            if server.poll() is not None:
                raise BenchError(f"quickstart exited with {server.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"quickstart not healthy at {url} after {START_TIMEOUT}s:\n{_tail(log_path)}")
            time.sleep(1)
        yield url, server
    finally:
        _stop(server)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's own process group, SIGKILL after 30 s."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def quickstart_side(stack: ExitStack, cache_dir: Path, version: str) -> Side:
    """A quick start running until `stack` closes (one serves every size of a scale run)."""
    venv = quickstart_venv(cache_dir, version)
    token = secrets.token_hex(20)
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="labelstack-bench-"))
    url, server = stack.enter_context(quickstart_server(venv, Path(tmp), token))
    settings = {"server": "label-studio start (development server), SQLite"}
    return Side("quickstart", Client(url, token, True), lambda: [server.pid], settings)


# ---------------------------------------------------------------- the report


def machine() -> dict[str, object]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
    return {"nproc": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1), "cpu": cpu, "kernel": platform.release()}


def ratio(deployed: float | None, quick: float | None) -> float | None:
    # Three places: a target is judged on what is shown, and two places turned an export at 0.405 into a met <= 0.4.
    return round(deployed / quick, 3) if deployed is not None and quick else None


def target_met(key: str, value: float | None, targets: dict[str, tuple[str, float]] = TARGETS) -> str:
    if key not in targets or value is None:
        return ""
    op, bound = targets[key]
    ok = value <= bound if op == "<=" else value >= bound
    return f"{op} {bound} {'yes' if ok else 'NO'}"


def cell(value: object) -> str:
    return "-" if value is None else (f"{value:.1f}" if isinstance(value, float) else str(value))


def ratio_cell(value: float | None) -> str:
    return "-" if value is None else str(value)  # rounded to three places by ratio()


def header(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    return [
        f"Label Studio {report['label_studio_version']}, {report['started']}; machine: {m['nproc']} CPUs"
        f" ({m['cpu']}), {m['ram_gib']} GiB RAM; load average before/after: {report['load_before']} /"
        f" {report['load_after']}.",
    ]


def side_table(
    sides: dict[str, Any], figures: tuple[tuple[str, str], ...], targets: dict[str, tuple[str, float]]
) -> list[str]:
    lines = ["| figure | deployed | quick start | deployed ÷ quick start | target |", "|---|---:|---:|---:|---|"]
    for key, label in figures:
        values = [sides[name][key] if name in sides else None for name in ("deployed", "quickstart")]
        r = ratio(*values)
        lines.append(
            f"| {label} | {cell(values[0])} | {cell(values[1])} | {ratio_cell(r)} | {target_met(key, r, targets)} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    if report.get("mode") == "scale":
        return scale_markdown(report)
    sides = report["sides"]
    w = report["workload"]
    lines = [
        *header(report),
        f"Workload: {w['tasks']} tasks imported in one request, {w['annotations']} annotations and"
        f" {w['pages']} task-list pages ({PAGE_SIZE} tasks) by {w['clients']} concurrent clients, JSON export.",
        "",
        *side_table(sides, FIGURES, TARGETS),
    ]
    if "deployed" in sides:
        lines += ["", f"Deployed app settings: {sides['deployed']['settings']}"]
    return "\n".join(lines) + "\n"


def growth(runs: dict[str, dict[str, Any]], side: str) -> dict[str, float | None]:
    """Each figure at the last size ÷ the same figure at the first (the cost curve of one side)."""
    first, last = runs[min(runs, key=int)].get(side), runs[max(runs, key=int)].get(side)
    if not first or not last:
        return {}
    return {key: ratio(last[key], first[key]) for key, _ in SCALE_FIGURES}


def scale_markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    runs = report["sizes"]
    sizes = sorted(runs, key=int)
    chunk = f"requests of up to {w['import_chunk']} tasks" if w["import_chunk"] else "one request"
    lines = [
        *header(report),
        f"Scale workload at {', '.join(sizes)} tasks (each with one scored prediction, imported in {chunk}):"
        f" {w['annotations']} annotations and {w['pages']} task-list pages ({PAGE_SIZE} tasks) by {w['clients']}"
        f" concurrent clients; {w['filter_samples']} samples of each Data Manager filter (tab PATCHed, then its"
        f" first page of {DM_PAGE_SIZE} tasks) and of each project count request; JSON export. Run time:"
        f" {report['duration_s'] / 60:.1f} min.",
    ]
    for size in sizes:
        lines += ["", f"**{size} tasks**", "", *side_table(runs[size], SCALE_FIGURES, SCALE_TARGETS), ""]
        lines += [
            f"Wall time of the {name} run: {side['duration_s']:.0f} s ("
            + ", ".join(f"{phase} {seconds:.0f}" for phase, seconds in side["phases_s"].items())
            + ")."
            + (f" Sent again after a server error: {'; '.join(side['retried'])}." if side.get("retried") else "")
            for name, side in runs[size].items()
        ]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        curve = {side: growth(runs, side) for side in ("deployed", "quickstart")}
        lines += [
            "",
            f"**Cost curve {first} → {last} tasks** (value at {last} ÷ value at {first})",
            "",
            f"| figure | deployed {first} | deployed {last} | growth | quick start {first} | quick start {last}"
            " | growth | target (deployed growth) |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for key, label in SCALE_FIGURES:
            values = [
                runs[size].get(side, {}).get(key) for side in ("deployed", "quickstart") for size in (first, last)
            ]
            g = [curve[side].get(key) for side in ("deployed", "quickstart")]
            lines.append(
                f"| {label} | {cell(values[0])} | {cell(values[1])} | {ratio_cell(g[0])} | {cell(values[2])} |"
                f" {cell(values[3])} | {ratio_cell(g[1])} | {target_met(key, g[0], GROWTH_TARGETS)} |"
            )
    settings = next((runs[size]["deployed"]["settings"] for size in sizes if "deployed" in runs[size]), None)
    if settings is not None:
        lines += ["", f"Deployed app settings: {settings}"]
    return "\n".join(lines) + "\n"


def scale_summary(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The ratios per size and the growth per side, next to their targets, for the JSON report."""
    return {
        "ratios": {
            size: {
                key: ratio(sides.get("deployed", {}).get(key), sides.get("quickstart", {}).get(key))
                for key, _ in SCALE_FIGURES
            }
            for size, sides in runs.items()
        },
        "growth": {side: growth(runs, side) for side in ("deployed", "quickstart")},
        "targets": {key: f"{op} {bound}" for key, (op, bound) in SCALE_TARGETS.items()},
        "growth_targets": {key: f"{op} {bound}" for key, (op, bound) in GROWTH_TARGETS.items()},
    }


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------- the command line


def sizes_argument(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of task counts") from None
    if any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be positive")
    return tuple(sorted(set(sizes)))


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[Workload]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--credentials", type=Path, help="credentials.env of the deployed stack")
    target.add_argument("--inventory", help="inventory whose stack (on this machine) is measured")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small workload: 500 tasks, 40 annotations, 20 pages (with --scale: 200 and 400 tasks, 20 annotations,"
        " 10 pages, 4 clients, 8 samples)",
    )
    parser.add_argument("--tasks", type=int, help="tasks imported (default 20000, --quick 500)")
    parser.add_argument("--annotations", type=int, help="annotations created (default 400, --quick 40)")
    parser.add_argument("--pages", type=int, help="task-list pages fetched (default 200, --quick 20)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8, --scale 16)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="scale run: the workload with predictions, Data Manager filters and project counts at each of"
        " --scale-sizes, and the cost curve",
    )
    parser.add_argument(
        "--scale-sizes",
        type=sizes_argument,
        help=f"task counts of a scale run (default {','.join(map(str, SCALE_SIZES))},"
        f" --quick {','.join(map(str, QUICK_SCALE_SIZES))})",
    )
    parser.add_argument(
        "--filter-samples",
        type=int,
        help="scale run: samples of each filter and count request (default 32, --quick 8)",
    )
    parser.add_argument(
        "--import-chunk",
        type=int,
        default=0,
        help="tasks per import request, the same on both sides (default: all in one request)",
    )
    parser.add_argument(
        "--side",
        choices=["both", "deployed", "quickstart"],
        default="both",
        help="measure both sides (default) or only one, e.g. while tuning",
    )
    parser.add_argument("--version", help="label-studio version of the quick start (default: the deployed stack's)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "labelstack-bench",
        help="where the quick start's virtualenv is kept (default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=REPO / "reports" / "bench",
        help="where the JSON and Markdown results go (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    small = args.quick
    if args.scale and args.tasks:
        parser.error("--tasks is for a single-size run; a scale run takes --scale-sizes")
    if not args.scale and (args.scale_sizes or args.filter_samples):
        parser.error("--scale-sizes and --filter-samples need --scale")
    # (annotations, pages, clients, filter samples) by (--quick, --scale). --quick --scale runs in `make test`: two
    # sizes, so half the annotations and pages of --quick each, and 4 clients (each creates a tab per filter).
    defaults = {
        (False, False): (400, 200, 8, 0),
        (True, False): (40, 20, 8, 0),
        (False, True): (400, 200, 16, 32),
        (True, True): (20, 10, 4, 8),
    }
    annotations, pages, clients, samples = defaults[(small, args.scale)]
    base = Workload(
        tasks=args.tasks or (500 if small else 20000),
        annotations=args.annotations or annotations,
        pages=args.pages or pages,
        clients=args.clients or clients,
        scale=args.scale,
        filter_samples=args.filter_samples or samples,
        import_chunk=max(0, args.import_chunk),
    )
    sizes = (args.scale_sizes or (QUICK_SCALE_SIZES if small else SCALE_SIZES)) if args.scale else (base.tasks,)
    if base.annotations > min(sizes):
        what = "the smallest of --scale-sizes" if args.scale else "--tasks"
        parser.error(f"--annotations {base.annotations} exceeds {what} {min(sizes)}")
    return args, [replace(base, tasks=size) for size in sizes]


def main() -> int:
    args, workloads = parse_arguments()
    # testinfra's ansible backend (finding the inventory's host) runs ansible-inventory: the venv's, this config.
    os.environ.update(ansible_environment())
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    began = time.perf_counter()
    try:
        # The deployed stack's file also names the Label Studio version the quick start must run.
        needed = args.side != "quickstart" or not args.version
        creds = stack_credentials(args.credentials, args.inventory or "inventory/local") if needed else {}
        version = args.version or creds.get("LABELSTACK_LABEL_STUDIO_VERSION")
        if not version:
            raise BenchError(
                "the credentials file has no LABELSTACK_LABEL_STUDIO_VERSION: deploy first, or pass --version"
            )
        report: dict[str, Any] = {
            "started": started,
            "label_studio_version": version,
            "workload": asdict(replace(workloads[0], tasks=workloads[-1].tasks)),
            "machine": machine(),
            "load_before": load_average(),
        }
        runs: dict[str, dict[str, Any]] = {}
        with ExitStack() as stack:
            sides = []
            if args.side in ("both", "deployed"):
                sides.append(deployed_side(creds))
            if args.side in ("both", "quickstart"):
                sides.append(quickstart_side(stack, args.cache_dir, version))
            for workload in workloads:
                for side in sides:
                    runs.setdefault(str(workload.tasks), {})[side.name] = asdict(side.measure(workload))
    except (BenchError, NotDeployedError, requests.RequestException, subprocess.CalledProcessError) as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    report["load_after"] = load_average()
    report["duration_s"] = round(time.perf_counter() - began, 1)
    if args.scale:
        report["workload"]["sizes"] = [w.tasks for w in workloads]
        report.update(mode="scale", sizes=runs, **scale_summary(runs))
    else:
        report["sides"] = runs[str(workloads[0].tasks)]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(report)
    for name in (started, "latest"):
        (args.output_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.output_dir / f"{name}.md").write_text(table)
    print(table)
    log(f"results in {args.output_dir / started}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
