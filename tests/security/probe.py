"""HTTP probes of the security suite, run on the test host or inside a container of the stack.

Standard library only: the suite also feeds this file to `python3 -` in the app container, so that a probe
comes from another client address than the test host's (a second client after a lockout, the app's own
port when the proxy hides it). Run that way it takes the probe's name and arguments on the command line,
logs in as the admin of the container's environment (no secret crosses a command line) and prints the result.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import os
import re
import select
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CHUNK = 1024 * 1024


def _ssl_context(verify: bool) -> ssl.SSLContext:
    """The default context (it trusts SSL_CERT_FILE), or one that skips verification.

    Skipping is only for probes inside the stack, whose peer is the stack's own proxy on its internal network
    and whose container does not hold the generated CA.
    """
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Keep a redirect as the answer: a login's success is its 302."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def login(url: str, host: str, email: str, password: str, verify: bool = True) -> int:
    """Status of a login through the login form (302: logged in, 200: form shown again, 429: refused).

    `url` is where to connect, `host` the Host header (the deployment's, also when connecting by another name).
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an HTTP URL: {url!r}")
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=_ssl_context(verify)),
        urllib.request.HTTPCookieProcessor(jar),
        _NoRedirect,
    )
    page = f"{url}/user/login/"
    headers = {"Host": host}
    first = urllib.request.Request(page, headers=headers)  # noqa: S310 - scheme checked above
    with opener.open(first, timeout=30) as response:
        response.read()
    csrf = next((cookie.value for cookie in jar if cookie.name == "csrftoken"), "")
    form = urllib.parse.urlencode({"email": email, "password": password, "csrfmiddlewaretoken": csrf}).encode()
    # Django checks the Referer of an HTTPS form post against the host the browser saw.
    scheme = urllib.parse.urlsplit(url).scheme
    headers["Referer"] = f"{scheme}://{host}/user/login/"
    if scheme == "http":
        # Behind the TLS proxy the cookie is Secure, which the jar keeps off plain HTTP (straight to uWSGI).
        headers["Cookie"] = f"csrftoken={csrf}"
    try:
        request = urllib.request.Request(page, data=form, headers=headers)  # noqa: S310 - scheme checked above
        with opener.open(request, timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:  # 3xx (not followed) and 4xx/5xx
        return error.code


def _connect(url: str, verify: bool) -> socket.socket:
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    sock = socket.create_connection((parts.hostname or "", parts.port or (443 if https else 80)), timeout=30)
    return _ssl_context(verify).wrap_socket(sock, server_hostname=parts.hostname) if https else sock


def _answer_start(sock: socket.socket, timeout: float) -> bytes | None:
    """The first bytes the server sent within `timeout` (b"" if it closed), or None if it sent nothing.

    Over TLS a readable socket may hold only session tickets, which are no answer.
    """
    readable, _, _ = select.select([sock], [], [], timeout)
    if not readable:
        return None
    previous = sock.gettimeout()
    sock.settimeout(0)
    try:
        return sock.recv(4096)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    except OSError:
        return b""  # reset: the server gave up on this client
    finally:
        sock.settimeout(previous)


def huge_body(url: str, host: str, path: str, size: int, seconds: float, verify: bool = True) -> tuple[int, int]:
    """POST a body of `size` bytes without credentials; (HTTP status or 0 if none came, bytes sent before it).

    The body is sent until the server answers or closes, all of it is sent, or `seconds` pass.
    """
    sock = _connect(url, verify)
    sent = 0
    deadline = time.monotonic() + seconds
    head = None
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {size}\r\n\r\n".encode())
        chunk = b"0" * CHUNK
        while sent < size and time.monotonic() < deadline:
            head = _answer_start(sock, 0)
            if head is not None:
                break
            try:
                sock.sendall(chunk[: size - sent])
            except OSError:  # the server closed after answering: read what it said
                break
            sent += min(CHUNK, size - sent)
        if head is None:
            sock.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                head = sock.recv(4096)
            except OSError:
                return 0, sent
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        match = re.match(r"HTTP/\d(?:\.\d)? (\d{3})", status_line)
        return (int(match.group(1)) if match else 0), sent
    finally:
        sock.close()


def slow_body(url: str, host: str, path: str, interval: float, seconds: float, verify: bool = True) -> int:
    """Send a POST's headers, then one byte of its body every `interval` seconds for `seconds` at most.

    Returns the number of body bytes the server took before it closed the connection or the time was up.
    """
    sock = _connect(url, verify)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n".encode())
        while time.monotonic() + interval < deadline:
            if _answer_start(sock, interval) is not None:  # the server stopped waiting for this client
                break
            sock.sendall(b"x")
            sent += 1
    except OSError:
        pass  # a reset connection is the server giving up on a slow client: what it should do
    finally:
        sock.close()
    return sent


def main(argv: list[str]) -> None:
    """`login URL HOST`, `bad-logins URL HOST COUNT SECONDS` or `huge-body URL HOST PATH SIZE SECONDS`, verification
    off (see _ssl_context).
    """
    name, url, host, *rest = argv
    email = os.environ["LABEL_STUDIO_USERNAME"]
    if name == "login":
        print(login(url, host, email, os.environ["LABEL_STUDIO_PASSWORD"], verify=False))
    elif name == "bad-logins":
        deadline = time.monotonic() + float(rest[1])
        statuses = []
        for number in range(int(rest[0])):
            if time.monotonic() > deadline:
                break
            statuses.append(login(url, host, email, f"wrong-password-{number}", verify=False))
        print(" ".join(map(str, statuses)))
    elif name == "huge-body":
        status, sent = huge_body(url, host, rest[0], int(rest[1]), float(rest[2]), verify=False)
        print(status, sent)
    else:
        sys.exit(f"unknown probe {name!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
