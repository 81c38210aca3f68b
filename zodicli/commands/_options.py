"""Options shared by several commands, and the ``--config`` plumbing."""
from __future__ import annotations

import json
import sys

import click

from ..settings import load_config


def _load_config(ctx: click.Context, param, value):
    if value:
        allowed = {p.name for p in ctx.command.params if p.name not in ("config", "help")}
        ctx.default_map = {**(ctx.default_map or {}), **load_config(value, allowed, ctx.command.name)}
    return value


def config_option(f):
    return click.option(
        "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=True,
        callback=_load_config, help="YAML file of option values; the command line wins.",
    )(f)


def data_root_option(f):
    return click.option(
        "--data-root", type=click.Path(file_okay=False), default=None,
        help="Folder holding the datasets (default: $ZODI_DATA, then ./data).",
    )(f)


def shard_option(f):
    return click.option(
        "--shard", default=None, metavar="i/N|auto",
        help="Process the i-th of N strided subsets of the keys (auto: from Slurm array or torchrun variables).",
    )(f)


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True, help="Replace an existing output made with other settings.")(f)


def allow_partial_option(f):
    return click.option("--allow-partial", is_flag=True, help="Accept incomplete input artifacts.")(f)


def json_option(f):
    return click.option("--json", "json_output", is_flag=True, help="Print the result as JSON on stdout.")(f)


def resolved_settings(ctx: click.Context) -> dict:
    """All options after merging YAML and command line, as recorded in outputs."""
    return {k: v for k, v in ctx.params.items() if k != "config"}


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
