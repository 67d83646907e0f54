"""Unit tests of the labelstack_project module (ansible/roles/labelstack/library) against a fake Label Studio API.

The fake keeps projects, local-file storages, ML backends and webhooks in memory and answers the routes the module
calls; the integration tests (tests/integration/test_projects.py) run the same module against the real stack.
"""

from __future__ import annotations

import json
import re
from typing import Any

import ansible.module_utils
import pytest

from labelstack_testlib import REPO, load_module

Json = Any  # a value as json.loads returns it

# Where Ansible finds the role's module_utils when it runs the module.
ansible.module_utils.__path__.append(str(REPO / "ansible/roles/labelstack/module_utils"))
mod = load_module("labelstack_project", REPO / "ansible/roles/labelstack/library/labelstack_project.py")
filters = load_module("labelstack_filters", REPO / "ansible/roles/labelstack/filter_plugins/labelstack_filters.py")

CONFIG = '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="A"/></Choices></View>'
BACKENDS = [{"name": "ml-backend", "url": "http://ml-backend.internal:9090"}]
MUTATING = ("POST", "PATCH", "DELETE")


class FakeLabelStudio(mod.Api):
    """Label Studio's routes as the module uses them; `refuse` maps a label that annotations use to its message."""

    def __init__(self) -> None:
        super().__init__("http://ls", "token")
        self.tables: dict[str, dict[int, dict[str, Any]]] = {"projects": {}, "storages": {}, "ml": {}, "hooks": {}}
        self.next_id = 1
        self.calls: list[tuple[str, str]] = []
        self.used_labels: set[str] = set()

    def add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "id": self.next_id}
        self.next_id += 1
        self.tables[table][row["id"]] = row
        return row

    def request(self, method: str, path: str, body: Json = None) -> tuple[int, str]:
        self.calls.append((method, path))
        answer = self.route(method, path.split("?")[0], dict(re.findall(r"(\w+)=([^&]+)", path)), body)
        if isinstance(answer, tuple):
            return answer
        return (200 if answer is not None else 204), json.dumps(answer) if answer is not None else ""

    def route(self, method: str, path: str, query: dict[str, str], body: Json) -> Json:
        t = self.tables
        if path == "/api/projects" and method == "GET":
            return {"results": list(t["projects"].values()), "next": None}
        if path == "/api/projects" and method == "POST":
            defaults = {"description": "", "expert_instruction": "", "sampling": "Sequential sampling"}
            return self.add("projects", {**defaults, "maximum_annotations": 1, "task_number": 0, **body})
        if path in ("/api/projects/validate/",) or re.fullmatch(r"/api/projects/\d+/validate/", path):
            removed = [label for label in self.used_labels if f'value="{label}"' not in body["label_config"]]
            if removed:
                return 400, json.dumps({"detail": f"These labels still exist in annotations: {removed}"})
            return {}
        if m := re.fullmatch(r"/api/projects/(\d+)", path):
            if method == "DELETE":
                del t["projects"][int(m[1])]
                return None
            project = t["projects"][int(m[1])]
            if method == "PATCH":
                project.update(body)
            return project
        if m := re.fullmatch(r"/api/projects/(\d+)/import", path):
            t["projects"][int(m[1])]["task_number"] += len(body)
            return {"task_count": len(body)}
        table = {"/api/storages/localfiles": "storages", "/api/ml": "ml", "/api/webhooks": "hooks"}
        for prefix, name in table.items():
            if m := re.fullmatch(re.escape(prefix) + r"/?(\d+)?/?(sync)?", path):
                if m[2]:
                    project = t["projects"][t[name][int(m[1])]["project"]]
                    project["task_number"] += 3 - project.get("synced", 0)
                    project["synced"] = 3
                    return t[name][int(m[1])]
                if m[1] and method == "DELETE":
                    del t[name][int(m[1])]
                    return None
                if m[1]:
                    t[name][int(m[1])].update(body)
                    return t[name][int(m[1])]
                if method == "POST":
                    row = dict(body)
                    row.pop("basic_auth_pass", None)
                    created = self.add(name, row)
                    if name == "ml":  # Label Studio registers <url>/webhook itself
                        self.add("hooks", {"project": body["project"], "url": body["url"] + "/webhook", "headers": {}})
                    return created
                return [r for r in t[name].values() if str(r["project"]) == query.get("project")]
        raise AssertionError(f"unexpected {method} {path}")


class Module:
    def __init__(self, **params: Json) -> None:
        self.check_mode = params.pop("check_mode", False)
        base = {"files_root": "/label-studio/files", "ml_backends": BACKENDS, "ml_user": "u", "ml_password": "p"}
        self.params = {**base, "state": "present", "details": True, **params}

    def fail_json(self, msg: str, **_: Json) -> None:
        raise AssertionError(msg)


def spec(**extra: Json) -> dict[str, Any]:
    return {
        "title": "Reviews",
        "label_config": CONFIG,
        "description": "",
        "instructions": "Be kind.",
        "sampling": "Uncertainty sampling",
        "maximum_annotations": 1,
        "storages": [{"path": "photos", "regex_filter": ".*jpg", "use_blob_urls": True, "title": None, "sync": True}],
        "ml_backends": ["ml-backend"],
        "webhooks": [
            {"url": "http://10.0.0.5:9000/e", "actions": ["ANNOTATION_CREATED"], "headers": {"X-T": "s3cret"}}
        ],
        "tasks": [{"text": "one"}, {"text": "two"}],
        **extra,
    }


def mutations(api: FakeLabelStudio) -> list[tuple[str, str]]:
    return [c for c in api.calls if c[0] in MUTATING and "validate" not in c[1]]


def test_create_then_nothing_to_do() -> None:
    api = FakeLabelStudio()
    first = mod.run(Module(project=spec()), api)
    assert first["changed"]
    assert first["created"]
    project = api.tables["projects"][first["project_id"]]
    assert project["sampling"] == "Uncertainty sampling"
    assert project["show_instruction"] is True
    assert project["task_number"] == 2 + 3  # the seed tasks and the storage's files
    hooks = {h["url"]: h for h in api.tables["hooks"].values()}
    assert hooks["http://ml-backend.internal:9090/webhook"]["headers"]["Authorization"].startswith("Basic ")
    assert hooks["http://10.0.0.5:9000/e"]["send_for_all_actions"] is False
    api.calls.clear()
    second = mod.run(Module(project=spec()), api)
    assert second["changed"] is False, second["diff"]
    assert all(path.endswith("/sync") for _, path in mutations(api)), mutations(api)
    assert second["diff"]["before"] == second["diff"]["after"]


def test_check_mode_shows_the_diff_and_changes_nothing() -> None:
    api = FakeLabelStudio()
    mod.run(Module(project=spec()), api)
    api.calls.clear()
    edited = spec(
        label_config=CONFIG.replace('<Choice value="A"/>', '<Choice value="A"/><Choice value="B"/>'),
        webhooks=[{"url": "http://10.0.0.5:9000/e", "actions": [], "headers": {"X-T": "n3w"}}],
    )
    result = mod.run(Module(project=edited, check_mode=True), api)
    assert result["changed"] is True
    assert mutations(api) == []
    assert 'Choice value="B"' in result["diff"]["after"]
    assert 'Choice value="B"' not in result["diff"]["before"]
    assert "(new value)" in result["diff"]["after"]
    assert "n3w" not in result["diff"]["after"]
    assert "s3cret" not in result["diff"]["before"]
    applied = mod.run(Module(project=edited), api)
    assert applied["changed"] is True
    hook = next(h for h in api.tables["hooks"].values() if h["url"] == "http://10.0.0.5:9000/e")
    assert hook["headers"] == {"X-T": "n3w"}
    assert hook["send_for_all_actions"] is True


def test_a_refused_label_config_changes_nothing() -> None:
    api = FakeLabelStudio()
    mod.run(Module(project=spec()), api)
    api.used_labels = {"A"}
    api.calls.clear()
    with pytest.raises(mod.ApiError, match="still exist in annotations"):
        mod.run(Module(project=spec(label_config=CONFIG.replace("A", "Z"), description="new")), api)
    assert mutations(api) == []


def test_unlisted_webhooks_go_the_ml_backend_ones_stay() -> None:
    api = FakeLabelStudio()
    pid = mod.run(Module(project=spec()), api)["project_id"]
    api.add("hooks", {"project": pid, "url": "http://clicked.example/hook", "headers": {}})
    result = mod.run(Module(project=spec()), api)
    assert result["changed"] is True
    urls = sorted(h["url"] for h in api.tables["hooks"].values())
    assert urls == ["http://10.0.0.5:9000/e", "http://ml-backend.internal:9090/webhook"]


def test_query_reproduces_the_projects() -> None:
    api = FakeLabelStudio()
    mod.run(Module(project=spec()), api)
    exported = mod.run(Module(state="query", project=None), api)["projects"]
    assert [p["title"] for p in exported] == ["Reviews"]
    item = exported[0]
    assert item["webhooks"][0]["headers"] == {"X-T": "CHANGE-ME"}
    assert item["storages"] == [{"path": "photos", "regex_filter": ".*jpg", "use_blob_urls": True, "sync": True}]
    copy = FakeLabelStudio()
    mod.run(Module(project=spec(**{**item, "tasks": []})), copy)
    again = mod.run(Module(state="query", project=None), copy)["projects"]
    assert again == exported


def test_absent_deletes_only_in_apply_mode() -> None:
    api = FakeLabelStudio()
    mod.run(Module(project=spec()), api)
    assert mod.run(Module(state="absent", project=spec(), check_mode=True), api)["changed"] is True
    assert api.tables["projects"]
    assert mod.run(Module(state="absent", project=spec()), api)["changed"] is True
    assert not api.tables["projects"]
    assert mod.run(Module(state="absent", project=spec()), api)["changed"] is False


def test_ml_projects_translate_to_projects() -> None:
    items = [{"title": "a", "label_config": "<View/>"}, {"title": "b", "label_config": "<View/>", "backend": "x"}]
    out = filters.labelstack_ml_projects_as_projects(items, "ml-backend")
    assert [p["ml_backends"] for p in out] == [["ml-backend"], ["x"]]
    assert {p["sampling"] for p in out} == {"Uncertainty sampling"}


def test_projects_yaml_keeps_label_configs_as_blocks() -> None:
    text = filters.labelstack_projects_yaml([{"title": "a", "label_config": "<View>\n  <Text/>\n</View>\n"}])
    assert "label_config: |" in text
    import yaml

    assert yaml.safe_load(text)["labelstack_projects"][0]["label_config"] == "<View>\n  <Text/>\n</View>\n"


def test_a_legacy_connection_is_replaced_and_a_users_settings_are_kept() -> None:
    """Deployments before several backends connected http://<name>:9090; a user may turn on interactive mode."""
    api = FakeLabelStudio()
    pid = mod.run(Module(project=spec(ml_backends=[])), api)["project_id"]
    api.add("ml", {"project": pid, "url": "http://ml-backend:9090", "title": "old"})
    first = mod.run(Module(project=spec()), api)
    assert first["changed"]
    assert [b["url"] for b in api.tables["ml"].values()] == [BACKENDS[0]["url"]]
    backend = next(iter(api.tables["ml"].values()))
    backend["is_interactive"] = True
    again = mod.run(Module(project=spec()), api)
    assert not again["changed"], mutations(api)
    assert backend["is_interactive"] is True
