"""Every hint points somewhere: the options and commands messages name exist.

All string literals of the package (messages, fixes, help texts, f-string parts) are
read with ``ast``. A quoted ``'geoscreen CMD ...'`` must name a real command, and the
``--options`` after it must be options of that command; any other ``--option`` must
belong to some geoscreen command (or to the external tool the string names).
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

import geoscreen
from geoscreen.cli import app  # noqa: F401  (registers every command)
from geoscreen.cli.app import cli

PACKAGE = Path(geoscreen.__file__).parent
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
COMMAND = re.compile(r"['`]geoscreen((?: [a-z][a-z0-9_-]*)+)((?: [^'\"`]*)?)['`]")
# strings that give another tool's command line: their flags are that tool's
EXTERNAL = ("pg_dump", "pg_restore", "gdalwarp", "gdal_translate", "gdal_edit", "pip ",
            "uvicorn", "pytest", "docker")  # fmt: skip


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[
    tuple[tuple[str, ...], click.Command]
]:  # fmt: skip
    for name, command in group.commands.items():
        path = (*prefix, name)
        yield path, command
        if isinstance(command, click.Group):
            yield from _commands(command, path)


COMMANDS = dict(_commands(cli))


def _options(command: click.Command) -> set[str]:
    names: set[str] = set()
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                names.add(opt)
    return names | {"--help"}


ALL_OPTIONS = set().union(*(_options(c) for c in COMMANDS.values())) | _options(cli)


def _strings() -> Iterator[tuple[str, int, str]]:
    """(file, line, text) of every string literal; an f-string's parts joined by spaces."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
                yield str(path.relative_to(PACKAGE)), node.lineno, " ".join(map(str, parts))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield str(path.relative_to(PACKAGE)), node.lineno, node.value


def _resolve(words: list[str]) -> tuple[tuple[str, ...], click.Command] | None:
    """The longest command path the words start with."""
    for end in range(len(words), 0, -1):
        path = tuple(words[:end])
        if path in COMMANDS:
            return path, COMMANDS[path]
    return None


def test_the_cli_has_commands_to_check() -> None:
    assert ("review", "backup") in COMMANDS and ("evaluate",) in COMMANDS
    assert "--score-column" in _options(COMMANDS[("evaluate",)])


def _problems(text: str) -> tuple[list[str], int]:
    """What a string names that does not exist, and how many commands it names."""
    if any(tool in text for tool in EXTERNAL):
        return [], 0
    wrong: list[str] = []
    named: set[str] = set()
    commands = 0
    for match in COMMAND.finditer(text):
        words = match.group(1).split()
        found = _resolve(words)
        if found is None:
            wrong.append(f"no command 'geoscreen {' '.join(words)}'")
            continue
        commands += 1
        path, command = found
        if isinstance(command, click.Group):
            if len(path) < len(words):  # a group takes no arguments: a missing subcommand
                wrong.append(f"no command 'geoscreen {' '.join(words)}'")
            continue  # the group itself ('geoscreen review')
        rest = " ".join(words[len(path) :]) + match.group(2)
        for flag in FLAG.findall(rest):
            named.add(flag)
            if f"--{flag}" not in _options(command):
                wrong.append(f"'geoscreen {' '.join(path)}' has no --{flag}")
    for flag in FLAG.findall(text):
        if flag not in named and f"--{flag}" not in ALL_OPTIONS:
            wrong.append(f"no geoscreen command has --{flag}")
    return wrong, commands


def test_every_hint_names_real_commands_and_options() -> None:
    wrong: list[str] = []
    checked = 0
    for file, line, text in _strings():
        problems, commands = _problems(text)
        checked += commands
        wrong += [f"{file}:{line}: {problem}: {text[:80]!r}" for problem in problems]
    assert wrong == []
    assert checked >= 10  # the messages do name commands: the check is not empty


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Resample it (try 'geoscreen scan --crs EPSG:32633').", "'geoscreen scan' has no --crs"),
        ("Run 'geoscreen review approve 12'.", "no command 'geoscreen review approve'"),
        ("Give --band-order 1,2,3.", "no geoscreen command has --band-order"),
        ("Use 'geoscreen review backup [--db STORE] OUT.sqlite'.", None),
        ("Give --image IMAGE, or a vector file with a CRS.", None),
        ("Back up with 'pg_dump --format=custom --file x.dump'.", None),
    ],
)
def test_the_checker_catches_hints_that_point_nowhere(text: str, problem: str | None) -> None:
    wrong, _ = _problems(text)
    assert wrong == ([problem] if problem else [])


README = PACKAGE.parent / "README.md"


def _readme_commands() -> list[tuple[int, list[str]]]:
    """The ``geoscreen ...`` lines of the README's shell blocks, as argument lists."""
    found: list[tuple[int, list[str]]] = []
    shell = False
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("```"):
            shell = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if shell and line.startswith("geoscreen "):
            text = re.sub(r"\[[^\]]*\]", "", line.split("  #")[0])  # optional parts, comments
            found.append((number, shlex.split(text)[1:]))
    return found


def test_readme_commands_and_options_exist() -> None:
    commands = _readme_commands()
    assert len(commands) >= 20
    wrong: list[str] = []
    for number, args in commands:
        words = [a for a in args if re.fullmatch(r"[a-z][a-z0-9_-]*", a)]
        found = _resolve(words[:3])
        if found is None or isinstance(found[1], click.Group):
            wrong.append(f"README.md:{number}: no command in {' '.join(args[:3])!r}")
            continue
        options = _options(found[1])
        for arg in args:
            if arg.startswith("--") and arg.split("=")[0] not in options:
                wrong.append(f"README.md:{number}: 'geoscreen {' '.join(found[0])}' has no {arg}")
    assert wrong == []
