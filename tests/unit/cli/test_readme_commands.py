"""Every ``cnnlstm`` command line in the READMEs' shell code blocks is one the CLI takes.

Lines are read from the ```sh / ```bash blocks of README.md and deploy/README.md
(backslash continuations joined, comments dropped, ``&&``/``;``/``|`` chains split, a
``.venv/bin/`` prefix or ``VAR=value`` assignments in front allowed). The synopsis
notation is expanded: ``[...]`` is optional (both forms are checked) and ``a|b`` inside a
word is one of the two (each is checked). Upper-case placeholders (``ARCHIVE``, ``DIR``)
stand as they are, so they must be where free text is accepted.

Each form is parsed by the real parser without running it; ``train``'s forwarded options
also go through ``model.train``'s own parser (stopped before training). The forms that are
safe offline (``--version``, ``config check``, ``registry list``, ``backup list``,
``completion``) then run for real against an empty temporary registry, and every command
path shown answers ``--help``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.cli.common import parse_args
from app.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[3]
DOCS = ("README.md", "deploy/README.md")
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
CONTROL = {"&&", "||", ";", "|", "&"}
MAX_FORMS = 64  # per line: the notation must stay readable
SPEC8_VARIABLES = (
    "MODEL_REGISTRY_PATH", "LOG_LEVEL", "DEVICE", "CNNLSTM_CONFIG",
    "MAX_BATCH_SIZE", "BATCH_TIMEOUT_MS", "CACHE_TTL_SECONDS",
)  # fmt: skip


@dataclass(frozen=True)
class DocLine:
    where: str  # file:line
    text: str  # the command as written, from `cnnlstm` on
    argv: tuple[str, ...]  # tokens after `cnnlstm`, notation not yet expanded


def _shell_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced shell code block."""
    blocks: list[tuple[int, list[str]]] = []
    current: list[str] | None = None
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"^\s*```\s*(\S*)", line)
        if fence and current is None:
            current, start = ([] if fence.group(1) in SHELL_LANGUAGES else None), number + 1
            if current is None:
                current = ["<not shell>"]
        elif fence:
            if current != ["<not shell>"]:
                blocks.append((start, current))
            current = None
        elif current is not None and current != ["<not shell>"]:
            current.append(line)
    return blocks


def _logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    joined: list[tuple[int, str]] = []
    pending = ""
    first = start
    for number, line in enumerate(lines, start=start):
        if not pending:
            first = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append((first, pending + stripped))
        pending = ""
    if pending:
        joined.append((first, pending))
    return joined


def _cnnlstm_segments(line: str) -> list[list[str]]:
    line = re.sub(r"^\s*\$\s+", "", line)  # a console prompt
    tokens = shlex.split(line, comments=True)
    segments: list[list[str]] = [[]]
    for token in tokens:
        if token in CONTROL:
            segments.append([])
        else:
            segments[-1].append(token)
    found = []
    for segment in segments:
        while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
            segment = segment[1:]  # VAR=value cnnlstm ...
        if segment and Path(segment[0]).name == "cnnlstm":
            rest = segment[1:]
            cut = next((i for i, t in enumerate(rest) if re.match(r"^\d?[<>]", t)), len(rest))
            found.append(rest[:cut])  # no redirections
    return found


def doc_lines() -> list[DocLine]:
    out: list[DocLine] = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for start, block in _shell_blocks(text):
            for number, line in _logical_lines(start, block):
                for argv in _cnnlstm_segments(line):
                    shown = shlex.join(["cnnlstm", *argv])
                    out.append(DocLine(f"{doc}:{number}", shown, tuple(argv)))
    return out


def _split_brackets(tokens: tuple[str, ...]) -> list[str]:
    items: list[str] = []
    for token in tokens:
        core = token.lstrip("[")
        items += ["["] * (len(token) - len(core))
        body = core.rstrip("]")
        if body:
            items.append(body)
        items += ["]"] * (len(core) - len(body))
    return items


def _expand_items(items: list[str], pos: int = 0) -> tuple[list[list[str]], int]:
    """All forms of items[pos:] up to the matching ``]`` (or the end); the end position."""
    forms: list[list[str]] = [[]]
    while pos < len(items):
        item = items[pos]
        if item == "]":
            return forms, pos + 1
        if item == "[":
            inner, pos = _expand_items(items, pos + 1)
            choices = [[], *inner]
        else:
            choices = [[alt] for alt in item.split("|")] if "|" in item else [[item]]
            pos += 1
        forms = [form + choice for form in forms for choice in choices]
    return forms, pos


def expand(argv: tuple[str, ...]) -> list[list[str]]:
    items = _split_brackets(argv)
    assert items.count("[") == items.count("]"), f"unbalanced [ ] in {argv}"
    forms, _ = _expand_items(items)
    unique = [list(f) for f in dict.fromkeys(tuple(f) for f in forms)]
    assert len(unique) <= MAX_FORMS, f"{len(unique)} forms: simplify the notation in {argv}"
    return unique


PARSER = build_parser()
LINES = doc_lines()
FORMS = [(line, form) for line in LINES for form in expand(line.argv)]


def _form_id(value: object) -> str:
    return value.where if isinstance(value, DocLine) else shlex.join(value)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPEC8_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def parser() -> argparse.ArgumentParser:
    return PARSER


def _parse(
    parser: argparse.ArgumentParser, form: list[str], capsys: pytest.CaptureFixture[str]
) -> argparse.Namespace | None:
    """The namespace, or None where argparse answered and exited 0 (--help, --version)."""
    try:
        return parse_args(parser, form)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 0, f"cnnlstm {shlex.join(form)} does not parse:\n{err}"
    return None


def test_the_docs_show_commands() -> None:
    wheres = {line.where.split(":")[0] for line in LINES}
    assert wheres == set(DOCS)
    assert len(LINES) >= 30


def test_every_subcommand_is_shown_in_the_readme(parser: argparse.ArgumentParser) -> None:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    readme = [line for line in LINES if line.where.startswith("README.md")]
    shown = {form[0] for line in readme for form in expand(line.argv) if form}
    assert set(sub.choices) <= shown


@pytest.mark.parametrize(("line", "form"), FORMS, ids=_form_id)
def test_each_documented_form_parses(
    line: DocLine,
    form: list[str],
    parser: argparse.ArgumentParser,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    args = _parse(parser, form, capsys)
    if args is None or getattr(args, "command", None) != "train":
        return
    # The trainer's own parser, with training itself replaced by a stop.
    import model.train

    class Parsed(Exception):
        pass

    def stop(*args: object, **kwargs: object) -> None:
        raise Parsed

    monkeypatch.setattr(model.train, "train", stop)
    extras: list[str] = args.extras
    code: object = "returned"
    try:
        model.train.main_train(["--registry", str(tmp_path), *extras])
    except Parsed:
        code = 0
    except SystemExit as exc:
        code = exc.code
    assert code == 0, f"{line.where}: the trainer refuses {extras}: {capsys.readouterr().err}"


def _command_path(parser: argparse.ArgumentParser, form: list[str]) -> list[str]:
    """The subcommand words of a form (``['registry', 'list']``), options left out."""
    path: list[str] = []
    current = parser
    for word in form:
        sub = next((a for a in current._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None:
            break
        if word in sub.choices:
            path.append(word)
            current = sub.choices[word]
    return path


def test_every_documented_command_answers_help(
    parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = {tuple(_command_path(parser, form)) for _, form in FORMS}
    paths.discard(("train",))  # its --help is the trainer's: checked by the parse test
    assert len(paths) >= 15
    for path in sorted(paths):
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0, path
        assert "usage: cnnlstm" in capsys.readouterr().out


SAFE = (("config", "check"), ("registry", "list"), ("backup", "list"), ("completion",))


SAFE_FORMS = [(line, form) for line, form in FORMS if tuple(_command_path(PARSER, form)) in SAFE]


@pytest.mark.parametrize(("line", "form"), SAFE_FORMS, ids=_form_id)
def test_safe_documented_forms_run(
    line: DocLine,
    form: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Against an empty registry: these only read (config check, lists, completion)."""
    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository root
    monkeypatch.setenv("MODEL_REGISTRY_PATH", str(tmp_path / "models"))
    code = main(form)
    out = capsys.readouterr()
    assert code == 0, f"{line.where}: {line.text}\n{out.err}"
    if "--json" in form:
        json.loads(out.out)


def test_version_through_the_installed_command() -> None:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        version = tomllib.load(fh)["project"]["version"]
    script = Path(sys.executable).with_name("cnnlstm")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "app.cli.main"]
    done = subprocess.run(
        [*command, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"cnnlstm {version}\n"
    assert any(line.argv == ("--version",) for line in LINES)


def test_config_check_of_the_local_config_as_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["config", "check", "deploy/config.local.yaml", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"file": "deploy/config.local.yaml", "ok": True, "problems": []}


@pytest.mark.parametrize(
    "argv",
    [
        ["registry", "list", "--config", "deploy/config.local.yaml"],
        ["--config", "deploy/config.local.yaml", "registry", "list"],
    ],
)
def test_registry_list_of_an_empty_registry(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(ROOT)
    empty = tmp_path / "models"
    empty.mkdir()
    monkeypatch.setenv("MODEL_REGISTRY_PATH", str(empty))
    assert main(argv) == 0
    assert capsys.readouterr().out == f"registry {empty} is empty\n"
    assert main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize(
    ("argv", "forms"),
    [
        (("a", "[b", "[c]]"), [["a"], ["a", "b"], ["a", "b", "c"]]),
        (("x|y", "[--j]"), [["x"], ["x", "--j"], ["y"], ["y", "--j"]]),
        (("list", "[models|configs]"), [["list"], ["list", "models"], ["list", "configs"]]),
    ],
)
def test_the_notation_expands_as_documented(argv: tuple[str, ...], forms: list[list[str]]) -> None:
    assert expand(argv) == forms


def test_lines_are_found_in_chains_and_continuations() -> None:
    block = ["bash .ci/setup && .venv/bin/cnnlstm --config c.yaml serve --demo", "x \\", "  y"]
    lines = _logical_lines(1, block)
    assert lines[1] == (2, "x    y")
    assert _cnnlstm_segments(lines[0][1]) == [["--config", "c.yaml", "serve", "--demo"]]
    assert _cnnlstm_segments("A=1 cnnlstm token --ttl 9 > out  # note") == [["token", "--ttl", "9"]]
    assert _cnnlstm_segments("curl -d @x https://h/predict") == []
