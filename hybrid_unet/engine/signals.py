"""SIGTERM / SIGINT / SIGUSR2: ask the loop to stop at the next step boundary (it saves, then
exits).

SIGUSR2 is what SLURM sends ``signal_delay_s`` before a time limit when the submitit launcher
asks for it; submitit's own handler requeues the job and exits at once, mid-step. The loop
takes the signal first, saves, and then hands it to that handler (the requeue)."""

from __future__ import annotations

import signal
import sys

# SIGUSR2: SLURM's pre-timeout signal under submitit (absent on Windows)
_SIGNALS = tuple(s for s in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, s))


class StopRequest:
    """Installs handlers that set ``requested``; a second Ctrl-C exits at once. On leaving, a
    SIGUSR2 received goes on to the handler installed before (submitit's requeue), if any."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        for name in _SIGNALS:
            sig = getattr(signal, name)
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.uninstall()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        previous = self._previous.get(getattr(signal, "SIGUSR2", None))
        self._previous.clear()
        if self.requested == "SIGUSR2" and callable(previous):  # now that the run saved
            previous(signal.SIGUSR2, None)

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
