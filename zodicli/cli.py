"""The ``zodi`` command group.

Subcommands live one per module in ``zodicli/commands`` and are imported only when named, so
``zodi --help`` and ``zodi CMD --help`` never import torch. Errors raised by the core
(:class:`~zodicli.errors.ZodiError`) become one stderr line and an exit code.
"""
from __future__ import annotations

import importlib
import sys
import traceback

import click

from . import __version__
from .errors import ZodiError, debug_enabled, one_line, os_error_message, quiet_libraries, worker_message

# name -> (module, one-line help). Help text lives here so `zodi --help` imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "evaluate": ("zodicli.commands.evaluate", "Score predictions against ground truth (mIoU, accuracies, confusion matrix)."),
    "invert": ("zodicli.commands.invert", "Invert source images into diffusion latents (ZoDi, edit-friendly DDPM, DDIM)."),
    "translate": ("zodicli.commands.translate", "Translate source images to a target domain, keeping their layout (ZoDi, SGG)."),
    "finetune": ("zodicli.commands.finetune", "Adapt the diffusion model to K target images with a LoRA adapter (personalisation)."),
    "extract-features": ("zodicli.commands.extract_features", "Cache diffusion-UNet features per item (DIFF), grouped by stride."),
    "pseudolabel": ("zodicli.commands.pseudolabel", "Pseudo-label a target set from a checkpoint (class thresholds, DACS weights)."),
    "train-seg": ("zodicli.commands.train_seg", "Train a segmenter: source-only, ZoDi adaptation, self-training, adversarial."),
    "baseline": ("zodicli.commands.baseline", "Fit and apply a pixel-colour baseline segmenter (the demo's floor)."),
    "merge": ("zodicli.commands.merge", "Merge the shards of a sharded run into one artifact."),
    "pack": ("zodicli.commands.pack", "Copy the rows an artifact reads from segments or shards into it, to move it alone."),
    "info": ("zodicli.commands.info", "Show an artifact's schema, settings, provenance and completeness."),
    "datasets": ("zodicli.commands.datasets", "List datasets, check a root's layout, make the toy city."),
    "models": ("zodicli.commands.models", "List model presets; make the tiny random stack for tests and demos."),
    "env": ("zodicli.commands.env", "Print versions and devices (for bug reports)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(COMMANDS[name][0])
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except ZodiError as e:
            if debug_enabled():
                traceback.print_exc()
            click.echo(f"zodi: error: {one_line(worker_message(str(e)))}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:           # `zodi ... | head`: the reader left; not an error
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt as e:    # Ctrl-C, or SIGTERM (stopping.Terminated)
            what = "terminated" if getattr(e, "exit_code", 130) == 143 else "interrupted"
            click.echo(f"zodi: {what}; finished items are kept, re-run the same command to resume", err=True)
            ctx.exit(getattr(e, "exit_code", 130))
        except OSError as e:
            if debug_enabled():
                raise
            message = os_error_message(e)
            if message is None:
                self._internal(ctx, e)
            click.echo(f"zodi: error: {message}", err=True)
            ctx.exit(1)
        except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
            if debug_enabled():
                raise
            self._internal(ctx, e)

    @staticmethod
    def _internal(ctx, e: BaseException):
        click.echo(
            f"zodi: internal error: {type(e).__name__}: {one_line(worker_message(str(e)))} "
            "(re-run with ZODI_DEBUG=1 for a traceback and report it)",
            err=True,
        )
        ctx.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="zodi")
def cli():
    """zodi: adapt segmentation models to fog, night, rain, snow, games and other sensors with
    diffusion models. Each command reads datasets or artifacts and writes one HDF5 artifact;
    re-running a command resumes it."""


def main(argv=None):
    from .stopping import raise_on_sigterm

    quiet_libraries()
    raise_on_sigterm()
    cli.main(args=argv, prog_name="zodi")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
