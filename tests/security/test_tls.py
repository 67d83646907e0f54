"""The proxy's TLS: modern protocols and suites only, browser hardening headers, a healthcheck that verifies."""

from __future__ import annotations

import json
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest
import requests

from labelstack_testlib import Deployment, PlaybookRun, wait_for

from .seclib import TRUST_MOUNT, TlsFiles, self_signed_ca

# openssl s_client's client side must offer what the server is to refuse: OpenSSL 3 would not even offer
# TLS 1.1 or old suites at its default security level, and the test would pass against any server.
LEGACY_CLIENT = "DEFAULT@SECLEVEL=0"


@pytest.fixture
def proxied(deployment: Deployment) -> Deployment:
    if not deployment.proxy_enabled:
        pytest.skip("no proxy in this deployment")
    return deployment


def handshake(deployment: Deployment, *options: str) -> subprocess.CompletedProcess[str]:
    """One TLS handshake with the proxy by `openssl s_client` with these protocol / suite options."""
    host = urlsplit(deployment.url).hostname or ""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{host}:{deployment.https_port}", "-servername", host, *options],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("options", "accepted"),
    [
        (["-tls1_1", "-cipher", LEGACY_CLIENT], False),
        (["-tls1_2", "-cipher", f"AES128-SHA:{LEGACY_CLIENT}"], False),  # static RSA key exchange, CBC
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"], False),  # forward secret but CBC
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], True),
        (["-tls1_3"], True),
    ],
    ids=["tls1.1", "AES128-SHA", "ECDHE-CBC", "tls1.2-ECDHE-GCM", "tls1.3"],
)
def test_only_modern_protocols_and_suites_are_accepted(proxied: Deployment, options: list[str], accepted: bool) -> None:
    result = handshake(proxied, *options)
    shown = f"openssl s_client {' '.join(options)}: rc {result.returncode}, {result.stderr.strip()[-300:]}"
    assert (result.returncode == 0) == accepted, shown


def test_pages_and_static_files_carry_the_hardening_headers(proxied: Deployment) -> None:
    """Once each: a header both the app and the proxy set would reach the browser as a list and be ignored."""
    expected = {
        "Strict-Transport-Security": "max-age=31536000",
        "X-Frame-Options": "SAMEORIGIN",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "frame-ancestors 'self'; object-src 'none'; base-uri 'self'",
        "Referrer-Policy": "same-origin",
    }
    for path in ("/user/login/", "/static/images/favicon.ico"):
        response = requests.get(f"{proxied.url}{path}", timeout=30)
        assert response.status_code == 200, f"{path}: HTTP {response.status_code}"
        got = {name: response.headers.get(name) for name in expected}
        assert got == expected, f"{path}: headers {got}"


def test_the_proxy_healthcheck_fails_on_an_expired_certificate(proxied: Deployment) -> None:
    """The proxy's own healthcheck command, run in a throwaway container of its image: valid, then expired.

    The container serves certificates of a throwaway CA for the deployment's name, with no network and a minimal
    configuration, so the stack itself is never touched.
    """
    proxy = json.loads(proxied.host.check_output("docker inspect %s", proxied.container("proxy")))[0]
    check = proxy["Config"]["Healthcheck"]["Test"]
    assert check[0] == "CMD", f"healthcheck not in exec form: {check}"
    assert not {"--insecure", "-k"} & set(check), f"the healthcheck does not verify: {check}"
    name = urlsplit(proxied.url).hostname or ""
    ca = self_signed_ca(name)
    files = TlsFiles(proxied.host, proxied.project_name)
    files.write(ca.certificate_pem, *ca.issue(name, days=30))
    container = f"{proxied.project_name}-tls-probe"
    try:
        proxied.host.check_output(
            "docker run -d --rm --name %s --network none --read-only --tmpfs /tmp:uid=101,gid=101 "
            "-v %s:/etc/labelstack/nginx.conf:ro -v %s:/etc/labelstack/tls/server.crt:ro "
            "-v %s:/etc/labelstack/tls/server.key:ro -v %s:%s:ro %s",
            container, files.nginx_conf, files.certificate, files.key, files.ca, TRUST_MOUNT, proxy["Config"]["Image"],
        )  # fmt: skip
        command = f"docker exec {container} {shlex.join(check[1:])}"

        def healthy() -> bool | None:
            return True if proxied.host.run(command).rc == 0 else None

        wait_for(healthy, 30, f"the healthcheck failed on a valid certificate: {command}")
        files.write(ca.certificate_pem, *ca.issue(name, days=-1))
        proxied.host.check_output("docker exec %s nginx -c /etc/labelstack/nginx.conf -s reload", container)

        def refused() -> str | None:
            result = proxied.host.run(command)
            return result.stderr or "no message" if result.rc != 0 else None

        message = wait_for(refused, 30, "the healthcheck passed on an expired certificate")
        assert "expired" in message, f"the healthcheck failed for another reason: {message}"
    finally:
        proxied.host.run("docker rm -f %s", container)
        files.remove()


def test_the_generated_ca_is_name_constrained(proxied: Deployment, first_deploy: PlaybookRun | None) -> None:
    ca = proxied.credentials["LABELSTACK_CA_CERT"]
    if not ca:
        pytest.skip("the deployment uses its own certificate")
    text = proxied.host.check_output("openssl x509 -in %s -noout -ext nameConstraints", ca)
    if "Permitted" not in text and first_deploy is not None:
        # A CA made by an older labelstack is kept (clients trust it); the deploy must say so, not stay silent.
        assert f"{ca} has no name constraints" in first_deploy.output, f"{ca} has no name constraints, no warning"
        pytest.skip(f"{ca} predates name constraints and the deploy warned; a new CA is checked on a fresh host")
    host = urlsplit(proxied.url).hostname or ""
    assert "Permitted" in text, f"{ca} has no name constraints: {text}"
    assert any(line.strip().split(":", 1)[-1].split("/")[0] == host for line in text.splitlines()), text
