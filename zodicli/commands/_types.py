"""Click parameter types shared by commands."""
from __future__ import annotations

import re

import click


class Size(click.ParamType):
    """``HxW`` -> (H, W); ``none`` -> None."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, tuple):
            return value
        if isinstance(value, (list,)) and len(value) == 2:
            return tuple(int(v) for v in value)
        if str(value).lower() == "none":
            return None
        m = re.fullmatch(r"(\d+)[xX](\d+)", str(value).strip())
        if not m:
            self.fail(f"{value!r} is not HxW (e.g. 512x1024) or 'none'", param, ctx)
        return int(m[1]), int(m[2])


SIZE = Size()
