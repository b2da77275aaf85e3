"""Recent log lines kept in memory for the upload-diagnostics action: a bounded ring (no SD-card
writes, no growth), formatted and redacted like the journal lines (agent.logs formatters)."""

from __future__ import annotations

import collections
import logging
import threading

from agent.logs import LogfmtFormatter


class LogRing(logging.Handler):
    # agent.logs.setup keeps handlers marked persistent when it rebuilds the root handlers.
    persistent = True

    def __init__(self, max_lines: int = 500, max_line_chars: int = 2000) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(LogfmtFormatter())
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._max_line = max_line_chars
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except (TypeError, ValueError):
            self.handleError(record)
            return
        with self._guard:
            self._lines.append(line[: self._max_line])

    def lines(self) -> list[str]:
        with self._guard:
            return list(self._lines)

    def install(self) -> None:
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)
