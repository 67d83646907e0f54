"""Label Studio's REST API as labelstack uses it: the admin's client, and a project wired to one of the stack's ML
backends.

One definition for the two callers: the labelstack_project module (the deploy's projects as code) and the
labelstack-ml tool installed beside this file on the host (projects made later, README "ML backend"). Standard
library only: both run with the target host's python3.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from typing import Any

Json = Any  # a value as json.loads returns it
BACKEND_TITLE = "labelstack text classifier"
# Predictions shown to annotators and retrieved when a task loads.
ML_PROJECT_SETTINGS = {"show_collab_predictions": True, "evaluate_predictions_automatically": True}


class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:1000]}")
        self.status = status
        self.body = body


class Api:
    """Label Studio's REST API with the admin's token; the unit tests replace `request`."""

    def __init__(self, url: str, token: str, ca_path: str | None = None, validate_certs: bool = True) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.tls = ssl.create_default_context(cafile=ca_path or None)
        if not validate_certs:
            self.tls.check_hostname = False
            self.tls.verify_mode = ssl.CERT_NONE

    def request(self, method: str, path: str, body: Json = None) -> tuple[int, str]:
        """The status and text of the answer (errors included); URLError when Label Studio cannot be reached."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310 - the stack's URL
        req.add_header("Authorization", f"Token {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=300, context=self.tls) as resp:  # noqa: S310
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def call(self, method: str, path: str, body: Json = None) -> Json:
        status, text = self.request(method, path, body)
        if status >= 400:
            raise ApiError(method, path, status, text)
        return json.loads(text) if text else None

    def projects(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            batch = self.call("GET", f"/api/projects?page={page}&page_size=100")
            results = batch["results"] if isinstance(batch, dict) else batch
            found.extend(results)
            if not isinstance(batch, dict) or not batch.get("next"):
                return found
            page += 1

    def ensure(self, path: str, existing: dict[str, Any] | None, wanted: dict[str, Any]) -> tuple[Json, bool]:
        """POST `wanted` to `path` when nothing exists, else PATCH the fields that differ; (the object, changed)."""
        if existing is None:
            return self.call("POST", path, wanted), True
        diff = {k: v for k, v in wanted.items() if existing.get(k) != v}
        if not diff:
            return existing, False
        return self.call("PATCH", f"{path.rstrip('/')}/{existing['id']}{'/' if path.endswith('/') else ''}", diff), True


def connect_ml_backend(
    api: Api, project: int, url: str, user: str, password: str, *, adjust: bool = True
) -> tuple[Json, bool]:
    """The backend at `url` connected to the project with basic auth, and the webhook it trains from.

    Idempotent: reuses the connection and the webhook when they exist. `adjust` also sets an existing connection's
    settings back to these (the tool's explicit `connect`); without it a connection a user changed in the UI, say
    to interactive pre-annotations, is kept (the deploy). Returns the backend and whether anything changed.
    """
    url = url.rstrip("/")
    # Deployments before several backends wired http://<name>:9090 (no dot: Label Studio made no webhook for it).
    # That connection is replaced, not kept beside the new one; Label Studio 1.23.2 answers a PATCH of the URL
    # with a 500 (MLBackend.setup_() without its project), so it is deleted and connected again.
    legacy_url = url.replace(".internal:", ":", 1)
    backends = api.call("GET", f"/api/ml?project={project}")
    legacy = [b for b in backends if legacy_url != url and b["url"].rstrip("/") == legacy_url]
    for backend in legacy:
        api.call("DELETE", f"/api/ml/{backend['id']}")
    existing = next((b for b in backends if b["url"].rstrip("/") == url), None)
    wanted = {
        "project": project,
        "url": url,
        "title": BACKEND_TITLE,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": user,
        "is_interactive": False,
        "auto_update": True,
    }
    if existing is None:  # Label Studio never returns the password, so it is only sent on creation
        wanted["basic_auth_pass"] = password
    backend, changed = api.ensure("/api/ml", existing, wanted) if existing is None or adjust else (existing, False)
    # Label Studio registers <backend>/webhook itself, but without credentials (and only for dotted hosts): this
    # one carries the basic auth header.
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    hook = {
        "project": project,
        "url": f"{url}/webhook",
        "send_payload": True,
        "send_for_all_actions": True,
        "headers": {"Authorization": f"Basic {auth}"},
        "is_active": True,
    }
    hooks = [h for h in api.call("GET", f"/api/webhooks/?project={project}") if h["url"] == hook["url"]]
    hook_changed = api.ensure("/api/webhooks/", hooks[0] if hooks else None, hook)[1]
    return backend, changed or hook_changed or bool(legacy)
