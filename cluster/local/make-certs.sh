#!/usr/bin/env bash
# Make a private certificate authority and the certificates a TLS cluster needs, in DIR:
#   ca.pem, ca.key        the authority (keep ca.key private, off the cluster)
#   node.pem, node.key    for the scheduler and the workers
#   client.pem, client.key   for `melpipe preprocess --tls-cert ... --tls-key ...`
# Every party checks that the others' certificates are signed by ca.pem.
#
#   cluster/local/make-certs.sh certs
set -euo pipefail
dir="${1:?usage: $0 DIR}"
mkdir -p "$dir"
cd "$dir"
days=365
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=melpipe-ca" \
    -keyout ca.key -out ca.pem 2>/dev/null
for who in node client; do
    openssl req -newkey rsa:2048 -nodes -subj "/CN=melpipe-$who" \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
    openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$days" -out "$who.pem" 2>/dev/null
    rm "$who.csr"
done
chmod 600 ./*.key
echo "Wrote ca.pem, node.pem/key and client.pem/key to $dir."
