"""Docs that cannot drift: every CLI command has help text and a README section."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from tunesvc.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def commands():
    return sorted(main.commands)


@pytest.mark.parametrize("name", commands())
def test_every_command_has_help_text(name):
    cmd = main.commands[name]
    assert cmd.help and len(cmd.help.strip()) > 10, f"tunesvc {name} has no help text"
    for p in cmd.params:
        if isinstance(p, click.Option) and p.name not in ("help",):
            assert p.help, f"tunesvc {name} {p.opts[0]} has no help text"


@pytest.mark.parametrize("name", commands())
def test_every_command_is_documented_in_the_readme_with_an_example(name):
    assert f"tunesvc {name}" in README, f"README has no example of 'tunesvc {name}'"


def test_readme_opens_with_the_two_commands():
    head = README[:3000]
    assert "pip install -e '.[intel]'" in head and "tunesvc tune matmul" in head
    assert "'.[dev]'" in head and "pytest" in head
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    test_cmd = next(line for line in ci.splitlines() if "pytest" in line)
    assert test_cmd.strip() in README, ".ci/run must call exactly the README's test command"
