"""A server the benchmark starts as a child process (the no-Ray peer, the bare hello)."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass


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
