"""An image under the local-files root, synced into a task, renders in the labelling view."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest
from PIL import Image

from labelstack_testlib import Api, Deployment, remove_folders, wait_for, write_files

from .uilib import Browser, open_labeling

LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <Choices name="kind" toName="image">
    <Choice value="swatch"/>
  </Choices>
</View>"""
SIZE = (64, 48)  # pixels of the image, as the browser must report them


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "orange").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_project(deployment: Deployment, api: Api) -> Iterator[int]:
    """A project whose one task is swatch.png, synced from a local-files storage (set up through the API)."""
    folder = f"ui-{uuid.uuid4().hex[:8]}"
    write_files(deployment, {folder: {"swatch.png": png(SIZE)}})
    project = api.call("POST", "/api/projects", {"title": folder, "label_config": LABEL_CONFIG})
    try:
        storage = api.call(
            "POST",
            "/api/storages/localfiles",
            {"project": project["id"], "path": f"{deployment.local_files_root}/{folder}", "use_blob_urls": True},
        )
        api.call("POST", f"/api/storages/localfiles/{storage['id']}/sync")
        wait_for(lambda: api.all_tasks(project["id"]), 30, f"syncing {folder} made no task")
        yield project["id"]
    finally:
        api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))
        remove_folders(deployment, [folder])


def test_local_files_image_renders_in_the_labelling_view(admin: Browser, image_project: int) -> None:
    task_id = open_labeling(admin, image_project)

    def loaded() -> list[int] | None:
        """naturalWidth/Height of the task's image once the browser has decoded it."""
        return admin.driver.execute_script(
            "const image = document.querySelector('.lsf-image img');"
            "return image && image.complete && image.naturalWidth ? [image.naturalWidth, image.naturalHeight] : null;"
        )

    size = admin.wait(loaded, f"task {task_id}: the local-files image did not load in the labelling view")
    admin.step("local-files-image")
    assert tuple(size) == SIZE, f"the image shows as {size}, the file is {SIZE}"
