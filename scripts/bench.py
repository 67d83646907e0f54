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

Results: <output dir>/<UTC time>.json and .md (ratios deployed ÷ quick start, the machine, the load), also
copied to latest.json / latest.md. --quick runs a small workload (a few minutes, used by the test suite).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
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
# Acceptance targets of the deployed stack relative to the quick start (deployed ÷ quick start).
TARGETS = {
    "import_s": ("<=", 1.0),
    "annotations_per_s": (">=", 1.8),
    "pages_per_s": (">=", 1.8),
    "page_p95_ms": ("<=", 0.5),
    "export_s": ("<=", 0.5),
}
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


class BenchError(Exception):
    """A side failed: the message says what and why."""


@dataclass(frozen=True)
class Workload:
    tasks: int
    annotations: int
    pages: int
    clients: int


@dataclass
class SideResult:
    name: str
    url: str
    import_s: float = 0.0
    annotations_per_s: float = 0.0
    annotation_p95_ms: float = 0.0
    pages_per_s: float = 0.0
    page_p95_ms: float = 0.0
    export_s: float = 0.0
    peak_rss_mib: float = 0.0
    exported_tasks: int = 0
    exported_annotations: int = 0
    settings: dict[str, str] = field(default_factory=dict)


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

    def call(self, method: str, path: str, ok: tuple[int, ...] = (200, 201), **kwargs: object) -> requests.Response:
        # verify per request: a session's verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment.
        response = self._session().request(
            method, self.url + path, timeout=REQUEST_TIMEOUT, verify=self._verify, **kwargs
        )
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


def run_workload(client: Client, workload: Workload, result: SideResult) -> None:
    """Create a project, run the four phases, check the export, delete the project."""
    client.call("GET", "/api/projects")  # warm up: the first request of a worker loads lazy parts of Django
    project = client.call(
        "POST", "/api/projects", json={"title": f"bench-{secrets.token_hex(4)}", "label_config": LABEL_CONFIG}
    ).json()["id"]
    try:
        tasks = [{"text": task_text(i)} for i in range(workload.tasks)]
        start = time.perf_counter()
        imported = client.call("POST", f"/api/projects/{project}/import", json=tasks).json()
        result.import_s = time.perf_counter() - start
        if imported.get("task_count") != workload.tasks:
            raise BenchError(
                f"{result.name}: import reported {imported.get('task_count')} tasks, sent {workload.tasks}"
            )
        log(f"{result.name}: imported {workload.tasks} tasks in {result.import_s:.1f}s")

        listing = client.call(
            "GET", "/api/tasks", params={"project": project, "page_size": workload.annotations, "fields": "task_only"}
        ).json()
        task_ids = [t["id"] for t in listing["tasks"]]
        if len(task_ids) < workload.annotations:
            raise BenchError(f"{result.name}: {len(task_ids)} tasks listed, need {workload.annotations}")
        payload = {
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["positive"]}}]
        }

        def annotate(task: int) -> None:
            client.call("POST", f"/api/tasks/{task}/annotations?project={project}", json=payload)

        result.annotations_per_s, result.annotation_p95_ms = concurrently(annotate, task_ids, workload.clients)
        log(f"{result.name}: {result.annotations_per_s:.1f} annotations/s, p95 {result.annotation_p95_ms:.0f} ms")

        n_pages = max(1, workload.tasks // PAGE_SIZE)

        def page(number: int) -> None:
            params = {"project": project, "page": number % n_pages + 1, "page_size": PAGE_SIZE}
            got = len(client.call("GET", "/api/tasks", params=params).json()["tasks"])
            if got != min(PAGE_SIZE, workload.tasks):
                raise BenchError(f"{result.name}: page {params['page']} held {got} tasks")

        result.pages_per_s, result.page_p95_ms = concurrently(page, list(range(workload.pages)), workload.clients)
        log(f"{result.name}: {result.pages_per_s:.1f} pages/s, p95 {result.page_p95_ms:.0f} ms")

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
    finally:
        client.call("DELETE", f"/api/projects/{project}", ok=(204, 404))


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


def bench_deployed(creds: dict[str, str], workload: Workload) -> SideResult:
    client = Client.of_stack(creds)
    project_name = creds["LABELSTACK_PROJECT_NAME"]
    result = SideResult("deployed", client.url, settings=app_settings(project_name))
    with PeakMemory(lambda: stack_pids(project_name)) as memory:
        run_workload(client, workload, result)
    result.peak_rss_mib = memory.peak / 2**20
    return result


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


def bench_quickstart(cache_dir: Path, version: str, workload: Workload) -> SideResult:
    venv = quickstart_venv(cache_dir, version)
    token = secrets.token_hex(20)
    with (
        tempfile.TemporaryDirectory(prefix="labelstack-bench-") as tmp,
        quickstart_server(venv, Path(tmp), token) as (
            url,
            server,
        ),
    ):
        result = SideResult("quickstart", url, settings={"server": "label-studio start (development server), SQLite"})
        with PeakMemory(lambda: [server.pid]) as memory:
            run_workload(Client(url, token, True), workload, result)
        result.peak_rss_mib = memory.peak / 2**20
    return result


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


def ratio(deployed: float, quick: float) -> float | None:
    return round(deployed / quick, 2) if quick else None


def target_met(key: str, value: float | None) -> str:
    if key not in TARGETS or value is None:
        return ""
    op, bound = TARGETS[key]
    ok = value <= bound if op == "<=" else value >= bound
    return f"{op} {bound} {'yes' if ok else 'NO'}"


def markdown(report: dict[str, Any]) -> str:
    sides = report["sides"]
    m = report["machine"]
    w = report["workload"]
    lines = [
        f"Label Studio {report['label_studio_version']}, {report['started']}; machine: {m['nproc']} CPUs"
        f" ({m['cpu']}), {m['ram_gib']} GiB RAM; load average before/after: {report['load_before']} /"
        f" {report['load_after']}.",
        f"Workload: {w['tasks']} tasks imported in one request, {w['annotations']} annotations and"
        f" {w['pages']} task-list pages ({PAGE_SIZE} tasks) by {w['clients']} concurrent clients, JSON export.",
        "",
        "| figure | deployed | quick start | deployed ÷ quick start | target |",
        "|---|---:|---:|---:|---|",
    ]
    for key, label in FIGURES:
        values = [sides[name][key] if name in sides else None for name in ("deployed", "quickstart")]
        both = None not in values
        r = ratio(values[0], values[1]) if both else None
        cells = ["-" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v)) for v in values]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {'-' if r is None else r} | {target_met(key, r)} |")
    if "deployed" in sides:
        lines += ["", f"Deployed app settings: {sides['deployed']['settings']}"]
    return "\n".join(lines) + "\n"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--credentials", type=Path, help="credentials.env of the deployed stack")
    target.add_argument("--inventory", help="inventory whose stack (on this machine) is measured")
    parser.add_argument("--quick", action="store_true", help="small workload: 500 tasks, 40 annotations, 20 pages")
    parser.add_argument("--tasks", type=int, help="tasks imported (default 20000, --quick 500)")
    parser.add_argument("--annotations", type=int, help="annotations created (default 400, --quick 40)")
    parser.add_argument("--pages", type=int, help="task-list pages fetched (default 200, --quick 20)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: %(default)s)")
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
    args = parser.parse_args()
    small = args.quick
    workload = Workload(
        tasks=args.tasks or (500 if small else 20000),
        annotations=args.annotations or (40 if small else 400),
        pages=args.pages or (20 if small else 200),
        clients=args.clients,
    )
    if workload.annotations > workload.tasks:
        parser.error(f"--annotations {workload.annotations} exceeds --tasks {workload.tasks}")
    # testinfra's ansible backend (finding the inventory's host) runs ansible-inventory: the venv's, this config.
    os.environ.update(ansible_environment())
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
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
            "workload": asdict(workload),
            "machine": machine(),
            "load_before": load_average(),
            "sides": {},
        }
        if args.side in ("both", "deployed"):
            report["sides"]["deployed"] = asdict(bench_deployed(creds, workload))
        if args.side in ("both", "quickstart"):
            report["sides"]["quickstart"] = asdict(bench_quickstart(args.cache_dir, version, workload))
    except (BenchError, NotDeployedError, requests.RequestException, subprocess.CalledProcessError) as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    report["load_after"] = load_average()
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
