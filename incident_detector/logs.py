"""structlog set-up: JSON lines on stdout when not on a terminal, a readable console otherwise.

Everything the process says goes through the same renderer, so stdout stays one JSON object per
line (the incidents, our own events, and what libraries say): records of the standard library's
``logging`` (urllib3, uvicorn, kubernetes) and Python warnings included. A warning is logged once
per kind: urllib3's ``InsecureRequestWarning``, for one, is raised on *every* request when a
kubeconfig sets ``insecure-skip-tls-verify``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

# What varies between two warnings of one kind: quoted values (a host, a name) and numbers.
_VARIABLE_PARTS = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def configure_logging(*, level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (urllib3, uvicorn) go to the same stream,
    # at warning and above, rendered like our own events, so that `kubectl logs` shows one
    # consistent stream.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.add_log_level,
            structlog.stdlib.add_logger_name,
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    logging.basicConfig(handlers=[handler], level=logging.WARNING, force=True)
    # httpx logs every request URL at INFO; a Slack webhook URL is a secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    warnings.showwarning = WarningsToLog()


class WarningsToLog:
    """A ``warnings.showwarning`` that logs the first warning of each kind as a structured event.

    Python's own filters still decide whether a warning is shown at all; this only replaces the
    raw text on stderr, and the repeats that filters such as urllib3's ``"always"`` let through.
    """

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()  # the kubernetes client warns from worker threads

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        text = str(message)
        name = f"{category.__module__}.{category.__qualname__}"
        kind = (name, filename, _VARIABLE_PARTS.sub("…", text))
        with self._lock:
            if kind in self._seen:
                return
            self._seen.add(kind)
        log: Any = structlog.get_logger("incident_detector")
        log.warning("python.warning", category=name, message=text, origin=f"{filename}:{lineno}",
                    repeats="not logged")
