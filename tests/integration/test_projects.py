"""Projects as code: the deploy creates and keeps the projects of labelstack_projects (README "Projects as code").

The inventory under test declares three projects (tests need them all): text classification with the ML backend
and uncertainty sampling (ml-deploy-check), images from a local-file storage (Product photos) and NER with a
webhook to a receiver on the ML network (Entity spans). The deploy of the session created them, test_deploy's
second run showed it changed nothing; here edits go through `make check` and `make deploy` limited to the
projects step (--tags labelstack_projects: seconds instead of a whole deploy), a used label is refused, and
`make projects-export` fed back (under other titles) reproduces the projects field by field.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelstack_testlib import Api, Deployment, make, wait_for, write_files

TEXT, PHOTOS, ENTITIES = "ml-deploy-check", "Product photos", "Entity spans"
PHOTO_FOLDER = "product-photos"
COPY = "copy of "
ONLY_PROJECTS = "ANSIBLE_ARGS=--tags labelstack_projects"


def inventory_file(deployment: Deployment) -> Path:
    path = Path(deployment.inventory)
    return path / "hosts.yml" if path.is_dir() else path


def edited_inventory(
    deployment: Deployment,
    folder: Path,
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    **group_vars: object,
) -> Path:
    """A copy of the inventory's folder (its label config and task files too) with its projects edited."""
    source = inventory_file(deployment)
    shutil.copytree(source.parent, folder)
    data = yaml.safe_load(source.read_text())
    group = data["all"]["children"]["labelstack"]["vars"]
    group["labelstack_projects"] = edit(group["labelstack_projects"])
    group.update(group_vars)
    (folder / source.name).write_text(yaml.safe_dump(data, sort_keys=False, width=200))
    return folder / source.name


def declared(deployment: Deployment) -> dict[str, dict[str, Any]]:
    projects = deployment.variables.get("labelstack_projects") or []
    titles = {p["title"]: p for p in projects}
    if not {TEXT, PHOTOS, ENTITIES} <= set(titles):
        pytest.skip(f"this inventory does not declare the projects {TEXT}, {PHOTOS} and {ENTITIES}")
    return titles


def project(api: Api, title: str) -> dict[str, Any]:
    found = [p for p in api.all_projects() if p["title"] == title]
    assert len(found) == 1, f"{len(found)} projects titled {title!r}"
    return found[0]


def diff_lines(output: str) -> list[str]:
    """The added and removed lines of the diffs in an ansible-playbook --diff output, spaces squeezed."""
    return sorted(
        re.sub(r"^([+-]) ", r"\1", re.sub(r"\s+", " ", line.rstrip()))
        for line in output.splitlines()
        if re.match(r"^[+-](?![+-]{2})", line)
    )


@pytest.fixture(scope="module")
def receiver(deployment: Deployment) -> Iterator[str]:
    """A webhook receiver at the NER project's webhook address on the ML network; yields its container name."""
    url = declared(deployment)[ENTITIES]["webhooks"][0]["url"]
    address = re.match(r"http://([\d.]+):(\d+)/", url)
    assert address, f"the {ENTITIES} webhook {url} is not http://<address>:<port>/..."
    name = f"{deployment.project_name}-webhook-receiver"
    image = deployment.host.check_output("docker inspect -f '{{.Config.Image}}' %s", deployment.container("ml-backend"))
    server = (
        "import http.server, json, sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        body = self.rfile.read(int(self.headers.get('Content-Length', 0)))\n"
        "        print(json.dumps({'headers': dict(self.headers), 'body': json.loads(body or b'null')}), flush=True)\n"
        "        self.send_response(200); self.end_headers()\n"
        f"http.server.HTTPServer(('', {address[2]}), H).serve_forever()\n"
    )
    deployment.host.run("docker rm -f %s", name)
    deployment.host.check_output(
        "docker run -d --name %s --network %s --ip %s --entrypoint python3 %s -c %s",
        name,
        f"{deployment.project_name}_ml",
        address[1],
        image,
        server,
    )
    yield name
    deployment.host.run("docker rm -f %s", name)


def events(deployment: Deployment, receiver: str) -> list[dict[str, Any]]:
    out = deployment.host.check_output("docker logs %s 2>/dev/null", receiver)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_deploy_created_the_projects(api: Api, deployment: Deployment) -> None:
    wanted = declared(deployment)
    text = project(api, TEXT)
    assert text["sampling"] == "Uncertainty sampling"
    assert text["expert_instruction"] == wanted[TEXT]["instructions"]
    assert text["show_instruction"]
    backends = api.call("GET", f"/api/ml?project={text['id']}")
    assert [b["readable_state"] for b in backends] == ["Connected"], backends
    photos = project(api, PHOTOS)
    assert photos["maximum_annotations"] == 2
    assert '<Image name="image"' in photos["label_config"]  # from the label_config_file
    storages = api.call("GET", f"/api/storages/localfiles?project={photos['id']}")
    assert [s["path"] for s in storages] == [f"{deployment.local_files_root}/{PHOTO_FOLDER}"]
    entities = project(api, ENTITIES)
    assert entities["task_number"] == 2, "the seed tasks file was not imported"
    hooks = api.call("GET", f"/api/webhooks/?project={entities['id']}")
    assert [(h["url"], h["actions"]) for h in hooks] == [
        (wanted[ENTITIES]["webhooks"][0]["url"], ["ANNOTATION_CREATED"])
    ]


def test_the_receiver_gets_an_event_when_a_task_is_annotated(api: Api, deployment: Deployment, receiver: str) -> None:
    entities = project(api, ENTITIES)
    task = api.all_tasks(entities["id"])[0]
    span = {"start": 0, "end": 12, "text": task["data"]["text"][:12], "labels": ["Person"]}
    result = [{"from_name": "label", "to_name": "text", "type": "labels", "value": span}]
    api.call("POST", f"/api/tasks/{task['id']}/annotations/", {"result": result})
    got = wait_for(
        lambda: [e for e in events(deployment, receiver) if e["body"].get("action") == "ANNOTATION_CREATED"],
        30,
        f"the receiver {receiver} got no ANNOTATION_CREATED event",
    )
    assert got[0]["body"]["task"]["id"] == task["id"]
    assert got[0]["headers"].get("X-Labelstack-Token"), got[0]["headers"]


@pytest.fixture(scope="module")
def edits(deployment: Deployment, api: Api, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One label added, one webhook changed, photos put in the storage's folder: `make check`, then `make deploy`."""
    declared(deployment)

    def edit(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in projects:
            if item["title"] == TEXT:
                item["label_config"] = item["label_config"].replace(
                    '<Choice value="Negative"/>', '<Choice value="Negative"/>\n    <Choice value="Neutral"/>'
                )
            if item["title"] == ENTITIES:
                item["webhooks"][0]["actions"] = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
        return projects

    inventory = edited_inventory(deployment, tmp_path_factory.mktemp("edited") / "inventory", edit)
    # New names on every run: the test stack keeps its data between sessions, and the folder its earlier photos.
    run = uuid.uuid4().hex[:8]
    photos = {f"shoe-{run}.jpg": b"\xff\xd8\xff", f"bag-{run}.png": b"\x89PNG", f"notes-{run}.txt": b"x"}
    write_files(deployment, {PHOTO_FOLDER: photos})
    by_hand = api.call("POST", "/api/projects", {"title": f"clicked together {run}"})
    check = make("check", inventory, ONLY_PROJECTS)
    after_check = {title: project(api, title) for title in (TEXT, PHOTOS, ENTITIES)}
    hooks_after_check = api.call("GET", f"/api/webhooks/?project={after_check[ENTITIES]['id']}")
    photo_names_after_check = photo_names(api, after_check[PHOTOS]["id"])
    deploy = make("deploy", inventory, ONLY_PROJECTS)
    by_hand_after = [p for p in api.all_projects() if p["id"] == by_hand["id"]]
    api.call("DELETE", f"/api/projects/{by_hand['id']}")
    return {
        "by_hand": by_hand["title"],
        "by_hand_after": by_hand_after,
        "check": check,
        "after_check": after_check,
        "photo_names_after_check": photo_names_after_check,
        "new_photos": sorted(photos),
        "hooks_after_check": hooks_after_check,
        "deploy": deploy,
    }


def photo_names(api: Api, project_id: int) -> set[str]:
    return {t["data"]["image"].rsplit("/", 1)[-1] for t in api.all_tasks(project_id)}


def test_check_shows_exactly_the_edits(edits: dict[str, Any]) -> None:
    check = edits["check"]
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert diff_lines(check.stdout) == ["+- ANNOTATION_UPDATED", '+<Choice value="Neutral"/>'], check.stdout[-6000:]
    changed = re.findall(r"^changed: \[[^]]+\] => \(item=(.*)\)$", check.stdout, re.M)
    assert sorted(changed) == sorted([TEXT, ENTITIES]), check.stdout[-6000:]


def test_check_lists_a_project_made_by_hand_and_the_deploy_leaves_it(edits: dict[str, Any]) -> None:
    # The YAML callback wraps long messages, so the listing is read with its whitespace folded.
    folded = " ".join(edits["check"].stdout.split())
    listed = re.search(r"unmanaged projects \(not in labelstack_projects, left alone\): (.*?) TASK \[", folded)
    assert listed, f"make check listed no unmanaged projects:\n{edits['check'].stdout[-4000:]}"
    assert edits["by_hand"] in listed.group(1), listed.group(0)
    assert edits["by_hand_after"], f"the deploy deleted {edits['by_hand']!r}, a project it does not manage"


def test_check_changes_nothing(edits: dict[str, Any]) -> None:
    before = edits["after_check"]
    assert "Neutral" not in before[TEXT]["label_config"]
    assert not set(edits["new_photos"]) & edits["photo_names_after_check"], "check mode synced the storage"
    assert [h["actions"] for h in edits["hooks_after_check"]] == [["ANNOTATION_CREATED"]]


def test_deploy_applies_the_edits_and_syncs_the_storage(api: Api, edits: dict[str, Any]) -> None:
    deploy = edits["deploy"]
    assert deploy.returncode == 0, deploy.stdout[-4000:] + deploy.stderr[-2000:]
    assert '<Choice value="Neutral"/>' in project(api, TEXT)["label_config"]
    hooks = api.call("GET", f"/api/webhooks/?project={project(api, ENTITIES)['id']}")
    assert [sorted(h["actions"]) for h in hooks] == [["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]]
    photos = project(api, PHOTOS)
    new = sorted(set(edits["new_photos"]) & photo_names(api, photos["id"]))
    wanted = [name for name in edits["new_photos"] if not name.endswith(".txt")]
    assert new == wanted, "the storage sync did not import the photos (and only them)"


@pytest.fixture(scope="module")
def refused_and_copied(
    api: Api, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One `make projects` run (a deploy costs minutes) with two jobs: the text project without a label an
    annotation uses, which Label Studio must refuse, and the projects of `make projects-export` under other titles.

    A failing item fails the task, not the loop: the copies are made all the same.
    """
    declared(deployment)
    text = project(api, TEXT)
    api.call("POST", f"/api/projects/{text['id']}/import", [{"text": "dreadful"}])
    task = next(t["id"] for t in api.all_tasks(text["id"]) if t["data"].get("text") == "dreadful")
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Negative"]}}]
    api.call("POST", f"/api/tasks/{task}/annotations/", {"result": result})
    folder = tmp_path_factory.mktemp("export")
    first = make("projects-export", deployment.inventory, f"PROJECTS_FILE={folder}/projects.yml")
    assert first.returncode == 0, first.stdout[-4000:]
    exported = {p["title"]: p for p in yaml.safe_load((folder / "projects.yml").read_text())["labelstack_projects"]}

    def refuse_and_copy(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        text_item = next(item for item in projects if item["title"] == TEXT)
        text_item["label_config"] = text_item["label_config"].replace('<Choice value="Negative"/>', "")
        return [text_item] + [dict(exported[t], title=COPY + t) for t in (TEXT, PHOTOS, ENTITIES)]

    inventory = edited_inventory(deployment, folder / "inventory", refuse_and_copy)
    try:
        applied = make("projects", inventory)
        again = make("projects-export", deployment.inventory, f"PROJECTS_FILE={folder}/again.yml")
        assert again.returncode == 0, again.stdout[-4000:]
        copies = {p["title"]: p for p in yaml.safe_load((folder / "again.yml").read_text())["labelstack_projects"]}
        yield {"applied": applied, "exported": exported, "copies": copies, "text": project(api, TEXT)}
    finally:
        for p in api.all_projects():
            if p["title"].startswith(COPY):
                api.call("DELETE", f"/api/projects/{p['id']}")


def test_removing_a_used_label_is_refused(refused_and_copied: dict[str, Any]) -> None:
    run = refused_and_copied["applied"]
    assert run.returncode != 0, "a label that an annotation uses was removed"
    assert "These labels still exist in annotations or drafts" in run.stdout, run.stdout[-4000:]
    assert '<Choice value="Negative"/>' in refused_and_copied["text"]["label_config"]


def test_export_fed_back_reproduces_the_projects(refused_and_copied: dict[str, Any]) -> None:
    exported, copies = refused_and_copied["exported"], refused_and_copied["copies"]
    for title in (TEXT, PHOTOS, ENTITIES):
        assert COPY + title in copies, f"the exported {title} was not created again: {sorted(copies)}"
        original, copy = exported[title], dict(copies[COPY + title], title=title)
        for key in sorted(set(original) | set(copy)):
            assert copy.get(key) == original.get(key), f"{title}: {key} differs in the copy"


def backups(deployment: Deployment) -> set[str]:
    return set(deployment.host.check_output("ls -A %s 2>/dev/null || true", deployment.backup_dir).split())


def test_state_absent_needs_the_confirmation_and_backs_up_first(
    api: Api, deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> None:
    declared(deployment)
    doomed = api.call("POST", "/api/projects", {"title": f"doomed {uuid.uuid4().hex[:8]}"})
    folder = tmp_path_factory.mktemp("absent")

    def only_absent(_: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"title": doomed["title"], "state": "absent"}]

    try:
        before = backups(deployment)
        refused = make("projects", edited_inventory(deployment, folder / "refused", only_absent))
        assert refused.returncode != 0, "a project was marked absent without the confirmation"
        assert "labelstack_projects_confirm_absent" in refused.stdout, refused.stdout[-3000:]
        assert [p for p in api.all_projects() if p["id"] == doomed["id"]], "the refused run deleted the project"
        assert backups(deployment) == before, "the refused run made a backup"
        confirmed = edited_inventory(
            deployment, folder / "confirmed", only_absent, labelstack_projects_confirm_absent=True
        )
        deleted = make("projects", confirmed)
        assert deleted.returncode == 0, deleted.stdout[-4000:] + deleted.stderr[-2000:]
        assert not [p for p in api.all_projects() if p["id"] == doomed["id"]], "the confirmed run kept the project"
        assert backups(deployment) - before, "the project was deleted without a backup first"
    finally:
        api.call("DELETE", f"/api/projects/{doomed['id']}", ok=(204, 404))
