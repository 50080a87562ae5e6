"""``dashboard-server --help`` and every subcommand's ``--help``: exit 0, and every option is
listed with a help text (generic: it covers the subcommands added later too)."""

from __future__ import annotations

import argparse
import subprocess

import pytest
from pkgtools import source_command, source_env

from dashboard_server.cli import build_parser


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def help_of(*args: str) -> str:
    result = subprocess.run(
        [*source_command(), *args, "--help"],
        env=source_env(COLUMNS="100"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_top_level_help_lists_every_command_with_a_summary() -> None:
    text = help_of()
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {c.dest: c.help for c in action._choices_actions}
    assert set(summaries) == set(subcommands()) and len(summaries) >= 4
    for name, summary in summaries.items():
        assert summary, f"{name} has no summary in the top-level help"
        assert name in text and summary.split()[0] in text
    assert "--version" in text and parser.description and parser.epilog


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_subcommand_help_lists_every_option_with_a_help_text(command: str) -> None:
    parser = subcommands()[command]
    assert parser.description, f"{command} has no description"
    text = help_of(command)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help != argparse.SUPPRESS, (
            f"{command} {'/'.join(action.option_strings) or action.dest}: no help text"
        )
        for option in action.option_strings:
            assert option in text, f"{command} --help does not mention {option}"


def test_version_is_the_package_version() -> None:
    from dashboard_server import __version__

    result = subprocess.run(
        [*source_command(), "--version"],
        env=source_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == f"dashboard-server {__version__}"
