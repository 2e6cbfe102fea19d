"""Import TensorFlow without its C++ start-up log (the one place that does it).

TensorFlow's native libraries print a dozen lines to stderr when they load (oneDNN,
CPU features, ``failed call to cuInit ... UNKNOWN ERROR (303)`` on a machine without a
GPU), which read like real errors and ignore ``--log-level``. ``import_tensorflow``
sets ``TF_CPP_MIN_LOG_LEVEL=3`` before TensorFlow is first imported and drops the lines
its libraries write to file descriptor 2 while they load (anything else written there
meanwhile is passed on). It leaves everything alone when the user has set
``TF_CPP_MIN_LOG_LEVEL`` or logging is at DEBUG. Every module that imports TensorFlow
calls it first (``csst_sls_z.network`` does so on import).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

ENV = "TF_CPP_MIN_LOG_LEVEL"
_MARK = "CSST_SLS_Z_TF_LOG_QUIETED"   # ENV was set by us (child processes inherit both), not the user
# absl / TSL log lines ("I0000 00:00:1796104861.091658    3338 port.cc:153] ...") and their companions.
_NATIVE_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+\s+\S+:\d+\]")
_COMPANIONS = ("WARNING: All log messages before absl::InitializeLog() is called",
               "To enable the following instructions:")


def wants_native_log() -> bool:
    """True when TensorFlow's own log must be left as is: the user chose its level, or asked for DEBUG."""
    user_set = ENV in os.environ and os.environ.get(_MARK) != "1"
    return user_set or logging.getLogger().isEnabledFor(logging.DEBUG)


def is_native_log_line(line: str) -> bool:
    return bool(_NATIVE_LINE.match(line)) or line.startswith(_COMPANIONS)


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers, where part of the native log waits until exit otherwise."""
    try:
        import ctypes
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):
        pass


def import_tensorflow():
    """``import tensorflow`` with its native start-up log silenced; returns the module."""
    if "tensorflow" in sys.modules or wants_native_log():
        import tensorflow as tf
        return tf
    os.environ[ENV] = "3"
    os.environ[_MARK] = "1"
    try:
        saved = os.dup(2)
    except OSError:                      # no file descriptor 2 (a daemon): nothing to filter
        import tensorflow as tf
        return tf
    with tempfile.TemporaryFile() as sink:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            try:
                sys.stderr.flush()
            except (AttributeError, ValueError, OSError):
                pass
            _flush_c_stdio()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not is_native_log_line(line)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8", "replace"))
    return tf
