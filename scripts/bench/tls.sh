# shellcheck shell=bash
# The TLS cells of scripts/bench.sh (BENCH_TLS=1, or tls / tls-hs / tls-resume in
# BENCH_CELLS): ringgate, nginx and HAProxy each terminating TLS 1.3 with the same
# certificate, cipher suite and key exchange group, in front of the wrk cell's plaintext
# backend, in the wrk cell's CPU layout. This file owns the TLS material of a run, the check
# of what each proxy negotiates, and the handshake cell's load (ab); the keep-alive and
# resumed cells run through scripts/bench.sh's run_wrk.
#
# What is pinned, and where:
#   version      TLS 1.3 only: the clients' MinProtocol/MaxProtocol, nginx's ssl_protocols,
#                HAProxy's ssl-min-ver (ringgate also speaks 1.2; no client here offers it).
#   suite        BENCH_TLS_CIPHER (TLS_AES_128_GCM_SHA256; any of the three TLS 1.3 suites
#                all three proxies have): the only suite the clients offer (their OpenSSL
#                configuration, tls-client.cnf.in, given with OPENSSL_CONF), and the only one
#                nginx (ssl_conf_command Ciphersuites) and HAProxy (ciphersuites) accept.
#                ringgate has no such setting; rustls takes the client's order, so the
#                clients' offer is what pins it.
#   group        X25519: the clients' Groups, nginx's ssl_ecdh_curve, HAProxy's curves.
#   certificate  one self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, made
#                with openssl for the run (BENCH_TLS_CERT + BENCH_TLS_KEY: yours instead);
#                HAProxy reads it and its key from one PEM file.
#   resumption   every proxy sends two TLS 1.3 session tickets after a full handshake
#                (rustls' default and OpenSSL's) and resumes a session from them. Whether a
#                handshake is resumed is the client's choice, the same for every proxy: ab
#                (tls-hs) never offers a session, wrk (tls, tls-resume) offers the last one
#                on each reconnect (below).
#
# Before the cells, tls_check_negotiation makes one full and then one resumed handshake with
# each proxy through `openssl s_client` and the clients' configuration, and stops the run
# unless both settle on TLS 1.3, the pinned suite and group, the same signature scheme for
# every proxy (ECDSA with the default certificate), ALPN http/1.1 and a 200, and the second
# one is resumed: $TLS_DIR/negotiated.tsv, printed at the head of latest.md.
#
# Source after lib.sh and counters.sh. Usage: tls_check_knobs first, tls_setup once (after
# $WORK exists), then tls_check_negotiation PATH PORT per proxy, run_tls_handshakes PATH
# per tls-hs cell.

TLS_CIPHER=${BENCH_TLS_CIPHER:-TLS_AES_128_GCM_SHA256}
TLS_GROUP=X25519

# Refuse knobs the TLS cells cannot honour, before anything is built or started.
tls_check_knobs() {
    case $TLS_CIPHER in
    TLS_AES_128_GCM_SHA256 | TLS_AES_256_GCM_SHA384 | TLS_CHACHA20_POLY1305_SHA256) ;;
    *) die "BENCH_TLS_CIPHER=$TLS_CIPHER: not a TLS 1.3 suite that rustls (ring), nginx and HAProxy all have" ;;
    esac
    if [[ -n ${BENCH_TLS_CERT:-} || -n ${BENCH_TLS_KEY:-} ]]; then
        [[ -r ${BENCH_TLS_CERT:-} && -r ${BENCH_TLS_KEY:-} ]] ||
            die "BENCH_TLS_CERT and BENCH_TLS_KEY must both name readable PEM files"
    fi
    return 0
}

# Make (or take) the certificate, the clients' OpenSSL configuration and the request body:
# sets TLS_DIR, TLS_CERT, TLS_KEY, TLS_CERT_KEY (both in one file, for HAProxy),
# TLS_CERT_DESC (for latest.md), TLS_CLIENT_CNF and TLS_BODY.
tls_setup() {
    ensure_commands openssl:openssl ab:apache2-utils
    tls_check_knobs
    TLS_DIR=$WORK/tls
    mkdir -p "$TLS_DIR"
    chmod 755 "$TLS_DIR"
    if [[ -n ${BENCH_TLS_CERT:-} ]]; then
        TLS_CERT=$(realpath "$BENCH_TLS_CERT")
        TLS_KEY=$(realpath "$BENCH_TLS_KEY")
        TLS_CERT_DESC="BENCH_TLS_CERT=$BENCH_TLS_CERT, $(openssl x509 -in "$TLS_CERT" -noout -text |
            awk -F': *' '/Public Key Algorithm:/ { a = $2 } /Public-Key:/ { b = $2 } /NIST CURVE:/ { c = " " $2 }
                END { print a " " b c }')"
    else
        TLS_CERT=$TLS_DIR/cert.pem
        TLS_KEY=$TLS_DIR/key.pem
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
            -keyout "$TLS_KEY" -out "$TLS_CERT" >"$TLS_DIR/openssl-req.log" 2>&1 ||
            die "openssl could not make the certificate: $(cat "$TLS_DIR/openssl-req.log")"
        TLS_CERT_DESC="self-signed, ECDSA P-256, for localhost and 127.0.0.1, made for the run"
    fi
    TLS_CERT_KEY=$TLS_DIR/cert-key.pem
    cat "$TLS_CERT" "$TLS_KEY" >"$TLS_CERT_KEY"
    TLS_CLIENT_CNF=$TLS_DIR/client.cnf
    fill_template "$BENCH_DIR/tls-client.cnf.in" "$TLS_CLIENT_CNF" CIPHER="$TLS_CIPHER"
    TLS_BODY=$BENCH_DIR/order.json
    : >"$TLS_DIR/negotiated.tsv"
    log "TLS: certificate $TLS_CERT_DESC; the clients offer TLS 1.3, $TLS_CIPHER and $TLS_GROUP only"
}

# One handshake and one GET through openssl s_client with the clients' configuration:
# tls_s_client PORT [s_client options...]; prints s_client's report.
tls_s_client() {
    local port=$1
    shift
    printf 'GET /api/spot/v2/order HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
        OPENSSL_CONF=$TLS_CLIENT_CNF timeout 10 openssl s_client -connect "127.0.0.1:$port" \
            -servername localhost -alpn http/1.1 -ign_eof "$@" 2>&1 || true
}

# "kind version suite group signature alpn status" from an s_client report (kind: New or
# Reused; "-" for what it does not say).
tls_settled() {
    awk '
    /^(New|Reused), / { kind = $1; sub(/,$/, "", kind); version = $2; sub(/,$/, "", version); suite = $NF }
    /^Server Temp Key:/ { group = $4; sub(/,$/, "", group) }
    /^Peer signature type:/ { sig = $4 }
    /^ALPN protocol:/ { alpn = $3 }
    /^HTTP\/1\.[01] [0-9]+/ && status == "" { status = $2 }
    END {
        printf "%s %s %s %s %s %s %s\n", (kind ? kind : "-"), (version ? version : "-"),
            (suite ? suite : "-"), (group ? group : "-"), (sig ? sig : "-"), (alpn ? alpn : "-"),
            (status ? status : "-")
    }'
}

# A full and then a resumed handshake with one proxy: tls_check_negotiation PATH PORT.
# Appends "path version suite group signature alpn resumed" to $TLS_DIR/negotiated.tsv; dies
# unless the proxy settles on what the run pins and resumes the session it issued.
tls_check_negotiation() {
    local path=$1 port=$2 session=$TLS_DIR/$1.session full resumed
    local -a f r
    tls_s_client "$port" -sess_out "$session" >"$TLS_DIR/$path-s_client-full.txt"
    tls_s_client "$port" -sess_in "$session" >"$TLS_DIR/$path-s_client-resumed.txt"
    full=$(tls_settled <"$TLS_DIR/$path-s_client-full.txt")
    resumed=$(tls_settled <"$TLS_DIR/$path-s_client-resumed.txt")
    read -ra f <<<"$full"
    read -ra r <<<"$resumed"
    # The signature follows the certificate's key (ECDSA, RSA-PSS): the first proxy's is
    # what the others must make.
    TLS_SIGNATURE=${TLS_SIGNATURE:-${f[4]}}
    if [[ "${f[*]}" != "New TLSv1.3 $TLS_CIPHER $TLS_GROUP $TLS_SIGNATURE http/1.1 200" ]]; then
        cat "$TLS_DIR/$path-s_client-full.txt" >&2
        die "$path: full handshake settled on \"$full\" (kind version suite group signature" \
            "ALPN status), not \"New TLSv1.3 $TLS_CIPHER $TLS_GROUP $TLS_SIGNATURE http/1.1 200\""
    fi
    if [[ "${r[*]:0:4}" != "Reused TLSv1.3 $TLS_CIPHER $TLS_GROUP" || ${r[6]} != 200 ]]; then
        cat "$TLS_DIR/$path-s_client-resumed.txt" >&2
        die "$path: second handshake settled on \"$resumed\": the session was not resumed"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "${f[1]}" "${f[2]}" "${f[3]}" "${f[4]}" \
        "${f[5]}" yes >>"$TLS_DIR/negotiated.tsv"
    log "$(printf '%-13s' "$path") TLS: ${f[1]} ${f[2]} ${f[3]} ${f[4]} ALPN ${f[5]}; resumes its tickets"
}

# The tls-hs cell of one proxy: run_tls_handshakes PATH. ab (one thread, on the load CPU)
# opens a new connection per request, HTTP/1.0 without keep-alive, with a new SSL object each
# time and no session offered: a full TLS 1.3 handshake and one POST of order.json per
# connection, BENCH_TLS_HS_CONNS at a time; a warm-up run of its own first. Appends a
# rows.tsv row: connections/s, p50 and p99 of ab's connect-to-answer time (its CSV), no
# p99.9 ("-"), connections, failures (failed + non-2xx) and the window's counters.
run_tls_handshakes() {
    local path=$1 name="$1-tls-hs" url pids prefix out
    url="https://127.0.0.1:${PORT_OF[$path]}/api/spot/v2/order"
    pause_others "$path"
    mapfile -t pids < <(proxy_pids_of "$path")
    counters_attach "$name" "${pids[@]}"
    read -ra prefix <<<"$(load_prefix)"
    # -n only sizes ab's table of samples: far more than one core opens in the time (-t).
    local ab=("${prefix[@]}" env "OPENSSL_CONF=$TLS_CLIENT_CNF" taskset -c "$WRK_LOAD_CPU"
        ab -r -c "$TLS_HS_CONNS" -p "$TLS_BODY" -T application/json)
    run_tracked "$WORK/$name-warmup.txt" "${ab[@]}" -t "$TLS_WARMUP_S" \
        -n $((100000 * (TLS_WARMUP_S + 1))) "$url" ||
        die "ab warm-up failed on $path: $(cat "$WORK/$name-warmup.txt")"
    window_begin
    if ! run_tracked "$WORK/$name.txt" "${ab[@]}" -t "$TLS_DURATION_S" \
        -n $((100000 * (TLS_DURATION_S + 1))) -e "$WORK/$name.csv" "$url"; then
        counters_detach
        die "ab failed on $path: $(cat "$WORK/$name.txt")"
    fi
    window_end
    resume_paused
    local counters=$WINDOW_COUNTERS settled
    # "SSL/TLS Protocol: TLSv1.3,TLS_AES_128_GCM_SHA256,256,128" (ab's first connection).
    settled=$(awk -F': *' '/^SSL\/TLS Protocol:/ { split($2, p, ","); print p[1], p[2] }' "$WORK/$name.txt")
    [[ $settled == "TLSv1.3 $TLS_CIPHER" ]] ||
        die "ab on $path settled on \"$settled\", not TLSv1.3 $TLS_CIPHER: $(cat "$WORK/$name.txt")"
    out=$(awk -F'[:,] *' -v path="$path" -v c="$counters" -v csv="$WORK/$name.csv" '
        BEGIN { OFS = "\t" }
        /^Complete requests/ { n = $2 }
        /^Failed requests/ { failed = $2 }
        /^Non-2xx responses/ { non2xx = $2 }
        /^Time taken for tests/ { secs = $2 + 0 }
        END {
            while ((getline line < csv) > 0) {
                split(line, f, ",")
                if (f[1] == "50") p50 = f[2] * 1000
                if (f[1] == "99") p99 = f[2] * 1000
            }
            split(c, k, " ")
            print path, "tls-hs", (secs > 0 ? n / secs : 0), p50 + 0, p99 + 0, "-", n + 0,
                failed + non2xx, k[1], k[2], k[3], k[4], k[5], k[6]
        }' "$WORK/$name.txt")
    printf '%s\n' "$out" >>"$WORK/rows.tsv"
    log "$(printf '%-13s %-10s' "$path" tls-hs) $(awk -F'\t' '{ printf "%.0f handshakes/s  p50 %.0f  p99 %.0f µs (connect to answer)  errors %d", $3, $4, $5, $8 }' <<<"$out")  [utime stime syscalls submits arms segments: $counters]"
}
