"""Unit-test fixtures of the ML backend (compose/ml-backend is on pytest's pythonpath): an app on a temp dir."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from labelstack_ml.base import KeyValueStore, LabelStudioMLBase
from labelstack_ml.server import Settings, create_app


@pytest.fixture(autouse=True)
def model_state(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Model classes keep their state in class attributes that create_app sets: fresh ones for each test."""
    monkeypatch.setattr(LabelStudioMLBase, "store", KeyValueStore(":memory:"))
    monkeypatch.setattr(LabelStudioMLBase, "model_dir", tmp_path_factory.mktemp("models"))


@pytest.fixture
def backend(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., FlaskClient]:
    """A test client of a backend serving `model_class` (the built-in by default) with its data in a temp dir.

    Its requests carry the right basic auth unless `auth` (the password) says otherwise ("" for none). No Label Studio
    runs here: a training run the tests schedule fails to reach it and is logged, not raised.
    """

    def make(
        model_class: type[LabelStudioMLBase] | None = None, auth: str = "secret", **settings: object
    ) -> FlaskClient:
        base = Settings.from_env({"BASIC_AUTH_USER": "ml", "BASIC_AUTH_PASS": "secret"}, model_class)
        options = {**base.__dict__, "data_dir": tmp_path_factory.mktemp("ml-data"), "ls_url": "http://127.0.0.1:9"}
        client = create_app(Settings(**{**options, **settings})).test_client()
        if auth:
            token = base64.b64encode(f"ml:{auth}".encode()).decode()
            client.environ_base["HTTP_AUTHORIZATION"] = f"Basic {token}"
        return client

    return make
