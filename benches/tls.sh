#!/usr/bin/env bash
# HTTPS benchmark: GET /ping through rip-server terminating TLS, side by side
# with HAProxy and nginx terminating TLS with the same certificate in front of
# the same example worker binary (W standalone workers, one per Unix socket).
#
#   h1-C     HTTP/1.1 keep-alive, C connections (oha), for each CONCURRENCY
#   h2       HTTP/2: H2_CONNECTIONS connections x H2_STREAMS streams each (oha --http2)
#   hs-full  a new TCP+TLS connection per request, full handshakes (TLS session
#            resumption off in the client), HANDSHAKE_CONCURRENCY at a time
#            (benches/tls-client, built here)
#   hs-oha   oha --disable-keepalive, HANDSHAKE_CONCURRENCY connections: a new
#            connection per request, but oha resumes TLS sessions whenever the
#            server offers resumption (rip-server and HAProxy do by default;
#            nginx here does not), so this row is not like-for-like
#   sleep    HTTP/1.1 keep-alive, SLEEP_CONCURRENCY connections, GET /sleep?ms=1:
#            a request that yields inside the worker, so two requests sent to the
#            same single-inflight worker overlap and the second gets 503 busy.
#            Shows what each proxy does with more clients than workers.
# in ROUNDS rounds: every row runs once per round, and each round starts with
# the next peer (rip-server is not always measured first); then each row's
# median over the rounds, rip-server's ratios against each peer (taken within
# each round, then their median and range: requests/s, p50, p99 and the
# proxy's own CPU per request), and every round.
# Results and method: docs/benchmarks.md ("HTTPS").
#
# Settings (environment):
#   W=2                   workers (rip-server w:W; W standalone workers for the peers)
#   ROUNDS=3              rounds of every row, alternating
#   DURATION=10 WARMUP=2  seconds measured per run, and of discarded load before each
#   CONCURRENCY="16 64"   connections for the h1 rows
#   H2_CONNECTIONS=4 H2_STREAMS=4   the h2 row: oha --http2 -c 4 -p 4 (16 streams in flight)
#   HANDSHAKE_CONCURRENCY=16        connections at a time for hs-full and hs-oha
#   SLEEP_CONCURRENCY=16            connections for the sleep row
#   TESTS="h1 h2 hs-full hs-oha sleep"   which rows to run
#   THREADS=nproc/2       rip-server's runtime threads (--threads; its default: half the cores)
#   HAPROXY_NBTHREADS="$(nproc) $THREADS 1"  one HAProxy per value, repeats dropped (row
#                         haproxy-Nt); "" for none
#   NGINX_WORKERS="1 auto"          one nginx per worker_processes value (rows nginx-Nw,
#                         nginx-auto); "" for none
#   NGINX_RESUME=0        1: nginx offers TLS session resumption (shared cache and
#                         tickets) instead of refusing it
#   HAPROXY_BALANCE=leastconn
#   RIP_ARGS="r:0 --reload=none"  extra rip-server arguments
#   BIN_DIR=target/release  rip-server and rip-example-worker (built if missing or BUILD=1)
#   CLIENT_TARGET=/tmp/rip-bench-tls-client  cargo target dir for benches/tls-client
#   WAIT_QUIET=60 QUIET_PCT=10   the quiet-machine check (as in benches/load.sh)
#   RIP_COMMIT            the commit the binary was built from, for the header (default: HEAD)
#   KEEP=0                1 keeps the scratch directory (configs, logs, raw JSON)
#
# Every process this script starts is recorded by PID and stopped by PID on
# exit. Traffic stays on 127.0.0.1 and Unix sockets in a private mktemp dir
# (rip-server itself binds its port on all interfaces: it has no bind-address flag).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"

W=${W:-2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-16 64}
H2_CONNECTIONS=${H2_CONNECTIONS:-4}
H2_STREAMS=${H2_STREAMS:-4}
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-16}
SLEEP_CONCURRENCY=${SLEEP_CONCURRENCY:-16}
TESTS=${TESTS:-h1 h2 hs-full hs-oha sleep}
THREADS=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
HAPROXY_NBTHREADS=${HAPROXY_NBTHREADS-$(nproc) $THREADS 1}
NGINX_WORKERS=${NGINX_WORKERS-1 auto}
NGINX_RESUME=${NGINX_RESUME:-0}
HAPROXY_BALANCE=${HAPROXY_BALANCE:-leastconn}
RIP_ARGS=${RIP_ARGS:-r:0 --reload=none}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
CLIENT_TARGET=${CLIENT_TARGET:-/tmp/rip-bench-tls-client}
WAIT_QUIET=${WAIT_QUIET:-60}
QUIET_PCT=${QUIET_PCT:-10}
KEEP=${KEEP:-0}

prog=tls.sh
source "$here/lib.sh"

for v in W ROUNDS DURATION THREADS H2_CONNECTIONS H2_STREAMS HANDSHAKE_CONCURRENCY SLEEP_CONCURRENCY; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, got '${!v}'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds, got '$WARMUP'"
[[ $WAIT_QUIET =~ ^[0-9]+$ && $QUIET_PCT =~ ^[0-9]+$ ]] || die "WAIT_QUIET and QUIET_PCT must be whole numbers"
[[ $NGINX_RESUME == 0 || $NGINX_RESUME == 1 ]] || die "NGINX_RESUME must be 0 or 1"
read -r -a concurrencies <<<"$CONCURRENCY"
for c in "${concurrencies[@]}"; do [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY holds '$c'"; done
read -r -a tests <<<"$TESTS"
for t in "${tests[@]}"; do
  case $t in h1 | h2 | hs-full | hs-oha | sleep) ;; *) die "TESTS holds '$t' (h1 h2 hs-full hs-oha sleep)" ;; esac
done
has_test() { [[ " ${tests[*]} " == *" $1 "* ]]; }
read -r -a rip_args <<<"$RIP_ARGS"
read -r -a haproxy_nbthreads <<<"$HAPROXY_NBTHREADS"
mapfile -t haproxy_nbthreads < <(printf '%s\n' "${haproxy_nbthreads[@]}" | awk 'NF && !seen[$0]++')
read -r -a nginx_workers <<<"$NGINX_WORKERS"
for t in "${haproxy_nbthreads[@]}"; do [[ $t =~ ^[1-9][0-9]*$ ]] || die "HAPROXY_NBTHREADS holds '$t'"; done
for n in "${nginx_workers[@]}"; do [[ $n =~ ^([1-9][0-9]*|auto)$ ]] || die "NGINX_WORKERS holds '$n'"; done

for tool in python3 curl ss openssl cargo; do command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"; done
((${#haproxy_nbthreads[@]} == 0)) || command -v haproxy >/dev/null || die "haproxy is needed (or HAPROXY_NBTHREADS=\"\")"
((${#nginx_workers[@]} == 0)) || command -v nginx >/dev/null || die "nginx is needed (or NGINX_WORKERS=\"\")"
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found at '$OHA' (cargo install oha --locked)"

rip="$BIN_DIR/rip-server"
worker="$BIN_DIR/rip-example-worker"
ensure_built "$rip" "$worker"
client="$CLIENT_TARGET/release/rip-bench-tls-client"
# always (cheap when up to date; the resumption probe uses it too); offline first,
# as its dependencies are a subset of rip-server's own
(cd "$root/benches/tls-client" && { CARGO_TARGET_DIR=$CLIENT_TARGET cargo build --release --quiet --offline 2>/dev/null ||
  CARGO_TARGET_DIR=$CLIENT_TARGET cargo build --release --quiet; }) >&2 || die "building benches/tls-client failed"

bench_init rip-tls

# ------------------------------------------------------------- certificate

# One ECDSA P-256 key and certificate for localhost and 127.0.0.1, issued by a
# throwaway CA (a self-signed leaf with CA:TRUE is refused by rustls clients).
# Every server gets the same leaf and key; every client trusts ca.pem.
make_cert() {
  local d=$scratch/tls
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=rip-server bench CA" -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=localhost -keyout "$d/key.pem" -out "$d/leaf.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$d/leaf.ext"
  openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$d/leaf.ext" -out "$d/cert.pem" 2>/dev/null
  cat "$d/cert.pem" "$d/key.pem" >"$d/combined.pem" # HAProxy's crt
  openssl verify -CAfile "$d/ca.pem" "$d/cert.pem" >/dev/null || die "the generated certificate does not verify"
}

# ------------------------------------------------------------- load runs

results="$scratch/results.tsv"
: >"$results"

# start_load OUT TEST CONNECTIONS SECONDS PORT: one load run in the background
# (recorded in pids); sets load_pid. TEST picks the client and its flags.
start_load() {
  local out=$1 test=$2 conns=$3 secs=$4 port=$5 url="https://localhost:$5/ping"
  local oha=("$OHA" -z "${secs}s" --no-tui --output-format json --ipv4 --cacert "$scratch/tls/ca.pem")
  case $test in
    h1-*) "${oha[@]}" -c "$conns" -w "$url" ;;
    h2) "${oha[@]}" --http2 -c "$H2_CONNECTIONS" -p "$H2_STREAMS" "$url" ;;
    hs-oha) "${oha[@]}" -c "$conns" -w --disable-keepalive "$url" ;;
    sleep) "${oha[@]}" -c "$conns" -w "https://localhost:$port/sleep?ms=1" ;;
    hs-full) "$client" --addr "127.0.0.1:$port" --name localhost --cacert "$scratch/tls/ca.pem" \
      -c "$conns" -z "$secs" ;;
    *) die "unknown test $test" ;;
  esac >"$out" 2>"$out.err" &
  load_pid=$!
  pids+=("$load_pid")
}

conns_label() { # TEST CONNECTIONS
  case $1 in h2) echo "${H2_CONNECTIONS}x${H2_STREAMS}" ;; *) echo "$2" ;; esac
}

# measure NAME TEST CONNECTIONS PORT: warm-up, measured run, one results row
# (with the CPU seconds the peer's own processes, owner_pids[NAME], used)
measure() {
  local name=$1 test=$2 conns=$3 port=$4 out="$scratch/$1-$2-r$round.json" snap0 snap1 row cpu0 cpu_s machine_s workers workers0 workers_s
  settle
  if ((WARMUP > 0)); then
    start_load "$scratch/warmup.json" "$test" "$conns" "$WARMUP" "$port"
    finish_load "$load_pid" "$scratch/warmup.json"
  fi
  snap0=$(cpu_snap)
  cpu0=$(proc_cpu ${owner_pids[$name]})
  workers=$(row_workers "$name" "${owner_pids[$name]%% *}")
  workers0=$(proc_cpu $workers)
  start_load "$out" "$test" "$conns" "$DURATION" "$port"
  # halfway through: how many connections the proxy holds open to the workers' sockets
  upstream_conns "$name" "$out.upstream" &
  pids+=("$!")
  local counter=$!
  finish_load "$load_pid" "$out"
  cpu_s=$(cpu_delta "$cpu0" "$(proc_cpu ${owner_pids[$name]})")
  workers_s=$(cpu_delta "$workers0" "$(proc_cpu $workers)" | cut -f1)
  snap1=$(cpu_snap)
  busy_now=$(other_cpu "$snap0" "$snap1")
  machine_s=$(machine_cpu "$snap0" "$snap1")
  wait "$counter" 2>/dev/null || true
  forget "$counter"
  local allowed=0
  if [[ $test == h2 ]]; then allowed=$((H2_CONNECTIONS * H2_STREAMS)); fi
  row=$(DEADLINE_ABORTS_ALLOWED=$allowed python3 "$here/summarize.py" row "$name" "$(conns_label "$test" "$conns")" "$out")
  row="$test	$row	$busy_now	$round	$cpu_s	$machine_s	$workers_s"
  echo "$row" >>"$results"
  awk -F'\t' -v up="$(cat "$out.upstream" 2>/dev/null || echo '?')" '{ cpu = $9 > 0 ? sprintf("%.1f", $12 * 1e6 / $9) : "-"
    printf "#   %-7s %-11s c=%-5s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s  errors %s  CPU %s us/request  (other processes: %s%% CPU; worker connections: %s)\n", $1, $2, $3, $4, $5, $6, $7, $8, cpu, $10, up }' <<<"$row"
  if [[ $(cut -f7 <<<"$row") != 0 || $(cut -f8 <<<"$row") != 0 ]]; then
    echo "$prog: $name $test: non-2xx answers or errors: $(python3 "$here/summarize.py" detail "$out")" >&2
    # the sleep row exists to show non-2xx from peers; anything else from rip-server is a finding
    if [[ $name == rip-server ]]; then
      anomaly=1
      echo "$prog: rip-server log tail ($scratch/rip-server.log):" >&2
      tail -n 20 "$scratch/rip-server.log" >&2
    fi
  fi
}

# upstream_conns NAME FILE: after DURATION/2 s, how many connections the peer
# NAME (its own processes) holds open to the workers' sockets: rip-server to its
# own workers, HAProxy and nginx to the standalone ones, which they share (so
# connections another peer keeps idle are not counted).
upstream_conns() {
  local dir="$scratch/w/"
  if [[ $1 == rip-server ]]; then dir="$scratch/xdg/rip-server/"; fi
  sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
  ss -xHn state established | python3 -c '
import os, sys
d, owners = sys.argv[1], sys.argv[2:]
peers = set()  # inodes of the client ends of connections accepted on a worker socket
for line in sys.stdin:
    f = line.split()
    # Netid Recv-Q Send-Q Local Port Peer Port (no State column with a state filter)
    if len(f) >= 7 and f[3].startswith(d) and not f[3].endswith("ctl.sock"):
        peers.add(f[6])
mine = set()
for pid in owners:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                mine.add(target[8:-1])
    except OSError:
        pass
print(len(peers & mine))' "$dir" ${owner_pids[$1]} >"$2"
}

# tls_params PORT: protocol, cipher, key exchange group and ALPN as negotiated with openssl s_client
tls_params() {
  local out
  out=$(openssl s_client -connect "127.0.0.1:$1" -servername localhost -alpn h2,http/1.1 \
    -CAfile "$scratch/tls/ca.pem" </dev/null 2>&1 | tr -d '\0' || true)
  awk '/^New, / { p = $2; c = $5; sub(",", "", p) } /^Server Temp Key:/ { k = $4 }
       /^ALPN protocol:/ { a = $3 } /^Verify return code:/ { v = $4 }
       END { sub(",", "", k); printf "%s %s %s, ALPN %s, verify %s", p, c, k, a, v == "0" ? "ok" : "FAILED" }' <<<"$out"
}

# resumption PORT: does the server resume TLS sessions? (the client with --resume, 2 s)
resumption() {
  "$client" --addr "127.0.0.1:$1" --name localhost --cacert "$scratch/tls/ca.pem" -c 4 -z 2 --resume |
    python3 -c 'import json, sys; d = json.load(sys.stdin)["handshakes"]; n = d["full"] + d["resumed"]
print("%.0f%% of %d new connections resumed" % (100 * d["resumed"] / n, n) if n else "no connections")'
}

# ------------------------------------------------------------- run

bench_header "rip-server HTTPS benchmark: GET /ping" \
  "$(settings BIN_DIR W ROUNDS DURATION WARMUP TESTS CONCURRENCY H2_CONNECTIONS H2_STREAMS HANDSHAKE_CONCURRENCY SLEEP_CONCURRENCY THREADS HAPROXY_NBTHREADS NGINX_WORKERS NGINX_RESUME HAPROXY_BALANCE RIP_ARGS WAIT_QUIET QUIET_PCT) benches/tls.sh"
((${#haproxy_nbthreads[@]} == 0)) || note "haproxy: $(haproxy -v | head -n 1)"
((${#nginx_workers[@]} == 0)) || note "nginx: $(nginx -v 2>&1) ($(nginx -V 2>&1 | grep -o 'running with OpenSSL [^)]*'))"
note "load: $("$OHA" --version); hs-full: benches/tls-client (rustls $(sed -n '/^name = "rustls"$/{n;s/version = //p}' "$root/benches/tls-client/Cargo.lock" | tr -d '"'), ring)"
note "W=$W ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s TESTS=\"${tests[*]}\" CONCURRENCY=\"${concurrencies[*]}\" H2=${H2_CONNECTIONS}x${H2_STREAMS} HANDSHAKE_CONCURRENCY=$HANDSHAKE_CONCURRENCY SLEEP_CONCURRENCY=$SLEEP_CONCURRENCY THREADS=$THREADS HAPROXY_NBTHREADS=\"${haproxy_nbthreads[*]}\" NGINX_WORKERS=\"${nginx_workers[*]}\" NGINX_RESUME=$NGINX_RESUME RIP_ARGS=\"$RIP_ARGS\""

settle
make_cert
note "certificate: $(openssl x509 -in "$scratch/tls/cert.pem" -noout -subject -ext subjectAltName | tr '\n' ' ' | tr -s ' ') ($(openssl x509 -in "$scratch/tls/cert.pem" -noout -text | grep -o 'ASN1 OID: [a-z0-9]*'))"

start_workers "$scratch/w" "$W" "$worker"

peers=()            # row names, in the order measured
declare -A port_of=()
declare -A owner_pids=()   # the processes of each peer, for upstream_conns

for t in "${haproxy_nbthreads[@]}"; do
  port=$(free_port)
  cfg="$scratch/haproxy-${t}t.cfg"
  {
    sed -e "s/@NBTHREAD@/$t/" -e "s/@PORT@/$port/" -e "s/@BALANCE@/$HAPROXY_BALANCE/" \
      -e "s|@BIND_OPTS@| ssl crt $scratch/tls/combined.pem alpn h2,http/1.1|" "$here/haproxy.cfg.in"
    for ((i = 1; i <= W; i++)); do echo "    server w$i unix@$scratch/w/w$i.sock maxconn 1"; done
  } >"$cfg"
  haproxy -c -q -f "$cfg" || die "haproxy rejected $cfg"
  haproxy -db -f "$cfg" </dev/null >"${cfg%.cfg}.log" 2>&1 &
  pids+=("$!")
  owner_pids[haproxy-${t}t]=$!
  wait_until "$!" "${cfg%.cfg}.log" 10 "haproxy (nbthread $t) on port $port" ping_tls "$port" "$scratch/tls/ca.pem"
  peers+=("haproxy-${t}t")
  port_of[haproxy-${t}t]=$port
done

for n in "${nginx_workers[@]}"; do
  port=$(free_port)
  dir="$scratch/nginx-$n"
  mkdir -p "$dir/tmp"
  servers=$(for ((i = 1; i <= W; i++)); do echo "        server unix:$scratch/w/w$i.sock;"; done)
  user=''
  if ((EUID == 0)); then user='user root;'; fi # its workers must reach the sockets in our 0700 directory
  python3 - "$here/nginx.conf.in" "$dir/nginx.conf" "$user" "$n" "$dir" "$port" "$scratch/tls/cert.pem" "$scratch/tls/key.pem" "$servers" "$NGINX_RESUME" <<'PY'
import sys
src, dst, user, workers, d, port, cert, key, servers, resume = sys.argv[1:]
text = open(src).read()
for k, v in {"USER": user, "WORKERS": workers, "DIR": d, "PORT": port, "CERT": cert, "KEY": key, "SERVERS": servers}.items():
    text = text.replace(f"@{k}@", v)
if resume == "1":
    text = text.replace("ssl_session_cache off;", "ssl_session_cache shared:SSL:10m;").replace("ssl_session_tickets off;", "ssl_session_tickets on;")
open(dst, "w").write(text)
PY
  nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || die "nginx rejected $dir/nginx.conf: $(tail -n 3 "$dir/error.log")"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" </dev/null >"$dir/stdout.log" 2>&1 &
  master=$!
  pids+=("$master")
  wait_until "$master" "$dir/error.log" 10 "nginx (worker_processes $n) on port $port" ping_tls "$port" "$scratch/tls/ca.pem"
  nginx_pids=$(ps -o pid= --ppid "$master" | xargs)
  for p in $nginx_pids; do adopt "$p" "$(readlink "/proc/$p/exe")"; done
  if [[ $n == auto ]]; then label=nginx-auto; else label=nginx-${n}w; fi
  peers+=("$label")
  port_of[$label]=$port
  owner_pids[$label]="$master $nginx_pids"
done

start_rip bench https "$W" "$scratch/rip-server.log" "$worker" "w:$W" https:0 \
  --cert="$scratch/tls/cert.pem" --key="$scratch/tls/key.pem" --no-redirect-http --no-access-log "${rip_args[@]}"
wait_until "$rip_pid" "$scratch/rip-server.log" 5 "rip-server on port $rip_port" ping_tls "$rip_port" "$scratch/tls/ca.pem"
peers=(rip-server "${peers[@]}")
port_of[rip-server]=$rip_port
owner_pids[rip-server]=$rip_pid

for p in "${peers[@]}"; do
  note "$p on 127.0.0.1:${port_of[$p]}: $(tls_params "${port_of[$p]}"); resumption: $(resumption "${port_of[$p]}")"
done

for ((round = 1; round <= ROUNDS; round++)); do
  # each round starts with the next peer: none is always measured first
  mapfile -t order < <(rotate $((round - 1)) "${peers[@]}")
  note "round $round of $ROUNDS: ${order[*]}"
  for test in "${tests[@]}"; do
    case $test in
      h1) for c in "${concurrencies[@]}"; do
            note "h1-$c: HTTP/1.1 keep-alive, $c connections"
            for p in "${order[@]}"; do measure "$p" "h1-$c" "$c" "${port_of[$p]}"; done
          done ;;
      h2) note "h2: $H2_CONNECTIONS connections x $H2_STREAMS streams"
          for p in "${order[@]}"; do measure "$p" h2 0 "${port_of[$p]}"; done ;;
      hs-full) note "hs-full: a full TLS handshake per request, $HANDSHAKE_CONCURRENCY at a time"
          for p in "${order[@]}"; do measure "$p" hs-full "$HANDSHAKE_CONCURRENCY" "${port_of[$p]}"; done ;;
      hs-oha) note "hs-oha: oha --disable-keepalive, $HANDSHAKE_CONCURRENCY connections (resumes where offered)"
          for p in "${order[@]}"; do measure "$p" hs-oha "$HANDSHAKE_CONCURRENCY" "${port_of[$p]}"; done ;;
      sleep) note "sleep: GET /sleep?ms=1, HTTP/1.1 keep-alive, $SLEEP_CONCURRENCY connections"
          for p in "${order[@]}"; do measure "$p" sleep "$SLEEP_CONCURRENCY" "${port_of[$p]}"; done ;;
    esac
  done
done

kill -0 "$rip_pid" 2>/dev/null || die "rip-server exited during the run; log: $scratch/rip-server.log"
restarts=$(rip_status_now | python3 -c 'import json, sys; print(json.load(sys.stdin)["restarts"])' || echo '?')

echo
echo "## tls: GET /ping over HTTPS, W=$W, $ROUNDS rounds of ${DURATION}s per run (after ${WARMUP}s warm-up), $(nproc) CPUs"
echo
python3 "$here/summarize.py" tlstable "$results"
echo
echo "rip-server worker restarts during the run: $restarts"
warnings=$(rip_warnings "$scratch/rip-server.log" | grep -c . || true)
echo "rip-server log lines at WARN or ERROR: $warnings"
if ((warnings > 0)); then
  anomaly=1
  rip_warnings "$scratch/rip-server.log" | head -n 20 | sed 's/^/  /'
fi
for n in "${nginx_workers[@]}"; do
  e=$(grep -c '\[error\]' "$scratch/nginx-$n/error.log" || true)
  if ((e > 0)); then
    echo "nginx (worker_processes $n) error.log: $e [error] lines, most common:"
    sed -n 's/.*\[error\] [0-9#]*: \*[0-9]* \([^,]*\),.*/\1/p' "$scratch/nginx-$n/error.log" | sort | uniq -c | sort -rn | head -n 3 | sed 's/^/  /'
  fi
done
if ((anomaly)); then
  echo "rip-server answered non-2xx, failed requests or logged warnings: see above and $scratch"
fi
