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


def exit_on_sigterm():
    """Outside the training loop (start-up, preprocessing, the closing lines) SIGTERM ends the
    process at once with a line saying so, instead of silently: there is no step to finish,
    and every file is written atomically. :class:`StopRequest` takes over inside the loop. Returns the handler it
    replaced."""

    def _exit(signum: int, frame) -> None:
        print("\nSIGTERM received outside training: exiting; nothing is lost (every file is "
              "written atomically).", file=sys.stderr)  # fmt: skip
        raise SystemExit(143)

    return signal.signal(signal.SIGTERM, _exit)  # the previous handler, to put back
