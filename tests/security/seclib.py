"""Helpers of the security suite: where the app keeps its counters, and probes run from inside the stack."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import testinfra
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


# Where the proxy's healthcheck finds the certificate it trusts (compose/docker-compose.yml).
TRUST_MOUNT = "/etc/labelstack/tls/trust.crt"
# Just enough nginx for the healthcheck, on the proxy image's read-only root with a tmpfs /tmp.
PROBE_NGINX_CONF = """pid /tmp/nginx.pid;
error_log stderr warn;
events {}
http {
  access_log off;
  client_body_temp_path /tmp/client_body;
  proxy_temp_path /tmp/proxy;
  fastcgi_temp_path /tmp/fastcgi;
  uwsgi_temp_path /tmp/uwsgi;
  scgi_temp_path /tmp/scgi;
  server {
    listen 8443 ssl;
    ssl_certificate /etc/labelstack/tls/server.crt;
    ssl_certificate_key /etc/labelstack/tls/server.key;
    location = /nginx-health { return 200 "ok\\n"; }
  }
}
"""


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class ThrowawayCa:
    """A CA made for one test: it signs certificates valid (or expired) as the test needs."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, days: int) -> tuple[bytes, bytes]:
        """(certificate, key) in PEM for `name` (a host name or IPv4 address): valid for `days`, or expired that
        many days ago when negative."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (
            (now - datetime.timedelta(days=1), now + datetime.timedelta(days=days))
            if days > 0
            else (
                now + datetime.timedelta(days=days - 1),
                now + datetime.timedelta(days=days),
            )
        )
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM), _pem(key)


def self_signed_ca(name: str) -> ThrowawayCa:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"labelstack test CA for {name}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return ThrowawayCa(key, certificate)


class TlsFiles:
    """A folder on the host with a throwaway CA, certificate, key and nginx.conf, readable by the proxy's user."""

    def __init__(self, host: testinfra.host.Host, project: str) -> None:
        self.host = host
        self.folder = host.check_output("mktemp -d /tmp/%s-tls-probe.XXXXXX", project)
        self.ca, self.certificate, self.key = (f"{self.folder}/{n}" for n in ("ca.crt", "server.crt", "server.key"))
        self.nginx_conf = f"{self.folder}/nginx.conf"

    def write(self, ca: bytes, certificate: bytes, key: bytes) -> None:
        """Write the files in place (a bind mount keeps seeing a file rewritten, not one replaced)."""
        contents = {
            self.ca: ca,
            self.certificate: certificate,
            self.key: key,
            self.nginx_conf: PROBE_NGINX_CONF.encode(),
        }
        commands = ["set -e", f"chmod 0755 {shlex.quote(self.folder)}"]
        for path, content in contents.items():
            encoded = base64.b64encode(content).decode()
            commands += [f"printf %s {encoded} | base64 -d > {shlex.quote(path)}", f"chmod 0644 {shlex.quote(path)}"]
        self.host.check_output("sh -c %s", "\n".join(commands))

    def remove(self) -> None:
        self.host.run("rm -rf -- %s", self.folder)
