"""zodi env: versions and devices, to paste into bug reports."""
from __future__ import annotations

import click

from ._options import emit_json, json_option


@click.command("env")
@json_option
def command(json_output):
    """Print library versions, devices and the environment variables zodi reads."""
    import os
    import platform

    from ..store.artifact import library_versions

    info = {"platform": platform.platform(), "versions": library_versions(),
            "env": {k: v for k, v in sorted(os.environ.items())
                    if k.startswith("ZODI_") or k in ("HF_HUB_OFFLINE", "HDF5_USE_FILE_LOCKING", "CUDA_VISIBLE_DEVICES")}}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except ImportError:
        info["cuda"] = "torch not installed"
    if json_output:
        emit_json(info)
        return
    click.echo(f"platform: {info['platform']}")
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    click.echo(f"cuda devices: {info['cuda'] or 'none'}")
    for k, v in info["env"].items():
        click.echo(f"{k}={v}")
