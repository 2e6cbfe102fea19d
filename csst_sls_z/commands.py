"""The plumbing every ``csst-sls-z`` command shares, in one place.

The parser (a bad argument is one line and exit 1), the help formatter, logging set-up,
argparse validators, the SIGTERM guard, the one-sentence error, and the stage's options
generated from ``RedshiftStage.spec`` and ``reference_types``. The commands (``run``,
``batch``, ``simulate``, ``regenerate``, ``inspect`` and the scheduler hook) import from
here; nothing below the command layer does.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path

from .datamodel import EXIT_ERROR

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class CommandError(Exception):
    """A user-facing error: its message is one sentence, printed on one line; the command exits 1."""


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help, unless the help already names its default
    or there is none to name (None, False: a flag or an optional path)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments in one line and exits 1 (our error code), not 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        # A prefix of an option is not the option: `--sample 50` must not set --samples.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


# ---------------------------------------------------------------- logging
class TqdmLogHandler(logging.StreamHandler):
    """A stderr handler that writes through ``tqdm.write`` while a progress bar is live, so a log
    line never lands on the same line as a bar (and the bar is redrawn below it)."""

    def emit(self, record):
        bars = sys.modules.get("tqdm")
        if bars is None or not getattr(bars.tqdm, "_instances", None):
            return super().emit(record)
        try:
            bars.tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:      # logging must never raise
            self.handleError(record)


def setup_logging(level: str = "INFO"):
    handler = TqdmLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler], force=True)
    # TensorFlow's absl logger reports every sharding callback at INFO: its lines only at DEBUG.
    logging.getLogger("absl").setLevel(logging.DEBUG if level == "DEBUG" else max(logging.WARNING, getattr(logging, level)))


def add_log_level(p, help=None, default="WARNING"):
    """``--log-level``; the commands that finish in seconds default to WARNING: a successful run
    prints only its result (its status line and outputs on stdout), INFO adds what it did."""
    p.add_argument("--log-level", choices=LOG_LEVELS, default=default,
                   help=help or f"default: {default}; INFO lists the reference files and each step")


def show_progress(no_progress: bool) -> bool:
    """Progress bars only on a terminal: in a log file they are thousands of redrawn lines."""
    return not no_progress and sys.stderr.isatty()


# ---------------------------------------------------------------- validators
def int_argument(text, minimum=None, maximum=None, what=None):
    """argparse type body: an integer within [minimum, maximum], with a message naming what is expected."""
    if what is None:
        what = ("a positive integer" if minimum == 1 and maximum is None else
                "a non-negative integer" if minimum == 0 and maximum is None else
                "an integer" + (f" >= {minimum}" if minimum is not None else "")
                + (f" <= {maximum}" if maximum is not None else ""))
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text):
    """argparse type: an integer >= 1, with a message that names what is expected."""
    return int_argument(text, 1)


def nonneg_int(text):
    """argparse type: an integer >= 0, with a message that names what is expected."""
    return int_argument(text, 0)


# ---------------------------------------------------------------- SIGTERM
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (what schedulers send first) unwinds like Ctrl-C inside the block (a
    KeyboardInterrupt), so temporary files are removed and clusters closed; the previous
    handler is restored after. Outside the main thread signals are left alone."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:        # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


# ---------------------------------------------------------------- the stage's options
def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_stage_options(p, stage_cls=None, help=None, exclude=()):
    """The stage's parameters as options, generated from ``stage_cls.spec`` (its types, bounds,
    defaults and help), and one ``--override-<reftype> PATH`` per ``stage_cls.reference_types``.

    ``help``: {parameter: text} where a command words a parameter its own way; ``exclude``:
    parameters this command does not offer.
    """
    if stage_cls is None:
        from .stage import RedshiftStage as stage_cls
    help = help or {}
    for param in stage_cls.spec.values():
        if not param.option or param.name in exclude:
            continue
        text = help.get(param.name, param.help)
        if param.type is bool:
            p.add_argument(_option(param.name), action="store_true", default=bool(param.default), help=text)
        elif param.type is int:
            lo, hi = param.minimum, param.maximum
            p.add_argument(_option(param.name), type=lambda s, lo=lo, hi=hi: int_argument(s, lo, hi),
                           default=param.default, help=text)
        else:
            p.add_argument(_option(param.name), type=param.type, default=param.default, help=text,
                           choices=param.choices)
    if "reference_overrides" in stage_cls.spec and "reference_overrides" not in exclude:
        g = p.add_argument_group("reference-file overrides (each validated on its own: type, schema, checksums)")
        for reftype in stage_cls.reference_types + stage_cls.optional_reference_types:
            g.add_argument(f"--override-{reftype}", dest=f"override_{reftype}", type=Path, default=None,
                           metavar="PATH", help=f"use this {reftype} reference file instead of the set's")
    return p


def stage_params(args, stage_cls=None, exclude=()) -> dict:
    """The stage parameters a parser built by :func:`add_stage_options` collected."""
    if stage_cls is None:
        from .stage import RedshiftStage as stage_cls
    params = {name: getattr(args, name) for name, param in stage_cls.spec.items()
              if param.option and name not in exclude}
    if "reference_overrides" in stage_cls.spec and "reference_overrides" not in exclude:
        overrides = {t: getattr(args, f"override_{t}") for t in stage_cls.reference_types
                     + stage_cls.optional_reference_types if getattr(args, f"override_{t}", None) is not None}
        params["reference_overrides"] = overrides or None
    return params
