"""Unit tests of the repository's own tooling (no stack needed)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from labelstack_testlib import REPO, PlaybookRun, load_module, parse_env_file

check_argument_specs = load_module("check_argument_specs", REPO / "scripts" / "check-argument-specs.py")


def _role(tmp_path: Path, defaults: str, options: str, entry_points: tuple[str, ...] = ("main",)) -> Path:
    role = tmp_path / "demo"
    for folder in ("defaults", "meta", "tasks/steps"):
        (role / folder).mkdir(parents=True)
    (role / "defaults" / "main.yml").write_text(defaults)
    (role / "meta" / "argument_specs.yml").write_text(f"argument_specs:\n  main:\n    options:\n{options}")
    for name in entry_points:
        (role / "tasks" / f"{name}.yml").write_text("---\n")
    (role / "tasks" / "steps" / "helper.yml").write_text("---\n")
    return role


def test_roles_in_repository_have_specs_in_step() -> None:
    roles = sorted((REPO / "ansible" / "roles").iterdir())
    assert roles, "no roles found"
    assert [m for role in roles for m in check_argument_specs.drift(role)] == []


def test_drift_names_a_default_missing_from_the_spec(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo_a: 1\ndemo_b: 2\n", "      demo_a: {description: A, type: int}\n")
    assert check_argument_specs.drift(role) == ["demo: 'demo_b' is in defaults/main.yml but not in argument_specs"]


def test_drift_names_a_spec_option_without_default_or_description(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo_a: 1\n", "      demo_a: {description: A, type: int}\n      demo_c: {type: str}\n")
    assert check_argument_specs.drift(role) == [
        "demo: 'demo_c' is in argument_specs but has no default in defaults/main.yml",
        "demo: 'demo_c' in the main spec has no description",
    ]


def test_drift_names_an_entry_point_without_spec_and_a_spec_without_entry_point(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo_a: 1\n", "      demo_a: {description: A, type: int}\n", ("main", "backup"))
    spec = role / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text() + "  restore:\n    options: {}\n")
    assert check_argument_specs.drift(role) == [
        "demo: entry point tasks/backup.yml has no spec in argument_specs",
        "demo: spec 'restore' names no entry point (no tasks/restore.yml)",
    ]


def test_playbooks_name_entry_points_by_their_spec() -> None:
    assert check_argument_specs.unchecked_includes(REPO / "ansible", REPO / "ansible" / "roles") == []


def test_a_tasks_from_with_the_file_suffix_is_named(tmp_path: Path) -> None:
    role = _role(tmp_path, "demo_a: 1\n", "      demo_a: {description: A, type: int}\n")
    (tmp_path / "site.yml").write_text(
        "- hosts: all\n  tasks:\n    - ansible.builtin.include_role: {name: demo, tasks_from: main.yml}\n"
        "    - ansible.builtin.include_role: {name: demo, tasks_from: main}\n"
    )
    assert check_argument_specs.unchecked_includes(tmp_path, role.parent) == [
        "site.yml: tasks_from 'main.yml' of role demo names no spec"
    ]


def test_recap_parsing() -> None:
    output = (
        "TASK [x : Do a thing] ***\nchanged: [h1]\n\nPLAY RECAP ***\n"
        "h1                  : ok=5    changed=1    unreachable=0    failed=0    skipped=2\n"
        "h2                  : ok=4    changed=0    unreachable=0    failed=0    skipped=2\n"
    )
    run = PlaybookRun(0, output)
    assert run.recap()["h1"]["changed"] == 1
    assert run.recap()["h2"] == {"ok": 4, "changed": 0, "unreachable": 0, "failed": 0, "skipped": 2}
    assert run.changed_tasks() == ["x : Do a thing"]
    assert run.changed_tasks("h1") == ["x : Do a thing"]
    assert run.changed_tasks("h2") == []


def test_env_file_parsing() -> None:
    assert parse_env_file("# c\nA=1\nB='x y'\n\nC=a=b\n") == {"A": "1", "B": "x y", "C": "a=b"}


@pytest.mark.parametrize("script", ["make-base-image.sh", "bootstrap-venv.sh", "check-alert-rules.sh"])
def test_scripts_have_help_and_refuse_unknown_flags(script: str) -> None:
    path = REPO / "scripts" / script
    assert subprocess.run([path, "--help"], capture_output=True, check=False).returncode == 0
    bad = subprocess.run([path, "--bogus"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0
    assert "FAIL: unknown argument '--bogus'" in bad.stderr


def test_the_ml_backend_tag_hashes_every_file_its_image_copies() -> None:
    """A module missing from the list would change the image without changing its tag: a host keeps the old one."""
    contexts = yaml.safe_load((REPO / "ansible/roles/labelstack/vars/main.yml").read_text())
    listed = set(contexts["__labelstack_role_build_contexts"]["ml-backend"]["files"])
    context = REPO / "compose" / "ml-backend"
    copied = {
        str(p.relative_to(context))
        for package in ("labelstack_ml", "label_studio_ml")
        for p in (context / package).glob("*.py")
    }
    assert copied - listed == set()


@pytest.mark.parametrize(
    ("repository", "accepted"),
    [
        ("/mnt/offsite", True),
        ("/srv/offsite-disk/labelstack.x1Y2", True),
        ("sftp:backup@vault.example:/srv/labelstack", True),
        ("sftp://backup@vault.example:2222//srv/labelstack", True),
        ("mnt/offsite", False),  # relative: where would it be?
        ("/mnt/a:b", False),  # docker's --volume host:container would split it
        ("/mnt/a,b", False),
        ("/mnt/a b", False),
        ("s3:s3.amazonaws.com/bucket", False),  # not a mount or SFTP: the image has no credentials for it
    ],
)
def test_the_offsite_repository_is_a_mountable_folder_or_sftp(repository: str, accepted: bool) -> None:
    """The pattern preflight and the push check labelstack_offsite_repository with (Jinja's match: re.match)."""
    pattern = yaml.safe_load((REPO / "ansible/roles/labelstack/vars/main.yml").read_text())[
        "__labelstack_offsite_repository_pattern"
    ]
    assert bool(re.match(pattern, repository)) is accepted
