"""zodi pack: make an artifact one self-contained file."""
from __future__ import annotations

import click

from ._options import emit_json, json_option


@click.command("pack")
@click.argument("artifact", type=click.Path(dir_okay=False))
@json_option
def command(artifact, json_output):
    """Copy every row ARTIFACT reads from other files into it: the segments a resumed run adds
    (ARTIFACT.segments/, deleted afterwards) and the shards a merge reads (left for you to delete).
    The file can then be moved or copied alone."""
    from ..store.artifact import pack_artifact

    summary = pack_artifact(artifact)
    if json_output:
        emit_json(summary)
    elif summary["was_reading"]:
        click.echo(f"{summary['out']}: {summary['items']} items, self-contained now "
                   f"(it read {len(summary['was_reading'])} other file(s))")
    else:
        click.echo(f"{summary['out']}: {summary['items']} items, already self-contained")
