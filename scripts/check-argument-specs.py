#!/usr/bin/env python3
"""Fail when a role's argument specs drift from its defaults or from its entry points.

For every role: meta/argument_specs.yml's `main` options list exactly the variables of defaults/main.yml,
each with a description; every entry point (a task file directly in tasks/, helpers live in tasks/steps/)
has a spec of its own name, and every spec names an entry point. Every playbook's `include_role` names an entry
point by its spec's name (`tasks_from: db-host`): with `db-host.yml`, Ansible looks for a spec called
`db-host.yml` and validates nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ANSIBLE = Path(__file__).resolve().parent.parent / "ansible"
ROLES = ANSIBLE / "roles"


def drift(role: Path) -> list[str]:
    """Messages describing how the role's defaults, argument specs and entry points differ (empty when in step)."""
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    options = specs["main"].get("options", {})
    problems = [
        f"'{name}' is in defaults/main.yml but not in argument_specs" for name in defaults if name not in options
    ]
    problems += [
        f"'{name}' is in argument_specs but has no default in defaults/main.yml"
        for name in options
        if name not in defaults
    ]
    for entry, spec in specs.items():
        problems += [
            f"'{name}' in the {entry} spec has no description"
            for name, option in (spec.get("options") or {}).items()
            if not option.get("description")
        ]
    entry_points = {path.stem for path in (role / "tasks").glob("*.yml")}
    problems += [
        f"entry point tasks/{name}.yml has no spec in argument_specs" for name in sorted(entry_points - specs.keys())
    ]
    problems += [
        f"spec '{name}' names no entry point (no tasks/{name}.yml)" for name in sorted(specs.keys() - entry_points)
    ]
    return [f"{role.name}: {message}" for message in problems]


def role_includes(node: object) -> list[dict]:
    """Every include_role/import_role argument dict anywhere in a parsed playbook."""
    if isinstance(node, list):
        return [found for item in node for found in role_includes(item)]
    if not isinstance(node, dict):
        return []
    found = [
        value
        for key, value in node.items()
        if key.rsplit(".", 1)[-1] in {"include_role", "import_role"} and isinstance(value, dict)
    ]
    return found + [inner for value in node.values() for inner in role_includes(value)]


def unchecked_includes(playbooks: Path, roles: Path) -> list[str]:
    """Messages for playbooks whose tasks_from names no entry point spec of the role (so nothing is validated)."""
    problems = []
    for playbook in sorted(playbooks.glob("*.yml")):
        for include in role_includes(yaml.safe_load(playbook.read_text())):
            role, entry = include.get("name"), include.get("tasks_from", "main")
            spec_file = roles / str(role) / "meta" / "argument_specs.yml"
            if not spec_file.exists():
                continue
            specs = yaml.safe_load(spec_file.read_text())["argument_specs"]
            if entry not in specs:
                problems.append(f"{playbook.name}: tasks_from '{entry}' of role {role} names no spec")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roles", nargs="*", type=Path, help="role directories (default: every role)")
    args = parser.parse_args()
    roles = args.roles or sorted(p for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists())
    problems = [message for role in roles for message in drift(role)] + unchecked_includes(ANSIBLE, ROLES)
    for message in problems:
        print(f"FAIL: {message}", file=sys.stderr)
    if not problems:
        print(f"argument specs in step with defaults and entry points for {len(roles)} roles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
