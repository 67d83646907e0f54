"""Local-file storage: files put in the host folder are synced into tasks and served only to the right clients."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from label_studio_sdk import LabelStudio

from labelstack_testlib import Api, Deployment, expect, remove_folders, wait_for, write_files

from .smokelib import ProjectFactory

LABEL_CONFIG = """
<View>
  <Text name="text" value="$text" valueType="url"/>
  <Choices name="topic" toName="text">
    <Choice value="smoke"/>
  </Choices>
</View>"""
FILES = {
    "one.txt": b"first smoke file\n",
    "two.txt": "zweite Datei: Gr\u00fc\u00dfe \u2713\n".encode(),
    "skipped.md": b"does not match the storage's regex_filter\n",
}
SYNCED = ("one.txt", "two.txt")
REGEX_FILTER = r".*\.txt$"
SECRET = b"labelstack smoke: this folder is connected to no storage\n"
PASSWD_MARKER = b"root:x:0:0"


@dataclass(frozen=True)
class SyncedFolder:
    """A host folder under the local-files root, connected to a project and synced."""

    project_id: int
    storage_id: int
    folder: str  # relative to the root
    unconnected: str  # a sibling folder (same name prefix) that no storage points at
    task_urls: dict[str, str]  # file name -> the URL in its task's data


@pytest.fixture(scope="module")
def synced(
    deployment: Deployment, ls: LabelStudio, api: Api, module_projects: ProjectFactory
) -> Iterator[SyncedFolder]:
    folder = f"smoke-{uuid.uuid4().hex[:8]}"
    unconnected = f"{folder}-unconnected"
    write_files(deployment, {folder: FILES, unconnected: {"secret.txt": SECRET}})
    try:
        project_id = module_projects.create("local-files", LABEL_CONFIG)
        storage = ls.import_storage.local.create(
            project=project_id,
            title=folder,
            path=f"{deployment.local_files_root}/{folder}",
            regex_filter=REGEX_FILTER,
            use_blob_urls=True,
        )
        assert storage.id, f"no storage id: {storage!r}"
        ls.import_storage.local.sync(id=storage.id)

        def synced_tasks() -> dict[str, str] | None:
            tasks = list(ls.tasks.list(project=project_id))
            return (
                {task.data["text"].rsplit("/", 1)[-1]: task.data["text"] for task in tasks} if len(tasks) >= 2 else None
            )

        task_urls = wait_for(synced_tasks, timeout=30, message=f"local-files sync of {folder} created no tasks")
        yield SyncedFolder(project_id, storage.id, folder, unconnected, task_urls)
        expect(api.delete(f"/api/storages/localfiles/{storage.id}"), 204, "storage deletion")
    finally:
        remove_folders(deployment, [folder, unconnected])


def file_url(deployment: Deployment, relative_path: str) -> str:
    return f"{deployment.url}/data/local-files/?d={quote(relative_path)}"


def test_sync_creates_one_task_per_matching_file(synced: SyncedFolder, deployment: Deployment) -> None:
    assert sorted(synced.task_urls) == sorted(SYNCED), f"tasks of the sync: {synced.task_urls}"
    for name, url in synced.task_urls.items():
        # Absolute URLs are built from LABEL_STUDIO_HOST: they must point at the deployment itself.
        assert url == file_url(deployment, f"{synced.folder}/{name}"), f"task URL of {name}"


@pytest.mark.parametrize("name", SYNCED)
def test_file_is_served_to_an_authenticated_client(name: str, synced: SyncedFolder, api: Api) -> None:
    response = api.get(synced.task_urls[name])
    assert response.status_code == 200, f"{name}: HTTP {response.status_code} {response.text[:300]}"
    assert response.content == FILES[name], f"{name}: served bytes differ from the file's"
    assert response.headers.get("Content-Type", "").startswith("text/plain"), response.headers


def test_anonymous_and_wrong_token_requests_are_refused(synced: SyncedFolder, api: Api) -> None:
    url = synced.task_urls["one.txt"]
    for what, response in {
        "anonymous": api.get(url, anonymous=True),
        "wrong token": api.get(url, token="not-the-right-token-0123456789"),
    }.items():
        assert response.status_code in (401, 403), f"{what}: HTTP {response.status_code} {response.text[:300]}"
        assert FILES["one.txt"] not in response.content, f"{what}: the file content was served"


def test_file_outside_any_storage_is_not_served(synced: SyncedFolder, deployment: Deployment, api: Api) -> None:
    """A sibling folder whose name merely starts like the storage's must stay private."""
    response = api.get(file_url(deployment, f"{synced.unconnected}/secret.txt"))
    assert response.status_code == 404, f"HTTP {response.status_code} {response.text[:300]}"
    assert SECRET not in response.content


@pytest.mark.parametrize(
    "path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "{folder}/../../../etc/passwd",
        "{root}/../../etc/passwd",
    ],
)
def test_path_traversal_never_serves_system_files(
    path: str, synced: SyncedFolder, deployment: Deployment, api: Api
) -> None:
    # Label Studio 1.23.2 answers `..` escapes with HTTP 500 (Django's SuspiciousFileOperation), the others with 404.
    query = path.format(folder=synced.folder, root=deployment.local_files_root)
    response = api.get(f"{deployment.url}/data/local-files/?d={query}")
    assert response.status_code != 200, f"?d={query} answered 200: {response.content[:200]!r}"
    assert PASSWD_MARKER not in response.content, f"?d={query} served /etc/passwd"


@pytest.mark.parametrize("path", ["{root}", "{root}/", "{root}/{folder}/../..", "/etc", "/label-studio/data"])
def test_storage_path_must_be_strictly_inside_the_root(
    path: str, synced: SyncedFolder, deployment: Deployment, api: Api
) -> None:
    storage_path = path.format(root=deployment.local_files_root, folder=synced.folder)
    response = api.post("/api/storages/localfiles", json={"project": synced.project_id, "path": storage_path})
    if response.status_code == 201:
        api.delete(f"/api/storages/localfiles/{response.json()['id']}")
    body = expect(response, 400, f"local-files storage at {storage_path}")
    assert "LOCAL_FILES_DOCUMENT_ROOT" in str(body), f"unclear error for {storage_path}: {body}"
