"""Session fixtures: the deployment under test (optionally deployed first), its host and its credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import pytest
import testinfra

from labelstack_testlib import REPO, VENV_BIN, PlaybookRun, parse_env_file, run_playbook

# testinfra's ansible backend runs ansible-inventory: use the venv's, with this repository's config.
os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")

CREDENTIALS_FILE = "credentials.env"
# Debian's bundle of the CAs this machine trusts (ca-certificates; a TLS-intercepting proxy's CA included).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--inventory", default="inventory/local", help="inventory of the deployment under test")
    parser.addoption("--deploy", action="store_true", help="deploy to the inventory before testing")


@dataclass(frozen=True)
class Deployment:
    """What a test needs to reach one deployed stack."""

    inventory: str
    host: testinfra.host.Host
    url: str
    username: str
    password: str = field(repr=False)
    api_key: str = field(repr=False)
    project_name: str
    install_dir: str
    local_files_dir: str
    local_files_root: str
    variables: dict[str, object]
    credentials: dict[str, str] = field(repr=False)  # the whole credentials.env
    ca_bundle: str  # local copy of the CA of the deployment's generated TLS certificate ('' without)


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--inventory"))


@pytest.fixture(scope="session")
def first_deploy(request: pytest.FixtureRequest, inventory: str) -> PlaybookRun | None:
    """The initial apply when --deploy is given (once per session), else None."""
    if not request.config.getoption("--deploy"):
        return None
    run = run_playbook("site.yml", inventory)
    if run.returncode != 0:
        pytest.exit(f"FAIL: deploy to {inventory} failed:\n{run.output[-6000:]}", returncode=1)
    return run


@pytest.fixture(scope="session")
def app_host(inventory: str, first_deploy: PlaybookRun | None) -> testinfra.host.Host:
    return inventory_host(inventory)


@pytest.fixture(scope="session")
def deployment(inventory: str, app_host: testinfra.host.Host, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return load_deployment(inventory, app_host, tmp_path_factory)


def load_deployment(inventory: str, host: testinfra.host.Host, tmp: pytest.TempPathFactory) -> Deployment:
    """The deployment of `inventory` on `host`, read from its credentials file."""
    variables = host.ansible.get_variables()
    secrets_dir = variables.get("labelstack_secrets_dir", "/etc/labelstack")
    path = f"{secrets_dir}/{CREDENTIALS_FILE}"
    creds_file = host.file(path)
    if not creds_file.exists:
        pytest.exit(f"FAIL: {path} not found on the host: deploy first (make deploy INVENTORY={inventory})", 1)
    creds = parse_env_file(creds_file.content_string)
    ca_bundle = _trust_deployment_ca(host, creds.get("LABELSTACK_CA_CERT", ""), tmp)
    return Deployment(
        inventory=inventory,
        host=host,
        url=creds["LABEL_STUDIO_URL"],
        username=creds["LABEL_STUDIO_USERNAME"],
        password=creds["LABEL_STUDIO_PASSWORD"],
        api_key=creds["LABEL_STUDIO_API_KEY"],
        project_name=creds["LABELSTACK_PROJECT_NAME"],
        install_dir=creds["LABELSTACK_INSTALL_DIR"],
        local_files_dir=creds["LABELSTACK_LOCAL_FILES_DIR"],
        local_files_root=creds["LABELSTACK_LOCAL_FILES_ROOT"],
        variables=variables,
        credentials=creds,
        ca_bundle=ca_bundle,
    )


def inventory_host(inventory: str) -> testinfra.host.Host:
    """The host running Label Studio (first host of the `labelstack` group), reached like Ansible does."""
    hosts = testinfra.get_hosts(["ansible://labelstack"], ansible_inventory=str(REPO / inventory))
    if not hosts:
        pytest.exit(f"FAIL: inventory {inventory} has no host in group 'labelstack'", returncode=1)
    return hosts[0]


def _trust_deployment_ca(host: testinfra.host.Host, ca_path: str, tmp: pytest.TempPathFactory) -> str:
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
