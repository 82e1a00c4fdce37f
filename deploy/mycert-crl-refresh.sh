#!/bin/sh
# Fetch MyCert's CRLs, check them, install them, reload the server.
#
#   mycert-crl-refresh.sh PKI_BASE_URL CA_FILE CRL_FILE [RELOAD COMMAND...]
#   e.g. mycert-crl-refresh.sh https://mycert.esante.lu /etc/ssl/mycert/mycert-ca.pem \
#            /etc/ssl/mycert/mycert-crls.pem nginx -s reload
#
# CA_FILE holds MyCert's root and issuing CA certificates (PEM), taken once out of band
# (docs/relying-parties.md §1). CRL_FILE receives the issuing CA's CRL, then the root's.
#
# Run it every hour (cron or a systemd timer): MyCert re-signs its CRL on every revocation
# and hourly, each valid 24 h. The CRLs are often fetched over plain HTTP, so anyone on
# the path can serve another signed CRL than the newest. Each one is installed only if:
# - its issuer is the CA it stands for, and that CA signed it: the issuing CA's CRL by
#   the issuing CA, the root's by the root. The root's CRL in the issuing CA's place is
#   a genuine, signed CRL that lists no certificate: it would un-revoke every one.
# - its nextUpdate is in the future (RFC 5280 §5.1.2.5): OpenSSL refuses every client
#   with an expired CRL.
# - its cRLNumber is at least that of the installed one (numbers only increase,
#   RFC 5280 §5.2.3): a replayed older CRL, signed before a revocation, would make the
#   revoked certificate good again until its nextUpdate.
# A CRL that fails (or cannot be fetched, or is truncated) is not installed: the
# installed CRL of that CA is kept, the script says why on stderr and exits 1.
#
# Alarm: once an installed CRL comes within a margin of its nextUpdate, the script says
# "ALARM" on stderr and exits 2 (1 if something was refused too). The margins, in
# seconds, from the environment:
#   MYCERT_CRL_ALARM_SECONDS       the issuing CA's CRL, default 43200 (12 h: it is
#                                  re-signed hourly, so 12 h of failed refreshes or of a
#                                  stalled MyCert, and 12 h left to act)
#   MYCERT_ROOT_CRL_ALARM_SECONDS  the root's CRL, default 2592000 (30 days: a new one
#                                  needs the root's offline ceremony)
# Once a CRL has expired, every client is refused (fail closed): alert on any non-zero
# exit (cron mails stderr; a systemd timer's unit fails).
#
# Exit status: 0 installed (or unchanged) and fresh; 1 a CRL refused or not fetched, or a
# usage error; 2 alarm only. Needs curl, openssl and GNU date (coreutils).
set -eu
base=${1:?PKI base URL}; cafile=${2:?CA file}; out=${3:?CRL file}; shift 3
issuing_margin=${MYCERT_CRL_ALARM_SECONDS:-43200}
root_margin=${MYCERT_ROOT_CRL_ALARM_SECONDS:-2592000}
work=$(mktemp -d "$(dirname "$out")/.mycert-crl.XXXXXX")
trap 'rm -rf "$work"' EXIT
status=0

say() {
    echo "mycert-crl-refresh: $*" >&2
}

# Split a PEM file into one file per object: PREFIX-1.pem, PREFIX-2.pem, …
split_pem() {
    awk -v prefix="$2" '
        /^-----BEGIN / { n++; file = prefix "-" n ".pem" }
        file { print > file }
        /^-----END / { close(file); file = "" }
    ' "$1"
}

# Uppercase hexadecimal without leading zeros, for comparing cRLNumbers of any length
# (up to 20 octets, RFC 5280 §5.2.3: more than shell arithmetic holds).
hex_normal() {
    printf '%s' "$1" | tr 'abcdef' 'ABCDEF' | sed 's/^0*//'
}

# Whether hexadecimal $1 ≥ $2.
hex_ge() {
    a=$(hex_normal "$1"); b=$(hex_normal "$2")
    if [ "${#a}" -ne "${#b}" ]; then
        [ "${#a}" -gt "${#b}" ]
        return
    fi
    [ "$a" = "$b" ] && return 0
    [ "$(printf '%s\n%s\n' "$a" "$b" | LC_ALL=C sort | tail -n 1)" = "$a" ]
}

crl_field() {  # crl_field FILE.pem issuer|nextupdate|crlnumber: the value after "name="
    openssl crl -in "$1" -noout "-$2" -nameopt RFC2253 2>/dev/null | sed 's/^[^=]*=//'
}

seconds_until() {  # seconds from now until an OpenSSL date ("Dec  8 02:47:31 2026 GMT")
    echo $(( $(date -u -d "$1" +%s) - $(date -u +%s) ))
}

# The CA certificates: the self-signed one(s) are the root, the others the issuing CA.
split_pem "$cafile" "$work/ca"
: > "$work/root-ca.pem"; : > "$work/issuing-ca.pem"
for cert in "$work"/ca-*.pem; do
    [ -f "$cert" ] || continue
    subject=$(openssl x509 -in "$cert" -noout -subject -nameopt RFC2253 | sed 's/^subject=//')
    issuer=$(openssl x509 -in "$cert" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')
    if [ "$subject" = "$issuer" ]; then
        cat "$cert" >> "$work/root-ca.pem"; echo "$subject" > "$work/root.name"
    else
        cat "$cert" >> "$work/issuing-ca.pem"; echo "$subject" > "$work/issuing.name"
    fi
done
if [ ! -s "$work/root.name" ] || [ ! -s "$work/issuing.name" ]; then
    say "$cafile must hold MyCert's root and issuing CA certificates (PEM)"
    exit 1
fi

# The installed CRLs, by issuer.
if [ -f "$out" ]; then
    split_pem "$out" "$work/installed"
    for crl in "$work"/installed-*.pem; do
        [ -f "$crl" ] || continue
        issuer=$(crl_field "$crl" issuer)
        for name in issuing root; do
            if [ "$issuer" = "$(cat "$work/$name.name")" ] && [ ! -f "$work/$name.installed" ]; then
                cp "$crl" "$work/$name.installed"
            fi
        done
    done
fi

# check NAME: whether $work/NAME.der is a CRL to install in place of the installed one;
# if not, say why and fail.
check() {
    name=$1; der="$work/$1.der"; pem="$work/$1.new"
    if ! openssl crl -inform DER -in "$der" -out "$pem" 2>/dev/null; then
        say "$name CRL refused: not a CRL (truncated or damaged download)"
        return 1
    fi
    expected=$(cat "$work/$name.name")
    issuer=$(crl_field "$pem" issuer)
    if [ "$issuer" != "$expected" ]; then
        say "$name CRL refused: issued by \"$issuer\", not by \"$expected\""
        return 1
    fi
    # openssl crl -CAfile says "verify OK" or "verify failure" but exits 0 on a bad
    # signature (OpenSSL 3.0): read what it says. Only the expected CA is in the store.
    openssl crl -in "$pem" -noout -CAfile "$work/$name-ca.pem" > "$work/verify" 2>&1 || true
    if ! grep -qx "verify OK" "$work/verify"; then
        say "$name CRL refused: its signature is not the $name CA's"
        return 1
    fi
    next=$(crl_field "$pem" nextupdate)
    if [ -z "$next" ] || [ "$next" = "NONE" ]; then
        say "$name CRL refused: it has no nextUpdate"
        return 1
    fi
    if [ "$(seconds_until "$next")" -le 0 ]; then
        say "$name CRL refused: expired (nextUpdate $next)"
        return 1
    fi
    number=$(crl_field "$pem" crlnumber | sed 's/^0x//')
    case $number in
        ''|*[!0-9A-Fa-f]*)
            say "$name CRL refused: it has no cRLNumber"
            return 1 ;;
    esac
    if [ -f "$work/$name.installed" ]; then
        installed=$(crl_field "$work/$name.installed" crlnumber | sed 's/^0x//')
        if ! hex_ge "$number" "${installed:-0}"; then
            say "$name CRL refused: cRLNumber 0x$number is older than the installed 0x$installed (a replayed CRL)"
            return 1
        fi
    fi
    return 0
}

for name in issuing root; do
    if ! curl -fsS --max-time 30 --max-filesize 20000000 -o "$work/$name.der" \
            "$base/pki/crl/$name.crl" 2>"$work/curl"; then
        say "$name CRL not fetched from $base/pki/crl/$name.crl: $(cat "$work/curl")"
        status=1
    elif check "$name"; then
        mv "$work/$name.new" "$work/$name.pem"
        continue
    else
        status=1
    fi
    if [ -f "$work/$name.installed" ]; then
        say "keeping the installed $name CRL"
        cp "$work/$name.installed" "$work/$name.pem"
    fi
done

if [ -f "$work/issuing.pem" ] && [ -f "$work/root.pem" ]; then
    cat "$work/issuing.pem" "$work/root.pem" > "$work/crls.pem"
    if ! { [ -f "$out" ] && cmp -s "$work/crls.pem" "$out"; }; then
        chmod 644 "$work/crls.pem"
        mv "$work/crls.pem" "$out"
        if [ "$#" -gt 0 ]; then
            "$@"
        fi
    fi
else
    say "nothing installed: no CRL of each CA yet ($out)"
    exit 1
fi

# The alarm, on what is installed now.
for name in issuing root; do
    margin=$issuing_margin
    [ "$name" = root ] && margin=$root_margin
    next=$(crl_field "$work/$name.pem" nextupdate)
    left=$(seconds_until "$next")
    if [ "$left" -le 0 ]; then
        say "ALARM: the installed $name CRL has expired ($next): every client is refused"
    elif [ "$left" -le "$margin" ]; then
        say "ALARM: the installed $name CRL expires in $((left / 3600)) h $((left % 3600 / 60)) min ($next); then every client is refused"
    else
        continue
    fi
    [ "$status" -eq 0 ] && status=2
done
exit "$status"
