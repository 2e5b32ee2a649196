"""The `memguard` command line (typer)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Guard diffusers text-to-image pipelines against unintended memorization.", no_args_is_help=True)


@app.callback()
def _main() -> None:
    """memguard command line."""


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), help="folder for the grid picture and the JSON report"),
    steps: int = typer.Option(50, min=1, help="denoising steps"),
) -> None:
    """Guard the shipped testbed model on a memorized, an intended, a mixed and a novel prompt."""
    from .demo import run_demo

    result = run_demo(out, steps=steps)
    typer.echo(f"model: {result.model}")
    typer.echo(f"grid: {result.grid_path}")
    typer.echo(f"report: {result.report_path}")
    typer.echo(f"took {result.seconds:.1f} s")


if __name__ == "__main__":
    app()
