"""The README's examples run verbatim against a stack, and it claims only what exists.

The shell examples are the fenced ``sh``/``bash`` blocks. Each runs, in the README's order and in one shell (as an
operator following it would), against a real ``ckey up`` on free ports: the one change is the API's address, which
the README gives as ``http://127.0.0.1:8080``. A block that cannot run in a test (``make``, placeholders, commands
that follow an operation for days) is preceded by ``<!-- readme-example: skip (why) -->`` on the line before its
fence, and says why. curl runs with ``--fail-with-body`` (from a ``.curlrc``), so an example the API refuses fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from ckey.api.app import create_app
from ckey.cli import app as cli_app
from ckey.config import Settings, load_settings
from tests.ckey.test_stack import READY_LINE, READY_TIMEOUT, Up, needs_temporal, ports, up  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = "<!-- readme-example: skip"
SHELLS = {"sh", "bash", "shell"}
README_API = "http://127.0.0.1:8080"
COMMAND_STARTS = ("ckey ", "curl ", "export ")
"""What a runnable example's commands begin with (after any ``NAME=value`` environment prefix)."""


@dataclass(frozen=True)
class Block:
    """A fenced block of the README."""

    line: int
    lang: str
    skipped: bool
    text: str

    def commands(self) -> list[str]:
        """The block's commands, continuation lines joined, comments and blank lines left out."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
        return [line for line in lines if line]


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with whether the line before its fence marks it skipped."""
    lines = text.splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((line.strip() for line in reversed(lines[:i]) if line.strip()), "")
        found.append(Block(i + 1, fence[1], before.startswith(SKIP), "\n".join(lines[i + 1 : end])))
        i = end + 1
    return found


def shell_examples() -> list[Block]:
    return [b for b in readme_blocks(README.read_text()) if b.lang in SHELLS]


def _without_env_prefix(command: str) -> str:
    return re.sub(r"^(?:[A-Z_]+=(?:\$\([^)]*\)|\S+)\s+)+", "", command)


def test_every_shell_example_runs_or_says_why_not() -> None:
    blocks = shell_examples()
    assert [b for b in blocks if not b.skipped], "the README has no runnable example"
    for block in blocks:
        if block.skipped:
            marker = README.read_text().splitlines()[block.line - 2]
            assert re.search(r"skip \(.+\)", marker), f"line {block.line - 1}: say why the example is skipped"
            continue
        for command in block.commands():
            where = f"README.md, block at line {block.line}: {command!r}"
            assert _without_env_prefix(command).startswith(COMMAND_STARTS), f"{where} is not a ckey or curl example"
            assert not re.search(r"<[a-z][a-z -]*>|\.\.\.", command), f"{where} has a placeholder"


def test_every_curl_with_a_body_says_it_is_json() -> None:
    """The API reads a JSON body whatever the header says today; a stricter parser or proxy would not."""
    posts = [c for b in shell_examples() for c in b.commands() if c.startswith("curl ") and re.search(r"\s-d\s", c)]
    assert posts, "the README shows no POST with curl"
    for command in posts:
        assert '-H "Content-Type: application/json"' in command, f"README.md: {command!r} sends no Content-Type"


# Claims: documents, commands, settings, routes ------------------------------------------------------------------


def _inline_code(text: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", prose)


def test_links_and_paths_point_inside_the_repository() -> None:
    text = README.read_text()
    targets = [t for t in re.findall(r"\]\(([^)]+)\)", text) if not re.match(r"https?://|#", t)]
    targets += [
        code for code in _inline_code(text) if re.fullmatch(r"\.{0,2}/?[\w.-]+(/[\w.-]+)*\.(md|yml|yaml|toml)", code)
    ]
    targets += [code for code in _inline_code(text) if re.fullmatch(r"(\.?[\w-]+/)+[\w.-]*", code)]
    assert targets, "the README names no document"
    for target in targets:
        if target.startswith((".venv/", ".ckey/")):
            continue  # made by `make` and `ckey up`
        path = (ROOT / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"README.md points outside the repository: {target}"
        assert path.exists() or path.name.endswith(".db"), f"README.md points to {target}, which does not exist"


def _resolve(words: list[str]) -> list[str]:
    """The command path ``words`` names in the CLI (as far as it goes)."""
    command: Any = typer.main.get_command(cli_app)
    path: list[str] = []
    for word in words:
        if word not in getattr(command, "commands", {}):
            break
        path.append(word)
        command = command.commands[word]
    rest = words[len(path) :]
    if hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        return []  # a group, then a word that is none of its commands
    return path


def test_every_ckey_command_it_names_exists() -> None:
    text = README.read_text()
    named = [code for code in _inline_code(text) if code.startswith("ckey ")]
    named += [_without_env_prefix(c) for b in shell_examples() for c in b.commands()]
    named = [c for c in named if c.startswith("ckey ")]
    assert len(named) > 10
    for command in named:
        words = command.split()[1:]
        assert _resolve(words), f"README.md names `{command}`: no such ckey command"


def _env_names(settings_type: type[Settings]) -> set[str]:
    return {f"CKEY_{name.upper()}" for name in settings_type.model_fields}


def test_every_setting_it_names_exists() -> None:
    named = set(re.findall(r"\bCKEY_[A-Z0-9_]+", README.read_text()))
    unknown = named - _env_names(Settings) - {"CKEY_RECORD_HISTORIES"}
    assert not unknown, f"README.md names settings that do not exist: {sorted(unknown)}"


def test_every_api_route_it_names_exists(tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, _env_file=None))
    routes = {
        (method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
        for path, item in app.openapi()["paths"].items()
        for method in item
    }
    named = re.findall(r"\b(GET|POST|PUT|PATCH|DELETE) (/[\w/{}.-]+)", README.read_text())
    assert len(named) > 10
    for method, path in named:
        assert (method, re.sub(r"\{[^}]*\}", "{}", path)) in routes, f"README.md names {method} {path}: no such route"


# Running them ---------------------------------------------------------------------------------------------------------


@needs_temporal
def test_the_shell_examples_run_verbatim_against_a_stack(up: Up, ports: list[int], tmp_path: Path) -> None:  # noqa: F811
    up.wait_for(READY_LINE, READY_TIMEOUT)
    api = f"http://127.0.0.1:{ports[2]}"
    bin_dir, work, curl_home = tmp_path / "bin", tmp_path / "work", tmp_path / "curl"
    for folder in (bin_dir, work, curl_home):
        folder.mkdir()
    ckey = bin_dir / "ckey"
    ckey.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ckey.cli "$@"\n')
    ckey.chmod(0o755)
    (curl_home / ".curlrc").write_text("fail-with-body\nsilent\nshow-error\n")
    script = "\n".join(b.text for b in shell_examples() if not b.skipped).replace(README_API, api)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKEY_")}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(ROOT),
        CURL_HOME=str(curl_home),
        COLUMNS="200",
        CKEY_DATA_DIR=str(tmp_path / "data"),
        CKEY_API_URL=api,
        CKEY_TEMPORAL_PORT=str(ports[0]),
        CKEY_SANDBOX_KEYVAULT_PORT=str(ports[3]),
        CKEY_SANDBOX_M365_PORT=str(ports[4]),
    )
    ran = subprocess.run(
        ["bash", "-euxo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, f"{ran.stdout[-6000:]}\n----- stderr\n{ran.stderr[-6000:]}"
    assert '"kind":"keyvault.health"' in ran.stdout.replace(" ", "")
    assert (work / "trail.jsonl").exists()
