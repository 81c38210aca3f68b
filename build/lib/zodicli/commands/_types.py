"""Click parameter types shared by commands."""
from __future__ import annotations

import re

import click


class Size(click.ParamType):
    """``HxW`` -> (H, W); ``none`` -> None."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if value is None:
            return value
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
            h, w = value
        elif str(value).lower() == "none":
            return None
        else:
            m = re.fullmatch(r"(\d+)[xX](\d+)", str(value).strip())
            if not m:
                self.fail(f"{value!r} is not HxW (e.g. 512x1024) or 'none'", param, ctx)
            h, w = int(m[1]), int(m[2])
        if h < 1 or w < 1:
            self.fail(f"{value!r}: both sides must be at least 1 pixel (e.g. 512x1024)", param, ctx)
        return h, w


SIZE = Size()
