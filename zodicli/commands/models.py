"""zodi models list|make-tiny."""
from __future__ import annotations

import click

from ._options import emit_json, json_option


@click.group("models")
def command():
    """Model presets, and the tiny random stack for tests and demos."""


@command.command("list")
@json_option
def list_(json_output):
    """Presets from recipes/models.yaml, resolved under $ZODI_MODELS, and whether they are present."""
    from ..diffusion.models import presets, resolve

    rows = [{"name": n, "path": str(resolve(n)[0]), "found": resolve(n)[0].exists()} for n in presets()]
    if json_output:
        emit_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<16} {r['path']}  ({'found' if r['found'] else 'missing'})")


@command.command("make-tiny")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for sd/ and controlnet/.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--prediction-type", default="epsilon", show_default=True, type=click.Choice(["epsilon", "v_prediction"]))
def make_tiny(out, seed, prediction_type):
    """A tiny random SD + ControlNet-seg stack (diffusers folders), for tests, demos and CPU benchmarks."""
    from ..diffusion.tiny import make_tiny as make

    paths = make(out, seed, prediction_type)
    click.echo(f"--model {paths['model']} --controlnet {paths['controlnet']}")
