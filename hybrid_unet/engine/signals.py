"""SIGTERM / SIGINT: ask the loop to stop at the next step boundary (it saves, then exits)."""

from __future__ import annotations

import signal
import sys


class StopRequest:
    """Installs handlers that set ``requested``; a second Ctrl-C exits at once."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested == "SIGINT" and signum == signal.SIGINT:
            print("\nSecond Ctrl-C: exiting now without saving.", file=sys.stderr)
            raise SystemExit(130)
        self.requested = name
        print(f"\n{name} received: finishing this step, saving, then exiting.", file=sys.stderr)
