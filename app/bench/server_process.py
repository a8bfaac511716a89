"""A server the benchmark starts as a child process (the no-Ray peer, the bare hello)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass

# How long the servers the bench starts keep an idle keep-alive connection: the same as the
# Serve gateway's direct ingress (Ray's DEFAULT_UVICORN_KEEP_ALIVE_TIMEOUT_S), so every
# target treats the generator's connections alike (uvicorn's own default is 5 s).
KEEP_ALIVE_S = 90


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    stop_timeout_s: float = 10.0  # SIGTERM first; SIGKILL after this

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
