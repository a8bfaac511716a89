#!/usr/bin/env bash
# Development TLS material: a local CA and a server certificate for localhost.
#
#   certs-dev/make-dev-certs.sh [--force] [OUT_DIR]     (default OUT_DIR: certs-dev/out)
#
# Writes OUT_DIR/{ca.crt,ca.key,tls.crt,tls.key}; keys are mode 0600. ECDSA P-256 keys.
# Idempotent: an existing CA is kept (so clients that trust it keep working) unless
# --force; the server certificate is re-issued only when it is missing, not signed by
# the current CA, or expires within 7 days. Never use this material outside development.
set -euo pipefail

force=0
out=""
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) out="$arg" ;;
  esac
done
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${out:-$here/out}"
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 1; }

umask 077
mkdir -p "$out"
ca_key="$out/ca.key"; ca_crt="$out/ca.crt"; key="$out/tls.key"; crt="$out/tls.crt"
tmp="$(mktemp -d "$out/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

new_key() {  # $1: destination
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

if [[ $force -eq 1 || ! -s "$ca_key" || ! -s "$ca_crt" ]]; then
  new_key "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days 3650 \
    -subj "/CN=cnnlstm development CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.crt"
  mv -f "$tmp/ca.key" "$ca_key"; mv -f "$tmp/ca.crt" "$ca_crt"
  rm -f "$crt" "$key"   # a new CA invalidates the old server certificate
  echo "created development CA: $ca_crt" >&2
fi

needs_cert=0
if [[ ! -s "$crt" || ! -s "$key" ]]; then
  needs_cert=1
elif ! openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1; then
  needs_cert=1
elif ! openssl x509 -in "$crt" -noout -checkend $((7 * 86400)) >/dev/null; then
  needs_cert=1
fi

if [[ $needs_cert -eq 1 ]]; then
  new_key "$tmp/tls.key"
  openssl req -new -key "$tmp/tls.key" -subj "/CN=localhost" -out "$tmp/tls.csr"
  cat > "$tmp/ext.cnf" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyAgreement
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EXT
  openssl x509 -req -in "$tmp/tls.csr" -CA "$ca_crt" -CAkey "$ca_key" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days 397 -sha256 \
    -extfile "$tmp/ext.cnf" -out "$tmp/tls.crt" 2>/dev/null
  mv -f "$tmp/tls.key" "$key"; mv -f "$tmp/tls.crt" "$crt"
  echo "issued server certificate for localhost, 127.0.0.1, ::1: $crt" >&2
fi

chmod 600 "$ca_key" "$key"
chmod 644 "$ca_crt" "$crt"
echo "$out"
