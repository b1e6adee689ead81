#!/bin/sh
# Make a private CA and a TLS server certificate for the broker (deploy/mosquitto/bulletd.conf).
#
#   make-certs.sh DIR HOSTNAME [IP...]
#
# Writes DIR/ca.key (keep it offline), DIR/ca.crt (copy to every device and to the trainer),
# DIR/server.key and DIR/server.crt (the broker's). HOSTNAME and each IP go into the server
# certificate's subjectAltName, which is what clients check. An existing CA in DIR is reused,
# so running it again only renews the server certificate. Needs openssl.
set -eu

if [ $# -lt 2 ]; then
    echo "usage: $0 DIR HOSTNAME [IP...]" >&2
    exit 2
fi
dir=$1
host=$2
shift 2
days=${CERT_DAYS:-825}

san="DNS:$host"
for ip in "$@"; do
    san="$san,IP:$ip"
done

mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.key" ] || [ ! -f "$dir/ca.crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 -subj "/CN=Bullet OS broker CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
fi
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=$host" 2>/dev/null
ext="$dir/server.ext"
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
    "$san" >"$ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/server.crt" -days "$days" -extfile "$ext" 2>/dev/null
rm -f "$dir/server.csr" "$ext"
chmod 644 "$dir/ca.crt" "$dir/server.crt"
# mosquitto reads the key as its own user; give it to that user when it exists.
if id mosquitto >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    chown mosquitto "$dir/server.key"
fi
echo "wrote $dir/ca.crt $dir/server.crt $dir/server.key (subjectAltName $san)"
