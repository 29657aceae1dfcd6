"""User errors: what the ``fastsae`` command line reports as one line and exit status 2.

The package follows one rule for bad input: its own validation raises ``ValueError`` for a
wrong value and ``TypeError`` for a wrong type (``FileNotFoundError`` for a missing file),
with a message written for the user, *before* any work starts. So the CLI can tell a user
error from a bug by where the exception was raised (:func:`is_user_error`):

* :class:`UsageError` (a ``ValueError``: bad arguments or input files) and the package's own
  failure types that describe the outside world (an embedding endpoint that fails for good,
  a step stopped by a budget) are always user errors;
* ``ValueError`` / ``TypeError`` / ``ImportError`` are user errors when a ``raise`` in fastsae
  itself produced them (the innermost frame of the traceback lies in the package). The same
  types raised *inside* numpy, torch or scipy mean that fastsae let bad input through, or has
  a bug: they keep their traceback, so they get reported and fixed instead of hidden;
* ``OSError`` that names a file (missing, a directory where a file is expected, permission
  denied, disk full) is a user error: the file system is the user's.

Everything else (``RuntimeError``, ``KeyError``, ``AssertionError``, ...) propagates with its
traceback. ``FASTSAE_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

__all__ = ["UsageError", "check_device", "is_user_error", "user_message"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class UsageError(ValueError):
    """A bad command-line argument or input file; the CLI prints it as one line and exits 2.

    A ``ValueError``, so library callers that catch ``ValueError`` for bad values catch it too."""


def _innermost_frame_in_package(tb: TracebackType | None) -> bool:
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    path = os.path.abspath(last.tb_frame.f_code.co_filename)
    return path.startswith(_PACKAGE_DIR + os.sep)


def _always_user_errors() -> tuple[type, ...]:
    kinds: list[type] = [UsageError]
    # Imported lazily: these modules pull in heavy dependencies the error path does not need
    # unless the command already loaded them.
    import sys

    for mod, names in (("fastsae.embed", ("EmbeddingError",)), ("fastsae.run.pipeline", ("StepFailed",)),
                       ("fastsae.autointerp.client", ("EndpointError",)),
                       ("fastsae.autointerp.results", ("AutointerpAborted",))):
        m = sys.modules.get(mod)
        if m is not None:
            kinds.extend(getattr(m, n) for n in names if hasattr(m, n))
    return tuple(kinds)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` reports a user error (see the module docstring) rather than a bug."""
    if isinstance(exc, _always_user_errors()):
        return True
    if isinstance(exc, OSError) and not isinstance(exc, (ConnectionError, TimeoutError)):
        # FileNotFoundError raised by fastsae's own checks carries a message, not a filename
        return exc.filename is not None or _innermost_frame_in_package(exc.__traceback__)
    if isinstance(exc, (ValueError, TypeError, ImportError)):
        return _innermost_frame_in_package(exc.__traceback__)
    return False


def user_message(exc: BaseException) -> str:
    """``exc`` as one line for the user (an ``OSError`` as ``path: reason``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        text = f"{where}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def check_device(device: str | None, *, option: str = "--device") -> str | None:
    """``device`` checked against this machine before any work starts: ``cpu``, ``cuda``,
    ``cuda:N`` (with such a GPU present) or ``mps`` (where available); ``None`` stays ``None``
    (each command's default: a GPU when there is one). Raises :class:`UsageError` naming the
    problem: a device name torch does not know, CUDA or MPS absent, or a GPU index past the
    last GPU."""
    if device is None:
        return None
    if not isinstance(device, str) or not device.strip():
        raise UsageError(f"{option}: give cpu, cuda, cuda:N or mps, got {device!r}")
    import torch

    text = device.strip()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{option} {text!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cpu":
        return text
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise UsageError(f"{option} {text}: CUDA is not available: {why}; use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"{option} {text}: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
        return text
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError(f"{option} {text}: Apple's MPS backend is not available on this machine; use --device cpu")
        return text
    raise UsageError(f"{option} {text}: fastsae runs on cpu, cuda, cuda:N or mps")
