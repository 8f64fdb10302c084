#!/usr/bin/env bash
# A development certificate authority and a server certificate signed by it,
# and client certificates for mutual TLS.
#
#   docker/dev-certs.sh [DIR] [NAMES] [CLIENTS]
#       (default: deploy/certs server,localhost,127.0.0.1, no clients)
#
# CLIENTS (comma-separated) are client names: each gets DIR/client-NAME.pem and
# DIR/client-NAME.key, a certificate whose common name is NAME (the client's
# identity on the server: `tls_client_ca = DIR/ca.pem`; clients pass
# --tls-cert/--tls-key). Client certificates are made with the existing CA
# when DIR/ca.key exists, so they can be added later:
#   docker/dev-certs.sh deploy/certs "" alice,bob
#
# Writes DIR/ca.pem (give it to clients: ORCHARD_CA_CERT), DIR/ca.key (keep it
# private), DIR/server.pem and DIR/server.key (the server: ORCHARD_TLS_CERT,
# ORCHARD_TLS_KEY). NAMES are the DNS names and IP addresses clients use to
# reach the server; add the server machine's public name for remote clients:
#   make certs DOCKER_CERT_NAMES=server,localhost,127.0.0.1,fl.example.org
# For development and tests only: production servers need a certificate from
# the organisation's CA, with its key kept out of reach.
set -euo pipefail
dir=${1:-deploy/certs}
names=${2:-}
clients=${3:-}
if [[ -z $names && -n $clients && -f $dir/ca.key ]]; then only_clients=1; else only_clients=0; fi
names=${names:-server,localhost,127.0.0.1}
days=${DAYS:-365}
command -v openssl >/dev/null || { echo "dev-certs: openssl is missing" >&2; exit 1; }

san=""
IFS=, read -r -a list <<<"$names"
for name in "${list[@]}"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
san=${san%,}

mkdir -p "$dir"
umask 077

client_certs() {
  local client
  IFS=, read -r -a wanted <<<"$clients"
  for client in "${wanted[@]}"; do
    [[ $client =~ ^[A-Za-z0-9][A-Za-z0-9._@-]*$ ]] || { echo "dev-certs: bad client name $client" >&2; exit 1; }
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/O=Orchard development/CN=$client" \
      -keyout "$dir/client-$client.key" -out "$dir/client-$client.csr" 2>/dev/null
    openssl x509 -req -in "$dir/client-$client.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -days "$days" -out "$dir/client-$client.pem" \
      -extfile <(printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n') \
      2>/dev/null
    rm -f "$dir/client-$client.csr" "$dir/ca.srl"
    chmod 0644 "$dir/client-$client.pem"
    openssl verify -CAfile "$dir/ca.pem" "$dir/client-$client.pem" >/dev/null
    echo "dev-certs: $dir/client-$client.pem (client $client)"
  done
}
if ((only_clients)); then client_certs; exit 0; fi

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
  -subj "/O=Orchard development/CN=Orchard development CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/O=Orchard development/CN=${list[0]}" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days "$days" -out "$dir/server.pem" \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n' "$san") \
  2>/dev/null
rm -f "$dir/server.csr" "$dir/ca.srl"
# Keys and certificates never belong in git.
printf "*\n" >"$dir/.gitignore"
chmod 0644 "$dir/ca.pem" "$dir/server.pem"
# The server container runs as uid/gid 10001 and reads the key through a bind
# mount: give that group read access (as root), else make it readable to all.
if [ "$(id -u)" = 0 ]; then
  chgrp 10001 "$dir/server.key" && chmod 0640 "$dir/server.key"
else
  chmod 0644 "$dir/server.key"
  echo "dev-certs: $dir/server.key is world-readable so the container user can read it" >&2
fi
openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null
echo "dev-certs: $dir/ca.pem, $dir/server.pem ($san)"
if [[ -n $clients ]]; then client_certs; fi
