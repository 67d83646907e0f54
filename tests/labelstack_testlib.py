"""The labelstack test library: the deployment under test, its HTTP API, playbook runs, polling.

Every suite imports it (tests/ is on pytest's pythonpath), and so do scripts/bench.py and scripts/bench-backup.py.
What a deployment is (URL, ports, version, paths) is read from its credentials.env; only where that file lies comes
from the inventory or the role's defaults.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import os
import re
import shlex
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import certifi
import pytest
import requests
import testinfra
import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "labelstack" / "defaults" / "main.yml"
CREDENTIALS_FILE = "credentials.env"
# Debian's bundle of the CAs this machine trusts (ca-certificates; a TLS-intercepting proxy's CA included).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_TIMEOUT = 60.0
# Seconds for requests that run long inside Label Studio (the fault tests' 20,000-task import in one request).
SLOW_TIMEOUT = 300.0
# How long a broken stack (a killed service, a restarted daemon) gets to be healthy again.
RECOVERY_TIMEOUT = 240

# JSON as parsed by json.loads / returned by the API.
JsonValue = Any
T = TypeVar("T")


# ---------------------------------------------------------------- Ansible: environment, playbooks, inventories


def load_module(name: str, path: Path) -> types.ModuleType:
    """A Python file that is no package module (a script, an Ansible module or filter plugin), imported as `name`.

    It is registered in sys.modules first: dataclasses look their module up while the class is built.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def ansible_environment() -> dict[str, str]:
    """This process's environment with the venv's Ansible first on PATH and this repository's ansible.cfg."""
    return dict(
        os.environ,
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
    )


@dataclass(frozen=True)
class PlaybookRun:
    """Outcome of one ansible-playbook run."""

    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """Per-host counters of the PLAY RECAP, e.g. {"localhost": {"changed": 0, ...}}."""
        hosts: dict[str, dict[str, int]] = {}
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        for line in tail.splitlines():
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if match:
                hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return hosts

    def changed_tasks(self, host: str = "") -> list[str]:
        """Names of tasks that reported a change, on `host` or any (for readable assertion messages)."""
        marker = f"changed: [{host}]" if host else "changed:"
        names: list[str] = []
        task = ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith(marker):
                names.append(task)
        return names


def run_playbook(playbook: str, inventory: str, *args: str, timeout: int = 3600) -> PlaybookRun:
    """Run a playbook of this repository with the repository's ansible.cfg."""
    return finish_playbook(start_playbook(playbook, inventory, *args), timeout)


def start_playbook(playbook: str, inventory: str, *args: str) -> subprocess.Popen[str]:
    """Start a playbook in the background (to break something while it runs); finish_playbook collects it."""
    return subprocess.Popen(
        [str(VENV_BIN / "ansible-playbook"), "-i", inventory, f"ansible/{playbook}", *args],
        cwd=REPO,
        env=dict(ansible_environment(), ANSIBLE_FORCE_COLOR="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish_playbook(proc: subprocess.Popen[str], timeout: int = 3600) -> PlaybookRun:
    """Wait for a started playbook (killed after `timeout` seconds) and return its outcome."""
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\nFAIL: the playbook did not finish within {timeout}s"
    return PlaybookRun(proc.returncode, output)


# ---------------------------------------------------------------- fresh servers (scripts/testhosts.sh)

TESTHOSTS = REPO / "scripts" / "testhosts.sh"


def testhosts(host_set: str, *args: str) -> str:
    """Run scripts/testhosts.sh on a host set (default: tests/hosts, ha: tests/ha); end the session with its
    output when it fails."""
    proc = subprocess.run(
        [str(TESTHOSTS), "--set", host_set, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        pytest.exit(f"FAIL: scripts/testhosts.sh --set {host_set} {' '.join(args)}:\n{proc.stdout}{proc.stderr}", 1)
    return proc.stdout


def deploy_or_exit(playbook: str, inventory: str, *args: str) -> PlaybookRun:
    """A playbook run on the fresh servers of `inventory`; the session ends with its output when it fails."""
    run = run_playbook(playbook, inventory, *args)
    if run.returncode != 0:
        pytest.exit(f"FAIL: {playbook} {' '.join(args)} on {inventory} failed:\n{run.output[-6000:]}", returncode=1)
    return run


def role_default(name: str) -> object:
    """A default of the labelstack role as defaults/main.yml writes it (a templated one stays unrendered)."""
    return yaml.safe_load(ROLE_DEFAULTS.read_text())[name]


def host_setting(host: testinfra.host.Host, name: str) -> object:
    """A role variable of `host` before the deploy: the inventory's value, else the role's default.

    Only for what a deployment does not record (where its credentials.env is, a db host's container name).
    """
    variables = host.ansible.get_variables()
    return variables[name] if name in variables else role_default(name)


class NotDeployedError(Exception):
    """No stack to test where the inventory points: no such host, or no (current) credentials.env on it."""


def make(target: str, inventory: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    """`make <target> INVENTORY=<inventory> [VAR=value ...]` in this repository, as a user types it."""
    return subprocess.run(
        ["make", "--no-print-directory", target, f"INVENTORY={inventory}", *args],
        cwd=REPO,
        env=dict(ansible_environment(), ANSIBLE_FORCE_COLOR="0"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def inventory_host(inventory: str, pattern: str = "labelstack") -> testinfra.host.Host:
    """The first host of `pattern` (group or host name) in `inventory`, reached like Ansible reaches it.

    testinfra's ansible backend runs ansible-inventory from os.environ: callers set it to ansible_environment().
    """
    hosts = testinfra.get_hosts([f"ansible://{pattern}"], ansible_inventory=str(REPO / inventory))
    if not hosts:
        raise NotDeployedError(f"inventory {inventory} has no host in '{pattern}'")
    return hosts[0]


def read_credentials(host: testinfra.host.Host, inventory: str, secrets_dir: str = "") -> dict[str, str]:
    """The credentials.env of the stack on `host`.

    It lies in labelstack_secrets_dir (or `secrets_dir`: another stack on the host, such as make drill's): the one
    fact of a deployment that cannot come from the file itself.
    """
    path = f"{secrets_dir or host_setting(host, 'labelstack_secrets_dir')}/{CREDENTIALS_FILE}"
    creds_file = host.file(path)
    if not creds_file.exists:
        raise NotDeployedError(f"{path} not found on the host: deploy first (make deploy INVENTORY={inventory})")
    return parse_env_file(creds_file.content_string)


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks ignored, optional single quotes stripped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values


# ---------------------------------------------------------------- the deployment under test


@dataclass(frozen=True)
class Deployment:
    """One deployed stack as its credentials.env describes it, and the host it runs on."""

    inventory: str
    host: testinfra.host.Host
    url: str  # LABEL_STUDIO_URL, without a trailing slash
    password: str = field(repr=False)
    api_key: str = field(repr=False)
    project_name: str  # the compose project
    version: str  # of Label Studio
    bind_address: str
    port: int  # HTTP (only a redirect to HTTPS with the proxy)
    https_port: int  # the proxy's
    proxy_enabled: bool
    db_external: bool
    secrets_dir: str
    install_dir: str
    local_files_dir: str  # on the host
    local_files_root: str  # the same folder inside the app container (LOCAL_FILES_DOCUMENT_ROOT)
    app_data_dir: str
    ml_data_dir: str
    backup_dir: str
    variables: dict[str, object]  # the inventory's variables of the host (the role's defaults are not in it)
    credentials: dict[str, str] = field(repr=False)  # the whole credentials.env
    ca_bundle: str  # local copy of the CA of the deployment's generated TLS certificate ('' without)

    def container(self, service: str) -> str:
        """The container of a compose service of this stack (compose names it <project>-<service>-1)."""
        return f"{self.project_name}-{service}-1"

    def api(self, timeout: float = DEFAULT_TIMEOUT) -> Api:
        """The admin's plain HTTP client of this deployment."""
        return Api(self.url, self.api_key, timeout)


def load_deployment(
    inventory: str, host: testinfra.host.Host, tmp: pytest.TempPathFactory, secrets_dir: str = ""
) -> Deployment:
    """The deployment of `inventory` on `host`, read from its credentials.env (trusting its generated CA); with
    `secrets_dir`, the stack whose credentials.env lies there."""
    creds = read_credentials(host, inventory, secrets_dir)
    try:
        return Deployment(
            inventory=inventory,
            host=host,
            url=creds["LABEL_STUDIO_URL"].rstrip("/"),
            password=creds["LABEL_STUDIO_PASSWORD"],
            api_key=creds["LABEL_STUDIO_API_KEY"],
            project_name=creds["LABELSTACK_PROJECT_NAME"],
            version=creds["LABELSTACK_LABEL_STUDIO_VERSION"],
            bind_address=creds["LABELSTACK_BIND_ADDRESS"],
            port=int(creds["LABELSTACK_PORT"]),
            https_port=int(creds["LABELSTACK_HTTPS_PORT"]),
            proxy_enabled=creds["LABELSTACK_PROXY_ENABLED"] == "true",
            db_external=creds["LABELSTACK_DB_EXTERNAL"] == "true",
            secrets_dir=creds["LABELSTACK_SECRETS_DIR"],
            install_dir=creds["LABELSTACK_INSTALL_DIR"],
            local_files_dir=creds["LABELSTACK_LOCAL_FILES_DIR"],
            local_files_root=creds["LABELSTACK_LOCAL_FILES_ROOT"],
            app_data_dir=creds["LABELSTACK_APP_DATA_DIR"],
            ml_data_dir=creds["LABELSTACK_ML_DATA_DIR"],
            backup_dir=creds["LABELSTACK_BACKUP_DIR"],
            variables=host.ansible.get_variables(),
            credentials=creds,
            ca_bundle=trust_deployment_ca(host, creds["LABELSTACK_CA_CERT"], tmp),
        )
    except KeyError as exc:  # a stack deployed by an older labelstack: its file lacks the newer keys
        raise NotDeployedError(
            f"{CREDENTIALS_FILE} on the host lacks {exc}: deploy this version first (make deploy INVENTORY={inventory})"
        ) from exc


def trust_deployment_ca(host: testinfra.host.Host, ca_path: str, tmp: pytest.TempPathFactory) -> str:
    """Trust the CA the deploy generated for its proxy, in this process and its children; '' when none.

    requests (and pip) read REQUESTS_CA_BUNDLE, httpx (label-studio-sdk) SSL_CERT_FILE. The bundle keeps
    the system's CAs: other HTTPS (PyPI through a corporate proxy, say) must go on working.
    """
    if not ca_path:
        return ""
    local = tmp.mktemp("ca") / "deployment-ca.crt"
    system = Path(SYSTEM_CA_BUNDLE) if Path(SYSTEM_CA_BUNDLE).exists() else Path(certifi.where())
    local.write_bytes(system.read_bytes() + b"\n" + host.file(ca_path).content)
    os.environ["REQUESTS_CA_BUNDLE"] = os.environ["SSL_CERT_FILE"] = str(local)
    return str(local)


def write_files(deployment: Deployment, files: dict[str, dict[str, bytes]]) -> None:
    """Create {folder: {name: content}} under the host's local-files folder, readable by the app (uid 1001).

    One command per file: a command's argument is limited to 128 KiB (MAX_ARG_STRLEN), a folder of images is not.
    """
    for folder, contents in files.items():
        path = f"{deployment.local_files_dir}/{folder}"
        commands = [f"mkdir -p {shlex.quote(path)}"]
        for name, content in contents.items():
            encoded = base64.b64encode(content).decode()
            commands.append(f"printf %s {encoded} | base64 -d > {shlex.quote(f'{path}/{name}')}")
        commands.append(f"chmod -R a+rX {shlex.quote(path)}")
        for command in commands:
            result = deployment.host.run("sh -c %s", f"set -e; {command}")
            assert result.rc == 0, f"could not write the test files on the host: {result.stderr}"


def remove_folders(deployment: Deployment, folders: list[str]) -> None:
    """Remove folders (relative to the host's local-files folder) made by write_files, asserting they are gone."""
    paths = [f"{deployment.local_files_dir}/{folder}" for folder in folders]
    result = deployment.host.run("rm -rf -- " + " ".join(shlex.quote(path) for path in paths))
    assert result.rc == 0, f"could not remove {paths} on the host: {result.stderr}"
    assert not any(deployment.host.file(path).exists for path in paths), f"{paths} still exist on the host"


# ---------------------------------------------------------------- its HTTP API


@dataclass(frozen=True)
class Api:
    """Plain HTTP calls with the admin's legacy token, one new connection per call (like curl)."""

    base_url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        anonymous: bool = False,
        params: dict[str, str | int] | None = None,
        json: JsonValue = None,
        files: dict[str, tuple[str, bytes, str]] | None = None,
    ) -> requests.Response:
        """`path` is relative to the deployment URL; `token` overrides the admin's, `anonymous` sends none."""
        headers = {} if anonymous else {"Authorization": f"Token {token or self.token}"}
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        return requests.request(
            method, url, headers=headers, params=params, json=json, files=files, timeout=self.timeout
        )

    def get(
        self,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        token: str | None = None,
        anonymous: bool = False,
    ) -> requests.Response:
        return self.request("GET", path, params=params, token=token, anonymous=anonymous)

    def post(
        self, path: str, *, json: JsonValue = None, files: dict[str, tuple[str, bytes, str]] | None = None
    ) -> requests.Response:
        return self.request("POST", path, json=json, files=files)

    def delete(self, path: str) -> requests.Response:
        return self.request("DELETE", path)

    def call(self, method: str, path: str, body: JsonValue = None, ok: tuple[int, ...] = (200, 201, 204)) -> JsonValue:
        """A JSON request whose status must be in `ok`; the parsed body, if any."""
        response = self.request(method, path, json=body)
        assert response.status_code in ok, f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}"
        return response.json() if response.content else None

    def export(self, project_id: int, export_type: str, **params: str) -> requests.Response:
        """Synchronous export (GET /api/projects/{id}/export), asserted successful."""
        response = self.get(f"/api/projects/{project_id}/export", params={"exportType": export_type, **params})
        expect(response, 200, f"{export_type} export of project {project_id}")
        return response

    def all_projects(self) -> list[dict[str, JsonValue]]:
        """Every project the admin can see (all pages)."""
        projects: list[dict[str, JsonValue]] = []
        for page in itertools.count(1):
            body = expect(self.get("/api/projects", params={"page": page, "page_size": 100}), 200, "project list")
            projects += body["results"]
            if not body.get("next"):
                break
        return projects

    def all_tasks(self, project: int) -> list[dict[str, JsonValue]]:
        """Every task of the project with its annotations and predictions (100 per page at most)."""
        tasks: list[dict[str, JsonValue]] = []
        for page in itertools.count(1):
            params: dict[str, str | int] = {"project": project, "page": page, "page_size": 100, "fields": "all"}
            response = self.get("/api/tasks", params=params)
            if response.status_code == 404:  # past the last page
                break
            batch = expect(response, 200, f"tasks of project {project}, page {page}")["tasks"]
            tasks += batch
            if len(batch) < 100:
                break
        return tasks


def expect(response: requests.Response, status: int, what: str) -> JsonValue:
    """Assert the HTTP status (showing the body when it differs) and return the parsed JSON body, if any."""
    assert response.status_code == status, (
        f"{what}: expected HTTP {status}, got {response.status_code}: {response.text[:1500]}"
    )
    if not response.content or "json" not in response.headers.get("Content-Type", ""):
        return None
    return response.json()


# ---------------------------------------------------------------- polling


def restore_time_text(moment: float) -> str:
    """A moment as `make restore AT=` takes it (UTC, whole seconds)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))


def wal_archive_lag_seconds(host: testinfra.host.Host, db_container: str) -> float:
    """Seconds since PostgreSQL last archived a WAL segment: what a lost disk would take with it now."""
    return float(
        host.check_output(
            "docker exec %s sh -c %s",
            db_container,
            'psql -U "$POSTGRES_USER" -d postgres -tAc'
            ' "SELECT extract(epoch FROM now() - last_archived_time) FROM pg_stat_archiver"',
        )
    )


def wait_for(check: Callable[[], T | None], timeout: float, message: str, interval: float = 1.0) -> T:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling; the last error goes in the message
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} (waited {timeout:.0f}s; last error: {last_error!r})")


def all_healthy(deployment: Deployment) -> bool:
    """Every container of the stack is up and healthy, the app, the database and the ML backend among them."""
    out = deployment.host.run(
        "docker ps --all --filter label=com.docker.compose.project=%s --format '{{.Names}} {{.Status}}'",
        deployment.project_name,
    ).stdout.splitlines()
    out = [line for line in out if not line.split()[0].startswith(f"{deployment.project_name}-db-client-run")]
    names = {line.split()[0] for line in out}
    core = {deployment.container(service) for service in ("app", "db", "ml-backend")}
    return core <= names and all("(healthy)" in line for line in out)


def wait_all_healthy(deployment: Deployment, what: str) -> None:
    """Wait until the whole stack is healthy again after `what` broke it."""
    wait_for(lambda: all_healthy(deployment) or None, RECOVERY_TIMEOUT, f"stack not healthy again after {what}", 2)
