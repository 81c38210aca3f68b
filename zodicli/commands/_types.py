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


class Bytes(click.ParamType):
    """A size in bytes: ``500M``, ``100G``, ``2T`` (powers of 1024), or a plain number."""

    name = "SIZE"
    UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", str(value).strip().lower())
        if not m:
            self.fail(f"{value!r} is not a size (e.g. 500G, 2T)", param, ctx)
        return int(float(m[1]) * self.UNITS[m[2]])


BYTES = Bytes()


def float_list(ctx, param, value) -> tuple[float, ...]:
    """Option callback: ``0.75,1,1.25`` -> (0.75, 1.0, 1.25); empty -> ()."""
    if not value:
        return ()
    try:
        return tuple(float(v) for v in str(value).split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
