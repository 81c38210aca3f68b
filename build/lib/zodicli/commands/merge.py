"""zodi merge: join the shards of a sharded run."""
from __future__ import annotations

import click

from ._options import emit_json, json_option, overwrite_option


@click.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@overwrite_option
@json_option
def command(out, overwrite, json_output):
    """Check that OUT.shard-<i>-of-<N>.h5 exist for every i, are complete and share settings, then
    write OUT (equal in content to an unsharded run)."""
    from ..store.shards import merge_shards

    summary = merge_shards(out, overwrite=overwrite)
    emit_json(summary) if json_output else click.echo(f"{summary['out']}: {summary['items']} items from {summary['shards']} shards")
