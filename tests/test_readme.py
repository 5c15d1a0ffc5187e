"""The README is part of the product: its commands must exist, and CI must run its test command."""

from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
from pathlib import Path

import click
import pytest

from syncer.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start_commands() -> list[str]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:sh|bash|console)?\n(.*?)\n```", section, flags=re.S)


def all_commands(group: click.Group, prefix: str = "syncer") -> list[str]:
    names = []
    for name, command in sorted(group.commands.items()):
        if command.hidden:
            continue
        full = f"{prefix} {name}"
        names.append(full)
        if isinstance(command, click.Group):
            names += all_commands(command, full)
    return names


def test_quick_start_has_exactly_two_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), "each quick-start command is one line"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = quick_start_commands()[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_every_command_is_documented_in_the_readme() -> None:
    missing = [name for name in all_commands(main) if f"`{name}" not in README]
    assert not missing, f"commands missing from README.md: {missing}"


def test_every_command_has_help() -> None:
    def walk(group: click.Group) -> list[click.Command]:
        out: list[click.Command] = []
        for command in group.commands.values():
            out.append(command)
            if isinstance(command, click.Group):
                out += walk(command)
        return out

    undocumented = [c.name for c in walk(main) if not (c.help or "").strip()]
    assert not undocumented


def personal_section_commands() -> list[list[str]]:
    """The command lines of README's "Your own mail, calendar and OneDrive", in order."""
    section = README.split("### Your own mail, calendar and OneDrive", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)
    return [shlex.split(line.rstrip(" &")) for block in blocks for line in block.splitlines()]


def test_the_readme_mirrors_a_personal_accounts_mail_calendar_and_onedrive_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The section's commands, as written, in a copy of the repository's personal.yaml: the emulator line
    (started in-process with the options it names), `syncer login`, then the two commands; the mirror is the
    emulator's truth and each table has rows."""
    from click.testing import CliRunner
    from test_delegated_e2e import mirror_matches

    from syncer.emulator import EmulatorConfig, EmulatorServer
    from syncer.spec import load_spec

    emulator_line, login, *mirroring = personal_section_commands()
    assert len(mirroring) == 2 and [c[:2] for c in mirroring] == [["syncer", "db"], ["syncer", "sync"]], mirroring
    assert login[:2] == ["syncer", "login"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYNCER_EMULATOR_INFO", raising=False)
    shutil.copy(ROOT / "personal.yaml", tmp_path / "personal.yaml")
    options = main.commands["emulator"].make_context("emulator", emulator_line[2:]).params
    server = EmulatorServer(EmulatorConfig(seed=options["rng_seed"], sign_in_as=options["sign_in_as"],
                                           personal_users=options["personal_users"]), workdir=tmp_path / "emulator")
    server.start()
    try:
        server.write_info(tmp_path / options["info_file"])
        for command in (login, *mirroring):
            result = CliRunner().invoke(main, command[1:], catch_exceptions=False)
            assert result.exit_code == 0, (command, result.output)
        spec = load_spec(tmp_path / "personal.yaml").resolve_emulator()
        assert mirror_matches(spec) == []
        with sqlite3.connect(tmp_path / ".syncer" / "personal.db") as db:
            counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("my_mail", "my_calendar", "my_files")}
        assert all(counts.values()), counts
    finally:
        server.stop()


def test_the_mirrored_types_table_says_what_the_catalogue_says() -> None:
    """Per type row of "What syncer mirrors": each path is the type's, and its change types, application
    permission and owner columns are the catalogue's (syncer.resources, syncer.owners)."""
    from syncer import owners, resources

    section = README.split("## What syncer mirrors", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("| ")]
    header, checked = rows[0], 0
    assert header[:6] == ["Type", "Paths", "Change types", "How syncer syncs it", "Permission (application)", "Owner columns"]
    for cells in rows[1:]:
        name, paths, change_types, _how, permission, owner_cells = cells[:6]
        if name not in {rt.name for rt in resources.CATALOGUE} or "every path" in paths:
            continue
        for path in re.findall(r"`([^`]+)`", paths):
            if "..." in path or ("/" not in path and path not in ("users", "groups")):
                continue  # a table name such as <table>_members, or me/... (delegated)
            matched = resources.match_resource(path)
            assert matched is not None and matched[0].name == name, (name, path)
            rt = matched[0]
            assert rt.permission in permission, (name, path, rt.permission)
            listed = {c.strip() for part in change_types.split(";") for c in part.split(",")}
            assert set(rt.change_types) <= listed, (name, path)
            columns = set(re.findall(r"`(\w+)`", owner_cells))
            found = set(owners.columns_for(rt, path)) | {c for _f, c, _t in rt.owner_columns if not c.endswith("_time")}
            assert found <= columns, (name, path, found)
            checked += 1
    assert checked >= 10
