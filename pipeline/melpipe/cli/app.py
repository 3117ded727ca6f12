"""The ``melpipe`` command group: its commands, what ends each with one line of error,
its log messages and its signals.

The commands live one module per group (:mod:`.preprocessing`, :mod:`.inspecting`); their
options are made from the library's declarations (:mod:`.options`); what they print is
:mod:`.reports`'s.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

import click

from melpipe import __version__, interrupts
from melpipe.cli.errors import as_flags, one_line
from melpipe.cli.inspecting import export_png, info, invert, preview
from melpipe.cli.preprocessing import demo, preprocess, scan
from melpipe.cli.progress import BAR_OUTPUT, log_note
from melpipe.errors import MelpipeError


class _Commands(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return self._invoke(ctx)
        finally:
            _FINISHED.set()
            interrupts.reset()

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # The reader of our output stopped reading (`info STORE | head -1`): click ends
            # quietly, as Unix tools do, where our handler would print "Broken pipe".
            raise
        except KeyboardInterrupt:
            BAR_OUTPUT.end_line()
            raise click.ClickException(
                "Interrupted. An unfinished store is marked so; the same command resumes it."
            ) from None
        except Exception as exc:
            if os.environ.get("MELPIPE_TRACEBACK") and not isinstance(exc, MelpipeError):
                raise
            BAR_OUTPUT.end_line()
            raise click.ClickException(one_line(exc).replace("\n", " ") + log_note()) from None


@click.group(cls=_Commands)
@click.version_option(version=__version__, prog_name="melpipe")
def main() -> None:
    """Audio datasets to normalized log-mel spectrogram images in one Zarr store."""
    # SIGTERM, how `timeout` and batch systems stop a job, ends a run as Ctrl-C does: the
    # cluster closes, the store stays resumable, one line says so.
    _FINISHED.clear()
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, _interrupt)
    interrupts.check()  # a signal while the command line loaded (melpipe.launch)
    # Our own messages only: Dask's loggers keep their own configuration.
    handler = logging.StreamHandler()
    handler.setFormatter(_FlagsFormatter("melpipe: %(message)s"))
    log = logging.getLogger("melpipe")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class _FlagsFormatter(logging.Formatter):
    """The library's messages as the command line speaks: its parameters as flags."""

    def format(self, record: logging.LogRecord) -> str:
        return as_flags(super().format(record))


# Set once the command has done its work: a signal then ends nothing, and an exception
# raised on the way out (in an exit hook of Dask's) would print a traceback.
_FINISHED = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    """Stop the command as Ctrl-C does. During a run, where the signal may find the
    process inside Dask's or Zarr's machinery, the stop is only requested, and the run
    ends at its next safe point (:mod:`melpipe.interrupts`). So, too, where the signal
    came in during a garbage collector callback or a finalizer (Dask's scheduler, in this
    process, watches the collector), where Python would print the KeyboardInterrupt and
    drop it."""
    if _FINISHED.is_set() or not interrupts.request():
        return
    while frame is not None:
        if frame.f_code.co_name in ("_gc_callback", "__del__"):
            return
        frame = frame.f_back
    raise KeyboardInterrupt


for command in (preprocess, scan, demo, info, export_png, preview, invert):
    main.add_command(command)
