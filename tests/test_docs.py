"""The README and the docs site: the site builds with --strict, the CLI reference is current, and
every shell command they show is one that works (run by a test, or checked here against the CLI, the
scripts and the files it names)."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from memguard.cli import app

ROOT = Path(__file__).parent.parent
# the generated CLI reference shows usage templates, not commands; test_the_cli_reference_is_current checks it
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md") if p.name != "cli.md")]
FENCE = re.compile(r"```(?:bash|console|sh)\n(.*?)```", re.S)


def commands(page: Path) -> list[tuple[str, Path]]:
    """(command, the folder it runs in) for each shell command of a page's bash blocks: continuation
    lines joined, comments and output dropped, `cd` followed."""
    found = []
    for block in FENCE.findall(page.read_text()):
        folder = ROOT
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ").strip()
            if not line or line.startswith("#"):
                continue
            line = line.split("  #")[0].split(" # ")[0].strip()
            if line.startswith("cd "):
                folder = (folder / line.split()[1]).resolve()
            found.append((line, folder))
    return found


def _memguard(args: list[str]) -> None:
    """Parse a memguard command line with the real CLI, running nothing (options, types, choices)."""
    command = typer.main.get_command(app)
    context = command.make_context("memguard", list(args))
    while hasattr(command, "commands"):  # a group (typer vendors its own click: no isinstance)
        remaining = [*getattr(context, "_protected_args", []), *context.args]
        if not remaining:
            return
        name, *rest = remaining
        assert name in command.commands, f"memguard has no command {name!r}"
        command = command.commands[name]
        context = command.make_context(name, rest, parent=context)


def _exists(path: str, folder: Path = ROOT) -> None:
    assert (folder / path).exists(), f"{path} does not exist"


def _python(args: list[str], folder: Path = ROOT) -> None:
    if args[:1] == ["-m"]:
        module = args[1]
        assert module.startswith(("memguard", "pytest", "pip")), f"unknown module {module}"
        if module == "memguard.cli":
            _memguard(args[2:])
        return
    script = folder / args[0]
    assert script.is_file(), f"{args[0]} does not exist"
    source = script.read_text()
    for option in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
        assert f'"{option}"' in source or option.lstrip("-").replace("-", "_") in source, f"{args[0]} takes no {option}"


def check(line: str, folder: Path = ROOT) -> None:
    """One command: each part of an `&&` chain, after environment assignments, by its program."""
    for part in line.split("&&"):
        words = shlex.split(part)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0], re.S):
            words = words[1:]
        if not words:
            continue
        program, args = words[0], words[1:]
        name = Path(program).name
        if name == "memguard":
            _memguard(args)
        elif name in ("python", "python3"):
            _python(args, folder)
        elif name in ("bash", "sh"):
            _exists(args[0], folder)
        elif "/" in program and not program.startswith("/"):  # a script of the repository
            _exists(program, folder)
        elif name in (
            "export",
            "rm",
            "mkdir",
            "gunicorn",
            "uvicorn",
            "pip",
            "mkdocs",
            "docker",
            "curl",
            "cd",
            "cp",
            "ls",
            "serve",
            "accelerate",
        ):
            for arg in args:  # the files and folders of the repository they name exist
                if "/" in arg and not arg.startswith(("-", "http", "/", "<")) and not any(c in arg for c in "*{<"):
                    candidate = arg.split(":")[0].split("=")[-1]
                    if candidate.startswith(("examples/", "docs/", "benchmarks/", "scripts/", "memguard/")):
                        _exists(candidate)
        else:
            raise AssertionError(f"no check knows the program {program!r}: {line}")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_a_page_shows_is_valid(page, monkeypatch):
    # commands written for a GPU machine parse as they would there
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    for line, folder in commands(page):
        try:
            check(line, folder)
        except Exception as error:
            message = error.format_message() if hasattr(error, "format_message") else str(error)
            raise AssertionError(f"{page.name}: `{line}`: {message}") from None


def test_the_check_catches_a_wrong_command():
    with pytest.raises(Exception, match="No such option: --modle"):
        check("memguard calibrate --modle testbed")
    with pytest.raises(Exception, match="float8"):
        check("memguard generate x --out o --dtype float8")
    with pytest.raises(Exception, match="no command 'calibrat'"):
        check("memguard calibrat --model testbed")
    with pytest.raises(AssertionError, match="does not exist"):
        check("python benchmarks/no_such_script.py")
    with pytest.raises(AssertionError, match="no check knows"):
        check("frobnicate --all")


def test_the_readme_has_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/setup.sh && .venv/bin/memguard demo" in readme
    tests = "bash scripts/setup.sh && .venv/bin/python -m pytest -q -n 2 --dist loadfile"
    assert tests in readme
    assert tests in (ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
    assert len(readme.splitlines()) <= 250


def test_the_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    subprocess.run(
        [sys.executable, "-m", "typer", "memguard.cli", "utils", "docs", "--name", "memguard", "--title",
         "Command line", "--output", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert out.read_text() == (ROOT / "docs" / "reference" / "cli.md").read_text(), (
        "regenerate it: typer memguard.cli utils docs --name memguard --title 'Command line' "
        "--output docs/reference/cli.md"
    )


def test_the_site_builds_strict(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
