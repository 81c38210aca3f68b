"""zodi datasets list|check|make-toy."""
from __future__ import annotations

import click

from ._options import data_root_option, emit_json, json_option


@click.group("datasets")
def command():
    """Known datasets, layout checks and the toy city."""


@command.command("list")
@data_root_option
@json_option
def list_(data_root, json_output):
    """Known datasets, their spec syntax, expected layout and whether their root exists here."""
    from ..data.registry import REGISTRY, _load_all, dataset_root

    _load_all()
    rows = []
    for name, t in sorted(REGISTRY.items()):
        root = dataset_root(t, data_root) if t.folder else None
        rows.append({"name": name, "aliases": list(t.aliases), "usage": t.usage, "layout": t.layout,
                     "root": str(root) if root else None, "found": bool(root and root.is_dir())})
    if json_output:
        emit_json(rows)
        return
    for r in rows:
        where = f"{r['root']} ({'found' if r['found'] else 'missing'})" if r["root"] else "-"
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        click.echo(f"{r['usage']}{alias}\n    root:   {where}\n    layout: {r['layout']}")


@command.command("check")
@click.argument("spec")
@data_root_option
@click.option("--full", is_flag=True, help="Read every item (default: the first and the last).")
@json_option
def check(spec, data_root, full, json_output):
    """Open SPEC, count its items and read some, reporting sizes and classes present."""
    import numpy as np

    from ..data.registry import open_dataset

    ds = open_dataset(spec, data_root=data_root)
    keys = ds.keys()
    sample = keys if full else sorted({keys[0], keys[-1]})
    sizes, classes = set(), set()
    for k in sample:
        img = ds.image(k)
        sizes.add(f"{img.shape[1]}x{img.shape[0]}")
        lbl = ds.label(k)
        if lbl is not None:
            if lbl.shape != img.shape[:2]:
                from ..errors import InputError
                raise InputError(f"{spec}: label of {k!r} is {lbl.shape[1]}x{lbl.shape[0]}, image is {img.shape[1]}x{img.shape[0]}",
                                 "labels must match their images")
            classes.update(np.unique(lbl).tolist())
    info = {"spec": spec, "items": len(keys), "first": keys[0], "last": keys[-1], "labels": ds.has_labels,
            "sizes": sorted(sizes), "checked": len(sample),
            "classes_present": [ds.classes.names[c] for c in sorted(classes) if c < 255]}
    if json_output:
        emit_json(info)
    else:
        click.echo(f"{spec}: {info['items']} items ({info['first']} .. {info['last']}), labels: {'yes' if info['labels'] else 'no'}, "
                   f"sizes {', '.join(info['sizes'])} (checked {info['checked']})")
        if info["classes_present"]:
            click.echo("  classes: " + ", ".join(info["classes_present"]))


@command.command("make-toy")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (cityscapes/ and acdc/ layouts).")
@click.option("--n-train", default=200, show_default=True, type=click.IntRange(min=1), help="Train images per condition.")
@click.option("--n-val", default=50, show_default=True, type=click.IntRange(min=1), help="Val images per condition.")
@click.option("--seed", default=0, show_default=True, type=int, help="City seed: another seed draws other scenes.")
@click.option("--width", default=256, show_default=True, type=click.IntRange(min=64), help="Image width in pixels.")
@click.option("--height", default=128, show_default=True, type=click.IntRange(min=32), help="Image height in pixels.")
@click.option("--conditions", default="clear,fog,night,rain,snow", show_default=True,
              help="Comma-separated, of clear, fog, night, rain, snow and thermal (an infrared-like sensor); "
                   "each keeps its own scenes whatever the others are.")
def make_toy(out, n_train, n_val, seed, width, height, conditions):
    """Generate the toy city: clear scenes in the Cityscapes layout, fog/night/rain/snow in ACDC's."""
    from ..data.toy import make_toy as make
    from ..pipeline.loop import progress

    conditions = tuple(c.strip() for c in conditions.split(",") if c.strip())
    with progress((n_train + n_val) * len(conditions), "make-toy") as bar:
        m = make(out, n_train, n_val, seed, width, height, conditions, progress=lambda done, total: bar.update(1))
    click.echo(f"{out}: toy city, {m['n_train']} train + {m['n_val']} val images per condition "
               f"({', '.join(m['conditions'])}), {width}x{height}, seed {seed}")
