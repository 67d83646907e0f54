#!/usr/bin/env python3
"""Fail when a role's defaults/main.yml and meta/argument_specs.yml (main entry point) list different variables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parent.parent / "ansible" / "roles"


def drift(role: Path) -> list[str]:
    """Messages describing how the role's defaults and argument spec differ (empty when in step)."""
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"].get("options", {})
    problems = [
        f"{role.name}: '{name}' is in defaults/main.yml but not in argument_specs"
        for name in defaults
        if name not in options
    ]
    problems += [
        f"{role.name}: '{name}' is in argument_specs but has no default in defaults/main.yml"
        for name in options
        if name not in defaults
    ]
    problems += [
        f"{role.name}: '{name}' in argument_specs has no description"
        for name, option in options.items()
        if not option.get("description")
    ]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("roles", nargs="*", type=Path, help="role directories (default: every role)")
    args = parser.parse_args()
    roles = args.roles or sorted(p for p in ROLES.iterdir() if (p / "meta" / "argument_specs.yml").exists())
    problems = [message for role in roles for message in drift(role)]
    for message in problems:
        print(f"FAIL: {message}", file=sys.stderr)
    if not problems:
        print(f"argument specs in step with defaults for {len(roles)} roles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
