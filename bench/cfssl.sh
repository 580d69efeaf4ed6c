# Sourced by bench/run.sh and bench/issuance.sh, which both compare Tessera
# with cfssl 1.2 (`cfssl serve` over TLS, no certificate database): one
# set-up of its CA and TLS certificate, and one start, for both.

# cfssl_pki DIR: writes into DIR (created) a P-256 CA (ca.pem, ca.key), a
# TLS server certificate for localhost and 127.0.0.1 signed by it (srv.pem,
# srv.key) and a signing profile (cfg.json: 1 h leaves, server and client
# auth).
cfssl_pki() {
    mkdir -p "$1"
    (
        cd "$1"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -out ca.pem -days 30 -subj /CN=cfssl-bench-ca \
            -addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign,cRLSign
        openssl ecparam -name prime256v1 -genkey -noout -out srv.key
        openssl req -new -key srv.key -subj /CN=localhost -out srv.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >srv.ext
        openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile srv.ext -out srv.pem
        echo '{"signing":{"default":{"expiry":"1h","usages":["digital signature","server auth","client auth"]}}}' >cfg.json
    ) 2>/dev/null
}

# cfssl_serve DIR PORT: starts `cfssl serve` in the background on
# 127.0.0.1:PORT with the files cfssl_pki wrote into DIR (log: DIR/log) and
# returns once it answers over TLS (or after 10 s). `$!` is its PID
# afterwards, for the caller to stop it.
cfssl_serve() {
    cfssl serve -address 127.0.0.1 -port "$2" -ca "$1/ca.pem" -ca-key "$1/ca.key" -config "$1/cfg.json" \
        -tls-cert "$1/srv.pem" -tls-key "$1/srv.key" -loglevel 5 >"$1/log" 2>&1 &
    for _ in $(seq 100); do curl -s -o /dev/null --cacert "$1/ca.pem" "https://localhost:$2/" && break; sleep 0.1; done
}
