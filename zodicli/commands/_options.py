"""Options shared by several commands, and the ``--config`` plumbing."""
from __future__ import annotations

import json
import sys

import click

from ..settings import load_config


def _load_config(ctx: click.Context, param, value):
    if value:
        from ..cli import COMMANDS

        params = {p.name: p for p in ctx.command.params if p.name not in ("config", "help")}
        values = load_config(value, set(params), ctx.command.name, set(COMMANDS))
        for name, v in values.items():
            _check_yaml_value(value, params[name], v)
        ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


def _check_yaml_value(path, param: click.Parameter, v) -> None:
    """YAML values that click would quietly bend: a float for an integer option, a string for a list."""
    from ..errors import InputError

    key = param.name.replace("_", "-")
    if getattr(param, "multiple", False) and not isinstance(v, list):
        raise InputError(f"config file {path}: '{key}' must be a list", f"e.g. {key}: [{v!r}]")
    if isinstance(param.type, (click.types.IntParamType, click.IntRange)) and not getattr(param, "multiple", False):
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()) or not isinstance(v, (int, float, str)):
            raise InputError(f"config file {path}: '{key}' must be an integer, not {v!r}", f"e.g. {key}: {int(v) if isinstance(v, float) else 1}")


def sectioned(sections: dict[str, tuple[str, ...]]) -> type[click.Command]:
    """A command class whose ``--help`` lists options under these headings, in this order (by
    parameter name); options not named are listed last, under "Other"."""

    class Sectioned(click.Command):
        SECTIONS = sections

        def format_options(self, ctx, formatter):
            records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
            for title, names in [*sections.items(), ("Other", tuple(n for n in records if not any(
                    n in names_ for names_ in sections.values())))]:
                rows = [records[n] for n in names if records.get(n)]
                if rows:
                    with formatter.section(title):
                        formatter.write_dl(rows)

    return Sectioned


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
