"""A generated certificate close to expiry is renewed by the next deploy, and the proxy serves the new one."""

from __future__ import annotations

import datetime
import shlex
import ssl
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from labelstack_testlib import Deployment, host_setting, run_playbook

# Validity of the re-signed certificate: well inside the renewal window (labelstack_tls_renew_days).
SHORT_DAYS = 10


def not_after(pem: str) -> datetime.datetime:
    return x509.load_pem_x509_certificate(pem.encode()).not_valid_after_utc


def test_a_certificate_inside_its_renewal_window_is_renewed_by_a_deploy(deployment: Deployment) -> None:
    if not deployment.credentials["LABELSTACK_CA_CERT"]:
        pytest.skip("no generated certificate: the deployment uses its own (or no proxy)")
    tls = f"{deployment.secrets_dir}/tls"
    # Same key and names, signed again by the stack's CA for SHORT_DAYS; written in place, as the deploy does.
    deployment.host.check_output(
        "bash -c %s",
        f"set -euo pipefail; cd {shlex.quote(tls)}; openssl x509 -x509toreq -in server.crt -signkey server.key"
        f" | openssl x509 -req -CA ca.crt -CAkey ca.key -CAcreateserial -days {SHORT_DAYS} -sha256"
        " -extfile server.ext -out short.crt; cat short.crt > server.crt; rm short.crt",
    )
    short = not_after(deployment.host.file(f"{tls}/server.crt").content_string)
    renew_days = int(str(host_setting(deployment.host, "labelstack_tls_renew_days")))
    assert short < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=renew_days), short

    run = run_playbook("site.yml", deployment.inventory)
    assert run.returncode == 0, run.output[-4000:]
    renewed = deployment.host.file(f"{tls}/server.crt").content_string
    assert not_after(renewed) > short + datetime.timedelta(days=renew_days), f"not renewed: {run.changed_tasks()}"
    served = ssl.get_server_certificate((urlsplit(deployment.url).hostname or "", deployment.https_port))
    assert not_after(served) == not_after(renewed), "the proxy still serves the old certificate"
