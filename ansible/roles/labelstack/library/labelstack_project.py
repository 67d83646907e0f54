#!/usr/bin/python
"""Ansible module: one Label Studio project as declared in labelstack_projects, applied through Label Studio's API."""

from __future__ import annotations

import json
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.labelstack_api import ML_PROJECT_SETTINGS, Api, ApiError, Json, connect_ml_backend

try:
    import yaml
except ImportError:  # pragma: no cover - the deploy installs python3-yaml on every host
    yaml = None

DOCUMENTATION = r"""
module: labelstack_project
short_description: Ensure a Label Studio project matches its labelstack_projects entry
description:
  - C(state=present) creates the project (title, label config, description, instructions, sampling,
    maximum_annotations), or changes the fields that differ; the label config is first checked by Label Studio's
    own validation (the project's C(validate) endpoint refuses removing labels that annotations use), so a refused
    config changes nothing.
  - Local-file storages are matched by path, created or updated, and synced; ML backends (by name) are connected
    with basic auth and their training webhook; the project's other webhooks are exactly the listed ones.
  - Seed tasks are imported only when the project is created.
  - C(state=absent) deletes the project (the role asks for a confirmation and backs up first).
  - C(state=query) changes nothing and returns every project of the stack as a labelstack_projects item.
  - Supports check mode and diff mode.
options:
  url: {description: Label Studio's URL, type: str, required: true}
  token: {description: the admin's legacy API token, type: str, required: true}
  ca_path: {description: CA bundle to trust, type: str}
  validate_certs: {description: verify the TLS certificate, type: bool, default: true}
  files_root: {description: the local-files root inside the app container, type: str, default: /label-studio/files}
  ml_backends: {description: every ML backend of the stack as name and url, type: list, elements: dict}
  ml_user: {description: the ML backends' basic auth user, type: str}
  ml_password: {description: the ML backends' basic auth password, type: str}
  project: {description: the labelstack_projects item (label_config resolved, seed tasks as a list), type: dict}
  state: {description: present, absent or query, type: str, default: present}
  details: {description: with state=query, every field (true) or the titles only, type: bool, default: true}
"""

SECRET = "********"  # noqa: S105 - the mask shown instead of a header value
# labelstack_projects key -> Label Studio's project field
FIELDS = {
    "title": "title",
    "description": "description",
    "instructions": "expert_instruction",
    "sampling": "sampling",
    "maximum_annotations": "maximum_annotations",
    "label_config": "label_config",
}
DEFAULTS = {"description": "", "instructions": "", "sampling": "Sequential sampling", "maximum_annotations": 1}


def _normal(spec: dict[str, Any]) -> dict[str, Any]:
    """The declared project with defaults filled in and lists in a stable order."""
    out = {key: spec.get(key) if spec.get(key) is not None else DEFAULTS.get(key) for key in FIELDS}
    out["storages"] = sorted(
        (
            {
                "path": s["path"].strip("/"),
                "regex_filter": s.get("regex_filter") or "",
                "use_blob_urls": bool(s.get("use_blob_urls", True)),
                "title": s.get("title") or s["path"].strip("/"),
                "sync": bool(s.get("sync", True)),
            }
            for s in spec.get("storages") or []
        ),
        key=lambda s: s["path"],
    )
    out["ml_backends"] = sorted(spec.get("ml_backends") or [])
    out["webhooks"] = sorted(
        (
            {
                "url": w["url"],
                "actions": sorted(w.get("actions") or []),
                "headers": dict(w.get("headers") or {}),
                "send_payload": bool(w.get("send_payload", True)),
            }
            for w in spec.get("webhooks") or []
        ),
        key=lambda w: w["url"],
    )
    return out


def render(state: dict[str, Any] | None, secrets_changed: set[str] | None = None) -> str:
    """A project as readable YAML for the diff: the label config as a block, header values hidden."""
    if state is None:
        return ""
    shown = {k: v for k, v in state.items() if k != "webhooks"}
    shown["label_config"] = (shown.get("label_config") or "").strip() + "\n"  # compared without outer blanks
    shown["webhooks"] = [
        dict(
            w,
            headers={
                name: SECRET + (" (new value)" if f"{w['url']} {name}" in (secrets_changed or set()) else "")
                for name in w["headers"]
            },
        )
        for w in state.get("webhooks") or []
    ]
    if yaml is None:
        return json.dumps(shown, indent=2, sort_keys=True) + "\n"

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Json, value: str) -> Json:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(shown, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


class Project:
    """Reads one project's managed state from Label Studio and converges it on the declared one."""

    def __init__(self, api: Api, files_root: str, backends: list[dict[str, Any]], user: str, password: str) -> None:
        self.api = api
        self.files_root = files_root.rstrip("/")
        self.backend_urls = {b["name"]: b["url"].rstrip("/") for b in backends}
        self.backend_names = {url: name for name, url in self.backend_urls.items()}
        self.user = user
        self.password = password
        self.warnings: list[str] = []

    # -- reading -------------------------------------------------------------------------------------------------
    def find(self, title: str) -> dict[str, Any] | None:
        found = [p for p in self.api.projects() if p["title"] == title]
        if len(found) > 1:
            raise ValueError(f"{len(found)} projects are titled {title!r}: rename all but one in Label Studio")
        # The list leaves fields out (the instructions among them): the project's own page has them all.
        return self.api.call("GET", f"/api/projects/{found[0]['id']}") if found else None

    def ml_hook_urls(self) -> set[str]:
        return {f"{url}/webhook" for url in self.backend_urls.values()}

    def read(self, project: dict[str, Any]) -> dict[str, Any]:
        pid = project["id"]
        state = {key: project.get(field) for key, field in FIELDS.items()}
        state["description"] = state["description"] or ""
        state["instructions"] = state["instructions"] or ""
        storages = []
        for s in self.api.call("GET", f"/api/storages/localfiles/?project={pid}"):
            path = s["path"].rstrip("/")
            relative = path[len(self.files_root) + 1 :] if path.startswith(self.files_root + "/") else path
            storages.append(
                {
                    "path": relative,
                    "regex_filter": s.get("regex_filter") or "",
                    "use_blob_urls": bool(s.get("use_blob_urls")),
                    "title": s.get("title") or "",
                    "sync": True,
                    "id": s["id"],
                }
            )
        state["storages"] = sorted(storages, key=lambda s: s["path"])
        backends = self.api.call("GET", f"/api/ml?project={pid}")
        state["ml_backends"] = sorted(
            self.backend_names.get(b["url"].rstrip("/"), b["url"].rstrip("/")) for b in backends
        )
        hooks = self.api.call("GET", f"/api/webhooks/?project={pid}")
        ml_hooks = self.ml_hook_urls() | {f"{b['url'].rstrip('/')}/webhook" for b in backends}
        state["webhooks"] = sorted(
            (
                {
                    "url": h["url"],
                    "actions": [] if h.get("send_for_all_actions") else sorted(h.get("actions") or []),
                    "headers": dict(h.get("headers") or {}),
                    "send_payload": bool(h.get("send_payload")),
                    "id": h["id"],
                }
                for h in hooks
                if h["url"] not in ml_hooks
            ),
            key=lambda w: w["url"],
        )
        return state

    @staticmethod
    def public(state: dict[str, Any]) -> dict[str, Any]:
        """The state without the API's ids and bookkeeping, as labelstack_projects spells it."""
        out = {k: v for k, v in state.items() if not k.startswith("_")}
        out["storages"] = [{k: v for k, v in s.items() if k != "id"} for s in state["storages"]]
        out["webhooks"] = [{k: v for k, v in w.items() if k != "id"} for w in state["webhooks"]]
        return out

    # -- comparing -----------------------------------------------------------------------------------------------
    @staticmethod
    def differences(current: dict[str, Any] | None, wanted: dict[str, Any]) -> dict[str, Any]:
        """What would change: project fields, storages to add/update, backends to connect, webhooks to set/remove."""
        cur = Project.public(current) if current else None
        fields = {
            key: wanted[key]
            for key in FIELDS
            if cur is None
            or (cur[key] if key != "label_config" else (cur[key] or "").strip())
            != (wanted[key] if key != "label_config" else wanted[key].strip())
        }
        cur_storages = {s["path"]: s for s in (cur or {}).get("storages", [])}
        storages = [
            s
            for s in wanted["storages"]
            if {k: v for k, v in cur_storages.get(s["path"], {}).items() if k != "sync"}
            != {k: v for k, v in s.items() if k != "sync"}
        ]
        backends = [b for b in wanted["ml_backends"] if b not in (cur or {}).get("ml_backends", [])]
        cur_hooks = {w["url"]: w for w in (cur or {}).get("webhooks", [])}
        hooks = [w for w in wanted["webhooks"] if cur_hooks.get(w["url"]) != w]
        wanted_urls = {w["url"] for w in wanted["webhooks"]}
        removed = [w for w in (current or {}).get("webhooks", []) if w["url"] not in wanted_urls]
        secrets = {
            f"{w['url']} {name}"
            for w in hooks
            for name, value in w["headers"].items()
            if cur_hooks.get(w["url"], {}).get("headers", {}).get(name) != value
        }
        return {
            "fields": fields,
            "storages": storages,
            "backends": backends,
            "webhooks": hooks,
            "removed_webhooks": removed,
            "secrets": secrets,
        }

    # -- applying ------------------------------------------------------------------------------------------------
    def validate(self, pid: int | None, label_config: str) -> None:
        """Label Studio's own check: the syntax for a new project, and annotations in use for an existing one."""
        path = f"/api/projects/{pid}/validate/" if pid else "/api/projects/validate/"
        status, text = self.api.request("POST", path, {"label_config": label_config})
        if status >= 400:
            raise ApiError("POST", path, status, text)

    def hook_body(self, pid: int, hook: dict[str, Any]) -> dict[str, Any]:
        return {
            "project": pid,
            "url": hook["url"],
            "send_payload": hook["send_payload"],
            "send_for_all_actions": not hook["actions"],
            "actions": hook["actions"],
            "headers": hook["headers"],
            "is_active": True,
        }

    def sync(self, storage_id: int, pid: int) -> bool:
        before = self.api.call("GET", f"/api/projects/{pid}").get("task_number") or 0
        self.api.call("POST", f"/api/storages/localfiles/{storage_id}/sync")
        after = self.api.call("GET", f"/api/projects/{pid}").get("task_number") or 0
        return after != before

    def ensure(self, spec: dict[str, Any], check_mode: bool) -> dict[str, Any]:
        wanted = _normal(spec)
        unknown = [b for b in wanted["ml_backends"] if b not in self.backend_urls]
        if unknown:
            raise ValueError(f"project {wanted['title']!r} names ML backends {unknown} not in labelstack_ml_backends")
        project = self.find(wanted["title"])
        current = self.read(project) if project else None
        todo = self.differences(current, wanted)
        # Label Studio's validation first, in check mode too: a refused config changes nothing.
        if "label_config" in todo["fields"]:
            self.validate(project["id"] if project else None, wanted["label_config"])
        ml_settings = {
            k: v for k, v in ML_PROJECT_SETTINGS.items() if wanted["ml_backends"] and (project or {}).get(k) != v
        }
        changed = any(todo[k] for k in ("fields", "storages", "backends", "webhooks", "removed_webhooks"))
        changed |= bool(ml_settings)
        before = Project.public(current) if current else None
        after = dict(wanted)
        if before is not None:  # sync is what this run does, not a stored setting
            for storage in before["storages"]:
                storage["sync"] = next((s["sync"] for s in wanted["storages"] if s["path"] == storage["path"]), True)
        result: dict[str, Any] = {
            "changed": changed,
            "created": project is None,
            "diff": {
                "before": render(before),
                "after": render(after, todo["secrets"]),
                "before_header": f"project {wanted['title']!r}" + ("" if project else " (absent)"),
                "after_header": f"project {wanted['title']!r}",
            },
        }
        if check_mode:
            result["project_id"] = project["id"] if project else None
            return result
        if project is None:
            project = self.api.call("POST", "/api/projects", {FIELDS[k]: v for k, v in todo["fields"].items()})
            self._set_instruction(project, wanted)
        elif todo["fields"]:
            body = {FIELDS[k]: v for k, v in todo["fields"].items()}
            self.api.call("PATCH", f"/api/projects/{project['id']}", body)
            self._set_instruction(project, wanted)
        pid = project["id"]
        if spec.get("tasks") and result["created"]:
            self.api.call("POST", f"/api/projects/{pid}/import", spec["tasks"])
        existing = {s["path"]: s for s in (current or {}).get("storages", [])}
        for storage in todo["storages"]:
            body = {
                "project": pid,
                "path": f"{self.files_root}/{storage['path']}",
                "regex_filter": storage["regex_filter"],
                "use_blob_urls": storage["use_blob_urls"],
                "title": storage["title"],
            }
            if storage["path"] in existing:
                self.api.call("PATCH", f"/api/storages/localfiles/{existing[storage['path']]['id']}", body)
            else:
                existing[storage["path"]] = self.api.call("POST", "/api/storages/localfiles/", body)
        for storage in wanted["storages"]:
            if storage["sync"] and self.sync(existing[storage["path"]]["id"], pid):
                result["changed"] = True
                result.setdefault("synced", []).append(storage["path"])
        for name in wanted["ml_backends"]:
            url = self.backend_urls[name]
            result["changed"] |= connect_ml_backend(self.api, pid, url, self.user, self.password, adjust=False)[1]
        if ml_settings:
            self.api.call("PATCH", f"/api/projects/{pid}", ml_settings)
        cur_hooks = {w["url"]: w for w in (current or {}).get("webhooks", [])}
        for hook in todo["webhooks"]:
            if hook["url"] in cur_hooks:
                self.api.call("PATCH", f"/api/webhooks/{cur_hooks[hook['url']]['id']}/", self.hook_body(pid, hook))
            else:
                self.api.call("POST", "/api/webhooks/", self.hook_body(pid, hook))
        for hook in todo["removed_webhooks"]:
            self.api.call("DELETE", f"/api/webhooks/{hook['id']}/")
        result["project_id"] = pid
        return result

    def _set_instruction(self, project: dict[str, Any], wanted: dict[str, Any]) -> None:
        """Instructions are shown before labelling exactly when there are some."""
        show = bool(wanted["instructions"])
        if project.get("show_instruction") != show:
            self.api.call("PATCH", f"/api/projects/{project['id']}", {"show_instruction": show})

    def absent(self, title: str, check_mode: bool) -> dict[str, Any]:
        project = self.find(title)
        if project is None:
            return {"changed": False}
        before = render(Project.public(self.read(project)))
        result = {
            "changed": True,
            "project_id": project["id"],
            "diff": {"before": before, "after": "", "before_header": f"project {title!r}", "after_header": "(deleted)"},
        }
        if not check_mode:
            self.api.call("DELETE", f"/api/projects/{project['id']}")
        return result

    def query(self, details: bool = True) -> list[dict[str, Any]]:
        """Every project of the stack as a labelstack_projects item (header values are never returned).

        Without details only the titles: four calls less per project, for listing the unmanaged ones.
        """
        items = []
        for listed in sorted(self.api.projects(), key=lambda p: p["id"]):
            if not details:
                items.append({"title": listed["title"]})
                continue
            state = Project.public(self.read(self.api.call("GET", f"/api/projects/{listed['id']}")))
            for hook in state["webhooks"]:
                hook["headers"] = dict.fromkeys(hook["headers"], "CHANGE-ME")
            for storage in state["storages"]:
                if storage["title"] == storage["path"]:
                    del storage["title"]
            item = {"title": state["title"], "label_config": state["label_config"]}
            item.update({k: state[k] for k in ("description", "instructions") if state[k]})
            item.update({k: state[k] for k in ("sampling", "maximum_annotations") if state[k] != DEFAULTS[k]})
            item.update({k: state[k] for k in ("storages", "ml_backends", "webhooks") if state[k]})
            items.append(item)
        return items


STORAGE = {
    "path": {"type": "str", "required": True},
    "regex_filter": {"type": "str", "default": ""},
    "use_blob_urls": {"type": "bool", "default": True},
    "title": {"type": "str"},
    "sync": {"type": "bool", "default": True},
}
WEBHOOK = {
    "url": {"type": "str", "required": True},
    "actions": {"type": "list", "elements": "str", "default": []},
    "headers": {"type": "dict", "default": {}, "no_log": True},
    "send_payload": {"type": "bool", "default": True},
}
PROJECT = {
    "title": {"type": "str", "required": True},
    "label_config": {"type": "str"},
    "description": {"type": "str", "default": ""},
    "instructions": {"type": "str", "default": ""},
    "sampling": {
        "type": "str",
        "default": "Sequential sampling",
        "choices": ["Sequential sampling", "Uniform sampling", "Uncertainty sampling"],
    },
    "maximum_annotations": {"type": "int", "default": 1},
    "storages": {"type": "list", "elements": "dict", "default": [], "options": STORAGE},
    "ml_backends": {"type": "list", "elements": "str", "default": []},
    "webhooks": {"type": "list", "elements": "dict", "default": [], "options": WEBHOOK},
    "tasks": {"type": "list", "elements": "raw", "default": []},
}
ARGUMENTS = {
    "url": {"type": "str", "required": True},
    "token": {"type": "str", "required": True, "no_log": True},
    "ca_path": {"type": "str"},
    "validate_certs": {"type": "bool", "default": True},
    "files_root": {"type": "str", "default": "/label-studio/files"},
    "ml_backends": {"type": "list", "elements": "dict", "default": []},
    "ml_user": {"type": "str", "default": ""},
    "ml_password": {"type": "str", "default": "", "no_log": True},
    "project": {"type": "dict", "options": PROJECT},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent", "query"]},
    "details": {"type": "bool", "default": True},
}


def run(module: Json, api: Api) -> dict[str, Any]:
    p = module.params
    tool = Project(api, p["files_root"], p["ml_backends"], p["ml_user"], p["ml_password"])
    if p["state"] == "query":
        return {"changed": False, "projects": tool.query(p["details"])}
    if not p["project"]:
        module.fail_json(msg="project is required unless state=query")
    if p["state"] == "absent":
        return tool.absent(p["project"]["title"], module.check_mode)
    if not p["project"].get("label_config"):
        module.fail_json(msg=f"project {p['project']['title']!r} has no label_config")
    return tool.ensure(p["project"], module.check_mode)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENTS, supports_check_mode=True)
    p = module.params
    api = Api(p["url"], p["token"], p["ca_path"], p["validate_certs"])
    try:
        result = run(module, api)
    except ApiError as exc:
        module.fail_json(msg=f"Label Studio refused it: {exc}", status=exc.status, body=exc.body)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
