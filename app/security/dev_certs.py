"""Development TLS material, made by ``certs-dev/make-dev-certs.sh`` (openssl).

Used by the CLI's local serve and by tests that need real HTTPS. The script is the single
recipe; this only runs it and names its outputs. Never for production certificates.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "certs-dev" / "make-dev-certs.sh"


class DevCertsError(RuntimeError):
    """The script or openssl is missing, or the script failed."""


@dataclass(frozen=True, slots=True)
class DevCerts:
    ca: Path  # trust this in clients (e.g. httpx verify=ssl context from it)
    cert: Path  # server certificate for localhost, 127.0.0.1 and ::1
    key: Path  # server private key (mode 0600)


def ensure_dev_certs(out_dir: Path, *, force: bool = False, timeout_s: float = 60) -> DevCerts:
    """Create (or keep, when still valid) a dev CA and server certificate in ``out_dir``."""
    if not SCRIPT.is_file():
        raise DevCertsError(f"{SCRIPT} not found: run from a source checkout")
    if shutil.which("openssl") is None:
        raise DevCertsError("openssl is required to make development certificates")
    argv = ["bash", str(SCRIPT), *(["--force"] if force else []), str(out_dir)]
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.CalledProcessError as exc:
        raise DevCertsError(f"make-dev-certs.sh failed: {exc.stderr.strip()[-500:]}") from None
    except subprocess.TimeoutExpired:
        raise DevCertsError("make-dev-certs.sh timed out") from None
    certs = DevCerts(ca=out_dir / "ca.crt", cert=out_dir / "tls.crt", key=out_dir / "tls.key")
    missing = [p for p in (certs.ca, certs.cert, certs.key) if not p.is_file()]
    if missing:
        raise DevCertsError(f"make-dev-certs.sh did not produce {missing}")
    return certs
