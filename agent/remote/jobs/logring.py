"""Recent log lines kept in memory for the upload-diagnostics action: a bounded ring (no SD-card
writes, no growth), formatted and redacted like the journal lines (agent.logs formatters)."""

from __future__ import annotations

import collections
import logging
import threading

from agent.logs import LogfmtFormatter


class LogRing(logging.Handler):
    """One per process and size (``shared``): the root logger is process-wide, so agents hosted
    in one process (the fleet simulator) would all keep the same lines, and N rings formatted
    every record N times (1,000 gateways refused during a broker restart: a million formats)."""

    # agent.logs.setup keeps handlers marked persistent when it rebuilds the root handlers.
    persistent = True
    _shared: dict[tuple[int, int], LogRing] = {}
    _shared_guard = threading.Lock()

    def __init__(self, max_lines: int = 500, max_line_chars: int = 2000) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(LogfmtFormatter())
        self._lines: collections.deque[str] = collections.deque(maxlen=max_lines)
        self._max_line = max_line_chars
        self._guard = threading.Lock()
        self._users = 0  # install() calls not yet matched by remove()

    @classmethod
    def shared(cls, max_lines: int = 500, max_line_chars: int = 2000) -> LogRing:
        with cls._shared_guard:
            ring = cls._shared.get((max_lines, max_line_chars))
            if ring is None:
                ring = cls._shared[(max_lines, max_line_chars)] = cls(max_lines, max_line_chars)
            return ring

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
        """On the root logger while at least one user has installed it and not removed it."""
        with self._guard:
            self._users += 1
        root = logging.getLogger()
        if self not in root.handlers:
            root.addHandler(self)

    def remove(self) -> None:
        with self._guard:
            self._users = max(0, self._users - 1)
            last = self._users == 0
        if last:
            logging.getLogger().removeHandler(self)
