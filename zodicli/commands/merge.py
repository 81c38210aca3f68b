"""zodi merge: join the shards of a sharded run."""
from __future__ import annotations

import click

from ._options import emit_json, json_option, overwrite_option


@click.command("merge")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--pack", is_flag=True,
              help="Copy every row into OUT (self-contained; as large as the shards). Default: OUT holds only "
                   "metadata and reads its rows from the shards, which must stay beside it.")
@overwrite_option
@json_option
def command(out, pack, overwrite, json_output):
    """Check that OUT.shard-<i>-of-<N>.h5 exist for every i, are complete and share settings, then
    write OUT (equal in content to an unsharded run)."""
    from ..store.shards import merge_shards

    summary = merge_shards(out, overwrite=overwrite, pack=pack)
    how = "copied into it" if summary["packed"] else "read from the shards, which must stay beside it (or merge --pack)"
    emit_json(summary) if json_output else click.echo(f"{summary['out']}: {summary['items']} items from {summary['shards']} shards, {how}")
