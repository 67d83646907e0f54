"""Bad input gets a clear 4xx and leaves nothing behind: label configs, import files, tokens."""

from __future__ import annotations

import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from labelstack_testlib import Api, Deployment, expect

from .smokelib import TEXT_CLASSIFICATION, ProjectFactory

INVALID_CONFIGS = {
    "unclosed-xml": ('<View><Text name="text" value="$text"/><Choices name="c" toName="text">', "no element found"),
    "unknown-to-name": (
        '<View><Text name="text" value="$text"/>'
        '<Choices name="c" toName="nowhere"><Choice value="a"/></Choices></View>',
        "nowhere",
    ),
    "control-without-name": (
        '<View><Text name="text" value="$text"/><Choices toName="text"><Choice value="a"/></Choices></View>',
        "'name' is a required property",
    ),
    "duplicate-names": (
        '<View><Text name="text" value="$text"/>'
        '<Choices name="text" toName="text"><Choice value="a"/></Choices></View>',
        "non-unique names",
    ),
}


@pytest.mark.parametrize(("label_config", "message"), INVALID_CONFIGS.values(), ids=INVALID_CONFIGS.keys())
def test_invalid_label_config_is_rejected(label_config: str, message: str, api: Api, projects: ProjectFactory) -> None:
    title = projects.title("bad-config")
    response = api.post("/api/projects", json={"title": title, "label_config": label_config})
    if response.status_code == 201:
        projects.adopt(response.json()["id"])
    body = expect(response, 400, "project with an invalid label config")
    errors = body.get("validation_errors", {}).get("label_config")
    assert errors, f"no label_config error in {body}"
    assert message.lower() in " ".join(errors).lower(), f"unhelpful label_config error: {errors}"
    assert title not in [project["title"] for project in api.all_projects()], "a project was created anyway"


def test_invalid_label_config_raises_in_the_sdk(ls: LabelStudio, projects: ProjectFactory) -> None:
    label_config, message = INVALID_CONFIGS["unknown-to-name"]
    with pytest.raises(ApiError) as caught:
        projects.adopt(ls.projects.create(title=projects.title("bad-config-sdk"), label_config=label_config).id)
    assert caught.value.status_code == 400, caught.value
    assert message in str(caught.value.body), caught.value.body


def test_broken_json_upload_is_rejected_and_imports_nothing(
    ls: LabelStudio, api: Api, projects: ProjectFactory
) -> None:
    project_id = projects.create("bad-json-file", TEXT_CLASSIFICATION.label_config)
    upload = {"file": ("broken.json", b'[{"text": "complete task"}, {"text": "cut off', "application/json")}
    body = expect(api.post(f"/api/projects/{project_id}/import", files=upload), 400, "broken JSON upload")
    errors = " ".join(body.get("validation_errors", {}).get("non_field_errors", []))
    assert "failed to parse" in errors.lower(), f"unclear import error: {body}"
    assert "broken.json" in errors, f"import error does not name the file: {body}"
    assert list(ls.tasks.list(project=project_id)) == [], "tasks were created from a broken file"

    # The project stays usable: a good import afterwards works.
    good = {"file": ("good.json", b'[{"text": "fine"}]', "application/json")}
    assert expect(api.post(f"/api/projects/{project_id}/import", files=good), 201, "good upload")["task_count"] == 1


def test_tasks_missing_the_config_variable_are_rejected(ls: LabelStudio, api: Api, projects: ProjectFactory) -> None:
    project_id = projects.create("bad-task-data", TEXT_CLASSIFICATION.label_config)
    response = api.post(f"/api/projects/{project_id}/import", json=[{"text": "ok"}, {"body": "no $text here"}])
    body = expect(response, 400, "import without the $text variable")
    assert '"text" key is expected' in str(body), f"unclear import error: {body}"
    assert list(ls.tasks.list(project=project_id)) == [], "part of a rejected import was kept"


def test_wrong_token_gets_401(deployment: Deployment, api: Api) -> None:
    response = api.get("/api/projects", token="not-the-right-token-0123456789")
    body = expect(response, 401, "wrong token")
    assert body["detail"] == "Invalid token.", body
    assert expect(api.get("/api/projects", anonymous=True), 401, "no token")["detail"]

    with pytest.raises(ApiError) as caught:
        LabelStudio(base_url=deployment.url, api_key="not-the-right-token-0123456789").projects.get(1)
    assert caught.value.status_code == 401, caught.value
