"""zodi info: what an artifact holds and how it was made."""
from __future__ import annotations

import click

from ._options import emit_json, json_option


@click.command("info")
@click.argument("artifact", type=click.Path(dir_okay=False))
@json_option
def command(artifact, json_output):
    """Show an artifact's fields, settings, inputs, versions and completeness."""
    from pathlib import Path

    from ..store import Artifact

    art = Artifact(artifact, allow_partial=True)
    parts = Path(artifact + ".parts")
    pending = len(list(parts.glob("*.h5"))) if parts.is_dir() else 0
    info = {**art.meta, "path": artifact, "items": len(art), "fields": art.describe(), "pending_part_files": pending}
    if json_output:
        emit_json(info)
        return
    state = "complete" if art.complete else f"INCOMPLETE ({len(art)}/{art.meta['n_expected']} items"
    state += "" if art.complete else (f"; {pending} part file(s) awaiting the next run)" if pending else ")")
    click.echo(f"{artifact}: zodi {art.meta['command']}, {state}")
    click.echo(f"  items {len(art)}  shard {art.meta['shard'] or '-'}  created {art.meta['created']}  "
               f"settings hash {art.meta['settings_hash']}  fingerprint {art.meta['fingerprint']}")
    if art.meta["reads"]:
        click.echo(f"  reads its rows from {len(art.meta['reads'])} file(s) beside it, e.g. {art.meta['reads'][0]} "
                   "('zodi pack' makes it self-contained)")
    click.echo("  fields:")
    for f in info["fields"]:
        extra = "  ".join(f"{k}={v}" for k, v in f.items() if k not in ("field", "shape", "dtype", "bytes"))
        click.echo(f"    {f['field']:<24} {f['shape']:<22} {f['dtype']:<8} {f['bytes'] / 1e6:9.2f} MB  {extra}".rstrip())
    click.echo("  settings:")
    for k, v in sorted(art.meta["settings"].items()):
        click.echo(f"    {k}: {v}")
    click.echo("  inputs:   " + ", ".join(f"{k}={v}" for k, v in art.meta["inputs"].items()))
    click.echo("  versions: " + ", ".join(f"{k} {v}" for k, v in art.meta["versions"].items()))
