"""Development certificates: a CA and a localhost server certificate, made idempotently."""

from __future__ import annotations

import ipaddress
import os
import ssl
import stat
from pathlib import Path

from cryptography import x509

from app.security.dev_certs import ensure_dev_certs


def test_dev_certs_cover_localhost_and_loopback_with_private_keys(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path / "tls")
    cert = x509.load_pem_x509_certificate(certs.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    for key in (certs.key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # The server certificate chains to the CA under Python's own verification rules.
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.load_cert_chain(certs.cert, certs.key)


def test_dev_certs_keep_the_ca_when_run_again(tmp_path: Path) -> None:
    first = ensure_dev_certs(tmp_path)
    ca_before, cert_before = first.ca.read_bytes(), first.cert.read_bytes()
    second = ensure_dev_certs(tmp_path)
    assert second.ca.read_bytes() == ca_before
    assert second.cert.read_bytes() == cert_before


def test_dev_certs_make_a_new_ca_when_forced(tmp_path: Path) -> None:
    ca_before = ensure_dev_certs(tmp_path).ca.read_bytes()
    assert ensure_dev_certs(tmp_path, force=True).ca.read_bytes() != ca_before


def test_dev_certs_reissue_the_server_cert_when_missing(tmp_path: Path) -> None:
    certs = ensure_dev_certs(tmp_path)
    ca_before = certs.ca.read_bytes()
    certs.cert.unlink()
    again = ensure_dev_certs(tmp_path)
    assert again.cert.is_file()
    assert again.ca.read_bytes() == ca_before
