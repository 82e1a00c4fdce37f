#!/bin/sh
# Fetch MyCert's CRLs, check their signatures, install them, reload the server.
#
#   mycert-crl-refresh.sh PKI_BASE_URL CA_FILE CRL_FILE [RELOAD COMMAND...]
#   e.g. mycert-crl-refresh.sh https://mycert.esante.lu /etc/ssl/mycert/mycert-ca.pem \
#            /etc/ssl/mycert/mycert-crls.pem nginx -s reload
#
# Run it every hour (cron or a systemd timer): MyCert re-signs its CRL on every revocation
# and hourly, each valid 24 h. On any failure the installed file is kept (still valid until
# its nextUpdate) and the script exits non-zero: alert on it (docs/relying-parties.md).
set -eu
base=${1:?PKI base URL}; cafile=${2:?CA file}; out=${3:?CRL file}; shift 3
work=$(mktemp -d "$(dirname "$out")/.mycert-crl.XXXXXX")
trap 'rm -rf "$work"' EXIT
for name in issuing root; do
    curl -fsS --max-time 30 -o "$work/$name.der" "$base/pki/crl/$name.crl"
    # Refuse anything MyCert's CAs did not sign (openssl exits non-zero on a bad signature).
    openssl crl -inform DER -in "$work/$name.der" -CAfile "$cafile" -noout 2>"$work/verify"
    grep -q "verify OK" "$work/verify"
    openssl crl -inform DER -in "$work/$name.der" -out "$work/$name.pem"
done
cat "$work/issuing.pem" "$work/root.pem" > "$work/crls.pem"
if [ -f "$out" ] && cmp -s "$work/crls.pem" "$out"; then
    exit 0
fi
chmod 644 "$work/crls.pem"
mv "$work/crls.pem" "$out"
if [ "$#" -gt 0 ]; then
    "$@"
fi
