"""Point-in-time recovery's compose wiring (no stack needed): PostgreSQL archives only through pgBackRest, switched
by .env, and docker-compose.pitr.yml adds pgBackRest's settings and repository to the db service and nothing else."""

from __future__ import annotations

import yaml

from labelstack_testlib import REPO

COMPOSE = REPO / "compose"


def _db_settings() -> dict[str, str]:
    """PostgreSQL's `-c name=value` settings of the one db command line."""
    command = yaml.safe_load((COMPOSE / "docker-compose.db.yml").read_text())["services"]["db"]["command"]
    assert command[0] == "postgres"
    assert all(flag == "-c" for flag in command[1::2]), command
    return dict(item.split("=", 1) for item in command[2::2])


def test_archiving_goes_through_pgbackrest_and_is_switched_by_env() -> None:
    settings = _db_settings()
    assert settings["archive_mode"] == "${LABELSTACK_DB_ARCHIVE_MODE:?}"
    assert settings["archive_timeout"] == "${LABELSTACK_DB_ARCHIVE_TIMEOUT:?}"
    # The stanza and the repository come from the service's PGBACKREST_* variables, not the command line.
    assert settings["archive_command"] == "pgbackrest archive-push %p"


def test_the_pitr_override_adds_settings_and_repository_to_the_database_only() -> None:
    services = yaml.safe_load((COMPOSE / "docker-compose.pitr.yml").read_text())["services"]
    assert set(services) == {"db"}
    db = services["db"]
    # No command of its own: PostgreSQL's one command line stays in docker-compose.db.yml.
    assert set(db) == {"environment", "volumes"}
    assert all(name.startswith("PGBACKREST_") for name in db["environment"]), db["environment"]
    assert db["environment"]["PGBACKREST_PG1_PATH"] == "/var/lib/postgresql/data"
    assert db["volumes"] == [f"${{LABELSTACK_PITR_REPO_DIR:?}}:{db['environment']['PGBACKREST_REPO1_PATH']}"]


def test_the_database_image_has_pgbackrest() -> None:
    dockerfile = (COMPOSE / "db" / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if "apt-get install" in line)
    assert "pgbackrest" in install.split(), install
