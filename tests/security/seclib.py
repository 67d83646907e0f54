"""Helpers of the security suite: where the app keeps its counters, and probes run from inside the stack."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from labelstack_testlib import Deployment

# The app's failed-attempt counters (compose/app/settings/labelstack_settings.py), in its data directory.
AUTH_FAILURES_DIR = "/label-studio/data/cache/auth-failures"
# The proxy's login zone lets a burst of 10 through and then one request every 3 s (nginx.conf.j2):
# waiting this long after a test empties its bucket again for the tests and suites that follow.
PROXY_BUCKET_DRAIN_SECONDS = 35
PROBE_SOURCE = (Path(__file__).parent / "probe.py").read_text()


def host_header(deployment: Deployment) -> str:
    """The Host a browser sends for the deployment's URL."""
    return urlsplit(deployment.url).netloc


def clear_auth_failures(deployment: Deployment) -> None:
    deployment.host.check_output(
        "docker exec %s sh -c %s", deployment.container("app"), f"rm -rf {AUTH_FAILURES_DIR}/*"
    )


@dataclass(frozen=True)
class InStack:
    """probe.py run in the app container: another client address than the test host's."""

    deployment: Deployment

    @property
    def url(self) -> str:
        """The deployment's public entry as seen from inside the stack: the proxy, else uWSGI itself."""
        return "https://proxy:8443" if self.deployment.proxy_enabled else "http://127.0.0.1:8000"

    def run(self, *args: str) -> str:
        """What the probe (probe.py's command line: name, URL, Host, ...) printed."""
        command = (
            f"docker exec -i {shlex.quote(self.deployment.container('app'))} python3 - "
            f"{shlex.join(args)} <<'LABELSTACK_PROBE'\n{PROBE_SOURCE}\nLABELSTACK_PROBE\n"
        )
        return self.deployment.host.check_output(command).strip()
