"""Limits on failed logins and token attempts per client address, inside the app.

The proxy limits the rate of login posts too, but the stack may run without it: this middleware counts
the failures themselves (a wrong password, a token that does not authenticate) and, past the limit,
answers 429 to every further attempt from that address until the window has passed without failures.
Counters live in a cache shared by all uWSGI processes (labelstack_settings configures it).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse

CACHE_ALIAS = "labelstack-auth-failures"
LOGIN_PATHS = ("/user/login", "/user/login/")
TOKEN_API_PREFIX = "/api/token"  # noqa: S105 - a URL path, not a secret
# Marks a request this middleware has seen: Label Studio answers a path without its trailing slash by running
# the whole middleware chain again on the same request (core.middleware.CommonMiddlewareAppendSlashWithoutRedirect).
SEEN_ATTRIBUTE = "_labelstack_auth_limit_seen"
# How long a resolved proxy address is trusted before it is looked up again (the proxy may be recreated).
PROXY_ADDRESS_TTL = 30.0


class AuthFailureLimitMiddleware:
    """Refuse login and token attempts from an address that failed LABELSTACK_AUTH_MAX_FAILURES times."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.max_failures: int = settings.LABELSTACK_AUTH_MAX_FAILURES
        self.window: int = settings.LABELSTACK_AUTH_FAILURE_WINDOW
        self.proxy_host: str = settings.LABELSTACK_TRUSTED_PROXY
        self._proxy_addresses: frozenset[str] = frozenset()
        self._proxy_resolved_at = float("-inf")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        kind = self._attempt_kind(request)
        if not kind or getattr(request, SEEN_ATTRIBUTE, False):
            return self.get_response(request)
        setattr(request, SEEN_ATTRIBUTE, True)
        key = f"{kind}:{self._client_address(request)}"
        cache = caches[CACHE_ALIAS]
        if cache.get(key, 0) >= self.max_failures:
            return JsonResponse(
                {"detail": f"Too many failed {kind} attempts from this address: try again later."},
                status=429,
                headers={"Retry-After": str(self.window)},
            )
        response = self.get_response(request)
        if self._failed(kind, response):
            # Each failure restarts the window: a client must stay quiet for a whole window to be let in again.
            # Two processes may both read n and write n + 1: the count can lag by the few in flight at once.
            cache.set(key, cache.get(key, 0) + 1, self.window)
        return response

    @staticmethod
    def _attempt_kind(request: HttpRequest) -> str:
        """'login' for a login form post, 'token' for anything carrying credentials of the API, else ''."""
        if request.method == "POST" and request.path in LOGIN_PATHS:
            return "login"
        has_credentials = "HTTP_AUTHORIZATION" in request.META or "HTTP_X_API_KEY" in request.META
        if has_credentials or request.path.startswith(TOKEN_API_PREFIX):
            return "token"
        return ""

    @staticmethod
    def _failed(kind: str, response: HttpResponse) -> bool:
        # A successful login redirects; a wrong password shows the form again. Bad credentials of the API get 401.
        return response.status_code == 401 if kind == "token" else not 300 <= response.status_code < 400

    def _client_address(self, request: HttpRequest) -> str:
        """The peer's address, or the client address the stack's own proxy reports (X-Real-IP) when it is the peer."""
        peer = request.META.get("REMOTE_ADDR", "")
        forwarded = request.META.get("HTTP_X_REAL_IP", "")
        if forwarded and peer in self._proxy_address_set():
            try:
                return str(ipaddress.ip_address(forwarded))
            except ValueError:
                return peer  # nginx always sets a valid one: anything else is not from it
        return peer

    def _proxy_address_set(self) -> frozenset[str]:
        if not self.proxy_host:
            return frozenset()
        now = time.monotonic()
        if now - self._proxy_resolved_at > PROXY_ADDRESS_TTL:
            try:
                self._proxy_addresses = frozenset(socket.gethostbyname_ex(self.proxy_host)[2])
            except OSError:
                self._proxy_addresses = frozenset()  # the proxy is being recreated: trust nobody meanwhile
            self._proxy_resolved_at = now
        return self._proxy_addresses
