#!/usr/bin/env bash
# Load benchmark: GET /ping with keep-alive, side by side in one run,
#   1. limit      W load generators, each -c 1 straight to one worker's socket
#   2. rip-server w:W, over TCP on 127.0.0.1, at each CONCURRENCY
#   3. haproxy    the same example worker binary behind HAProxy (one `server`
#                 line per worker socket, maxconn 1, queueing), at each CONCURRENCY,
#                 with nbthread = the CPU count and = rip-server's threads (and 1)
#   4. rip-defaults  (DEFAULTS=1) a second rip-server with its default policy
#                 (r:10000,3600s,10r, --reload=process) instead of RIP_ARGS: what
#                 the defaults cost
#   5. self-rip / self-nginx  (SELF=1) GET /server, rip-server's own answer, against
#                 nginx's `return 200` (nginx with worker_processes = THREADS): the
#                 cost of rip-server's front end with no worker behind it
# in ROUNDS rounds (2 and 3 alternate, each round starting with the next row,
# so a slow drift of a shared machine touches every row alike), then the
# medians, the ratios (taken within each round: requests/s, p50, p99 and the
# proxy's own CPU per request), the headroom each proxy's cost leaves (what
# even a proxy costing nothing could gain here, from the machine's CPU per
# answer), and rip-server's entry-process memory.
# Results and method: docs/benchmarks.md.
#
# Settings (environment):
#   W=2                  workers (rip-server w:W; W standalone workers for limit/HAProxy)
#   ROUNDS=3             rounds of rows 2 and 3 (the limit is measured once)
#   DURATION=6           seconds measured per run
#   WARMUP=2             seconds of discarded load before each measured run
#   CONCURRENCY="16 64"  client connections for the rip-server and HAProxy runs
#   THREADS=nproc/2      rip-server's runtime threads (--threads; its own default: half
#                        the cores, at least 1)
#   HAPROXY_NBTHREADS="$(nproc) $THREADS 1"  one HAProxy (row "haproxy-Nt") per nbthread
#                        value, repeats dropped; the
#                        ratios are taken against the best of them (see docs/benchmarks.md)
#   HAPROXY_BALANCE=leastconn   HAProxy's balance algorithm
#   RIP_ARGS="r:0 --reload=none"  extra rip-server arguments (see docs/benchmarks.md)
#   BASELINE_BIN_DIR     another build's directory (holding rip-server): its rip-server runs
#                        beside this one, with the same workers binary and arguments, as row
#                        "rip-base" in every round, so a change is measured side by side
#                        against the build before it (BASELINE_COMMIT names it in the header)
#   DEFAULTS=1           measure row 4 (0: skip it)
#   SELF=1               measure rows 5 (0: skip them; needs nginx)
#   BIN_DIR=target/release  where rip-server and rip-example-worker are; built
#                        (CARGO_TARGET_DIR=BIN_DIR/..) if missing or if BUILD=1
#   LOADGEN=oha|wrk      load generator (default: oha if found, else wrk)
#   OHA=oha  WRK=wrk     their paths
#   WAIT_QUIET=60        before each run, wait up to this many seconds for other work on
#   QUIET_PCT=10         the machine to fall to QUIET_PCT % CPU busy. Each row shows how
#                        much CPU other processes took during its measured run ("other CPU %")
#   RIP_COMMIT           the commit the binary was built from, for the header (default:
#                        this checkout's HEAD, marked if src/ has uncommitted changes)
#   KEEP=0               1 keeps the scratch directory (logs, raw JSON); kept
#                        anyway when rip-server answers non-2xx or errors
#
# Every process this script starts is recorded by PID and stopped by PID on
# exit. Traffic stays on 127.0.0.1 and Unix sockets in a private mktemp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"

W=${W:-2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-16 64}
THREADS=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
HAPROXY_NBTHREADS=${HAPROXY_NBTHREADS:-$(nproc) $THREADS 1}
HAPROXY_BALANCE=${HAPROXY_BALANCE:-leastconn}
RIP_ARGS=${RIP_ARGS:-r:0 --reload=none}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
WAIT_QUIET=${WAIT_QUIET:-60}
QUIET_PCT=${QUIET_PCT:-10}
KEEP=${KEEP:-0}
URL_PATH=/ping
DEFAULTS=${DEFAULTS:-1}
SELF=${SELF:-1}

prog=load.sh
source "$here/lib.sh"

[[ $W =~ ^[1-9][0-9]*$ ]] || die "W must be a positive whole number, got '$W'"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive whole number, got '$ROUNDS'"
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION must be whole seconds, got '$DURATION'"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds, got '$WARMUP'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive whole number, got '$THREADS'"
[[ $WAIT_QUIET =~ ^[0-9]+$ ]] || die "WAIT_QUIET must be whole seconds, got '$WAIT_QUIET'"
[[ $QUIET_PCT =~ ^[0-9]+$ ]] || die "QUIET_PCT must be a whole percentage, got '$QUIET_PCT'"
read -r -a concurrencies <<<"$CONCURRENCY"
((${#concurrencies[@]} > 0)) || die "CONCURRENCY is empty"
for c in "${concurrencies[@]}"; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY holds '$c', not a positive whole number"
done
read -r -a rip_args <<<"$RIP_ARGS"
read -r -a haproxy_nbthreads <<<"$HAPROXY_NBTHREADS"
((${#haproxy_nbthreads[@]} > 0)) || die "HAPROXY_NBTHREADS is empty"
for t in "${haproxy_nbthreads[@]}"; do
  [[ $t =~ ^[1-9][0-9]*$ ]] || die "HAPROXY_NBTHREADS holds '$t', not a positive whole number"
done
# drop repeats ("1 1" when THREADS=1), keep the order
mapfile -t haproxy_nbthreads < <(printf '%s\n' "${haproxy_nbthreads[@]}" | awk '!seen[$0]++')

[[ $DEFAULTS =~ ^[01]$ && $SELF =~ ^[01]$ ]] || die "DEFAULTS and SELF must be 0 or 1"
((SELF == 0)) || command -v nginx >/dev/null || die "nginx is needed for SELF=1 (apt install nginx), or set SELF=0"
for tool in haproxy python3 curl ss; do
  command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"
done

OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
WRK=${WRK:-$(command -v wrk || true)}
if [[ -z ${LOADGEN:-} ]]; then
  if [[ -x $OHA ]]; then LOADGEN=oha
  elif [[ -n $WRK ]]; then LOADGEN=wrk
  else die "neither oha (cargo install oha --locked) nor wrk found"
  fi
fi
case $LOADGEN in
  oha) [[ -x $OHA ]] || die "oha not found at '$OHA' (cargo install oha --locked)" ;;
  wrk) [[ -n $WRK && -x $WRK ]] || die "wrk not found" ;;
  *) die "LOADGEN must be oha or wrk, got '$LOADGEN'" ;;
esac

rip="$BIN_DIR/rip-server"
worker="$BIN_DIR/rip-example-worker"
BASELINE_BIN_DIR=${BASELINE_BIN_DIR:-}
if [[ -n $BASELINE_BIN_DIR ]]; then
  [[ -x $BASELINE_BIN_DIR/rip-server ]] || die "BASELINE_BIN_DIR=$BASELINE_BIN_DIR holds no rip-server"
fi
ensure_built "$rip" "$worker"

# ---------------------------------------------------------------- processes

bench_init rip-load   # scratch directory, traps (benches/load/lib.sh)

# ------------------------------------------------------------- load runs

results="$scratch/results.tsv"
: >"$results"

# start_load OUT CONNECTIONS SECONDS PORT|unix:SOCKET [oha worker threads]
# Starts the load generator in the background (recorded in pids, so the EXIT
# trap can stop it) and sets load_pid; finish_load waits for it.
start_load() {
  local out=$1 conns=$2 secs=$3 target=$4 threads=${5:-} url args=()
  if [[ $target == unix:* ]]; then
    [[ $LOADGEN == oha ]] || die "wrk cannot load a Unix socket"
    url="http://localhost$URL_PATH"
    args+=(--unix-socket "${target#unix:}")
  else
    url="http://127.0.0.1:$target$URL_PATH"
  fi
  if [[ $LOADGEN == oha ]]; then
    # -w: requests in flight at the deadline finish instead of counting as errors
    args+=(-z "${secs}s" -c "$conns" -w --no-tui --output-format json)
    if [[ -n $threads ]]; then args+=(--worker-threads "$threads"); fi
    "$OHA" "${args[@]}" "$url" >"$out" 2>"$out.err" &
  else
    "$WRK" -d "${secs}s" -c "$conns" -t "$((conns < THREADS ? conns : THREADS))" \
      -s "$here/wrk-report.lua" "$url" >"$out" 2>"$out.err" &
  fi
  load_pid=$!
  pids+=("$load_pid")
}

# measure NAME CONNECTIONS PORT: warm-up, measured run, one results row (with
# the CPU seconds the proxy's own processes, proxy_pids[NAME], used meanwhile)
measure() {
  local name=$1 conns=$2 target=$3 out="$scratch/$1-c$2-r$round.json" sampler='' snap0 snap1 cpu0 workers workers0
  # the self-* rows ask for GET /server (start_load reads URL_PATH)
  local URL_PATH=$URL_PATH
  if [[ $name == self-* ]]; then URL_PATH=/server; fi
  settle
  if [[ $name == rip-server ]]; then # its memory, during warm-up and run
    sample_rss "$rip_pid" "$scratch/rss-c$conns.samples" &
    sampler=$!
    pids+=("$sampler")
  fi
  if ((WARMUP > 0)); then
    start_load "$scratch/warmup.json" "$conns" "$WARMUP" "$target"
    finish_load "$load_pid" "$scratch/warmup.json"
  fi
  snap0=$(cpu_snap)
  cpu0=$(proc_cpu ${proxy_pids[$name]})
  workers=$(row_workers "$name" "${proxy_pids[$name]%% *}")
  workers0=$(proc_cpu $workers)
  start_load "$out" "$conns" "$DURATION" "$target"
  finish_load "$load_pid" "$out"
  cpu_s=$(cpu_delta "$cpu0" "$(proc_cpu ${proxy_pids[$name]})")
  workers_s=$(cpu_delta "$workers0" "$(proc_cpu $workers)" | cut -f1)
  snap1=$(cpu_snap)
  busy_now=$(other_cpu "$snap0" "$snap1")
  machine_s=$(machine_cpu "$snap0" "$snap1")
  if [[ -n $sampler ]]; then
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    forget "$sampler"
  fi
  python3 "$here/summarize.py" row "$name" "$conns" "$out" | add_busy | tee -a "$results" | row_echo
  check_clean "$name" "$out"
}

# measure_limit: W generators in parallel, each -c 1 (one thread) on one
# worker's socket; the most any proxy in front of these workers could reach.
measure_limit() {
  local i phase secs out outs=() started=() snap0 snap1
  settle
  for phase in warmup limit; do
    secs=$DURATION
    if [[ $phase == warmup ]]; then
      ((WARMUP > 0)) || continue
      secs=$WARMUP
    fi
    started=()
    outs=()
    snap0=$(cpu_snap)
    for ((i = 1; i <= W; i++)); do
      out="$scratch/$phase-w$i.json"
      start_load "$out" 1 "$secs" "unix:$scratch/w/w$i.sock" 1
      started+=("$load_pid")
      outs+=("$out")
    done
    for ((i = 0; i < W; i++)); do finish_load "${started[i]}" "${outs[i]}"; done
  done
  snap1=$(cpu_snap)
  busy_now=$(other_cpu "$snap0" "$snap1")
  machine_s=$(machine_cpu "$snap0" "$snap1")
  cpu_s=$'-\t-'
  workers_s=-
  python3 "$here/summarize.py" row limit "${W}x1" "${outs[@]}" | add_busy | tee -a "$results" | row_echo
  check_clean limit "${outs[@]}"
}

# a summarize.py row, then: other CPU %, round, the proxy's CPU seconds (all,
# and the kernel's part), the whole machine's busy CPU seconds and busy %, the
# workers' CPU seconds
add_busy() { sed "s/\$/\t$busy_now\t$round\t$cpu_s\t$machine_s\t$workers_s/"; }
row_echo() { awk -F'\t' '{ cpu = ($11 == "-" || $8 == 0) ? "-" : sprintf("%.1f", $11 * 1e6 / $8)
  printf "#   %-10s c=%-5s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s  errors %s  CPU %s us/request  (other processes: %s%% CPU)\n", $1, $2, $3, $4, $5, $6, $7, cpu, $9 }'; }

check_clean() { # NAME FILE...: report non-2xx answers and errors
  local name=$1
  shift
  local row
  row=$(tail -n 1 "$results")
  if [[ $(cut -f6 <<<"$row") != 0 || $(cut -f7 <<<"$row") != 0 ]]; then
    echo "load.sh: $name: non-2xx answers or errors:" >&2
    python3 "$here/summarize.py" detail "$@" >&2
    if [[ $name == rip-server ]]; then
      anomaly=1
      echo "load.sh: rip-server log tail ($scratch/rip-server.log):" >&2
      tail -n 40 "$scratch/rip-server.log" >&2
    fi
  fi
}

# ------------------------------------------------------------- memory

# sample_rss PID FILE: VmRSS every 100 ms until killed (or PID exits), in KiB.
# One long-lived python process: a shell loop forks awk and sleep every
# 100 ms, and those forks took CPU from the server under test on a small
# machine, during rip-server's rows only.
sample_rss() {
  exec python3 - "$1" "$2" <<'PY'
import sys, time
pid, out = sys.argv[1], sys.argv[2]
with open(out, "a") as samples:
    while True:
        try:
            with open(f"/proc/{pid}/status") as status:
                rss = next((l.split()[1] for l in status if l.startswith("VmRSS:")), None)
        except OSError:
            break
        if rss is None:
            break
        samples.write(rss + "\n")
        samples.flush()
        time.sleep(0.1)
PY
}

# ------------------------------------------------------------- run

bench_header "rip-server load benchmark: GET $URL_PATH, keep-alive, $LOADGEN" \
  "$(settings BIN_DIR W ROUNDS DURATION WARMUP CONCURRENCY THREADS HAPROXY_NBTHREADS HAPROXY_BALANCE RIP_ARGS DEFAULTS SELF LOADGEN WAIT_QUIET QUIET_PCT) benches/load.sh"
if [[ -n $BASELINE_BIN_DIR ]]; then note "rip-base: $BASELINE_BIN_DIR/rip-server (${BASELINE_COMMIT:-?})"; fi
note "haproxy: $(haproxy -v | head -n 1)"
if [[ $LOADGEN == oha ]]; then note "load: $("$OHA" --version)"; else note "load: wrk (oha not found; no limit row: wrk cannot use Unix sockets)"; fi
note "W=$W ROUNDS=$ROUNDS DURATION=${DURATION}s WARMUP=${WARMUP}s CONCURRENCY=\"${concurrencies[*]}\" THREADS=$THREADS HAPROXY_NBTHREADS=\"${haproxy_nbthreads[*]}\" HAPROXY_BALANCE=$HAPROXY_BALANCE RIP_ARGS=\"$RIP_ARGS\""

settle  # is the machine quiet to begin with?

# W standalone example workers: behind HAProxy, and alone for the limit.
start_workers "$scratch/w" "$W" "$worker"

# One HAProxy per nbthread value, as configured in benches/load/haproxy.cfg.in,
# all in front of the same W workers (only one is under load at a time).
declare -A haproxy_port=()
declare -A proxy_pids=()   # each row's proxy processes, for its CPU per request
for t in "${haproxy_nbthreads[@]}"; do
  port=$(free_port)
  cfg="$scratch/haproxy-${t}t.cfg"
  {
    sed -e "s/@NBTHREAD@/$t/" -e "s/@PORT@/$port/" -e "s/@BALANCE@/$HAPROXY_BALANCE/" -e "s/@BIND_OPTS@//" "$here/haproxy.cfg.in"
    for ((i = 1; i <= W; i++)); do
      echo "    server w$i unix@$scratch/w/w$i.sock maxconn 1"
    done
  } >"$cfg"
  haproxy -c -q -f "$cfg" || die "haproxy rejected $cfg"
  haproxy -db -f "$cfg" </dev/null >"${cfg%.cfg}.log" 2>&1 &
  pids+=("$!")
  wait_until "$!" "${cfg%.cfg}.log" 10 "haproxy (nbthread $t) on port $port" ping_tcp "$port"
  haproxy_port[$t]=$port
  proxy_pids[haproxy-${t}t]=$!
done

# rip-server with its own W workers (same binary) on a kernel-chosen port.
start_rip bench http "$W" "$scratch/rip-server.log" "$worker" "w:$W" http:0 --no-access-log "${rip_args[@]}"
wait_until "$rip_pid" "$scratch/rip-server.log" 5 "rip-server on port $rip_port" ping_tcp "$rip_port"
rss_idle=$(rss_kib "$rip_pid" VmRSS)
proxy_pids[rip-server]=$rip_pid
note "rip-server pid $rip_pid on 127.0.0.1:$rip_port (workers $(grandchild_pids | xargs))"
if [[ -n $BASELINE_BIN_DIR ]]; then
  # The baseline build, started the same way; the first one's variables are kept.
  main=("$rip" "$rip_pid" "$rip_port" "$rip_ctl" "$rip_status")
  rip="$BASELINE_BIN_DIR/rip-server"
  mkdir -p "$scratch/base"
  start_rip base http "$W" "$scratch/rip-base.log" "$worker" "w:$W" http:0 --no-access-log "${rip_args[@]}"
  wait_until "$rip_pid" "$scratch/rip-base.log" 5 "rip-base on port $rip_port" ping_tcp "$rip_port"
  base_port=$rip_port
  proxy_pids[rip-base]=$rip_pid
  note "rip-base pid $rip_pid on 127.0.0.1:$base_port"
  rip=${main[0]} rip_pid=${main[1]} rip_port=${main[2]} rip_ctl=${main[3]} rip_status=${main[4]}
fi
if ((DEFAULTS)); then
  # The same build with its default recycling and reload policy.
  main=("$rip_pid" "$rip_port" "$rip_ctl" "$rip_status")
  start_rip defaults http "$W" "$scratch/rip-defaults.log" "$worker" "w:$W" http:0 --no-access-log
  wait_until "$rip_pid" "$scratch/rip-defaults.log" 5 "rip-defaults on port $rip_port" ping_tcp "$rip_port"
  defaults_port=$rip_port
  proxy_pids[rip-defaults]=$rip_pid
  note "rip-defaults pid $rip_pid on 127.0.0.1:$defaults_port (no RIP_ARGS: r:10000,3600s,10r, --reload=process)"
  rip_pid=${main[0]} rip_port=${main[1]} rip_ctl=${main[2]} rip_status=${main[3]}
fi
if ((SELF)); then
  # nginx answering GET /server itself: the peer for rip-server's own /server.
  nginx_dir="$scratch/nginx-self"
  mkdir -p "$nginx_dir/tmp"
  nginx_port=$(free_port)
  nginx_user=$( ((EUID == 0)) && echo "user root;" || true)
  sed -e "s|@USER@|$nginx_user|" -e "s|@WORKERS@|$THREADS|" -e "s|@DIR@|$nginx_dir|g" \
    -e "s|@PORT@|$nginx_port|" "$here/nginx-self.conf.in" >"$nginx_dir/nginx.conf"
  nginx -t -q -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" ||
    die "nginx rejected $nginx_dir/nginx.conf: $(tail -n 3 "$nginx_dir/error.log")"
  nginx -p "$nginx_dir" -c "$nginx_dir/nginx.conf" -e "$nginx_dir/error.log" </dev/null >"$nginx_dir/stdout.log" 2>&1 &
  nginx_master=$!
  pids+=("$nginx_master")
  ping_self() { [[ $(curl -sf --max-time 1 "http://127.0.0.1:$1/server") == ok ]]; }
  wait_until "$nginx_master" "$nginx_dir/error.log" 10 "nginx on port $nginx_port" ping_self "$nginx_port"
  proxy_pids[self-nginx]="$nginx_master $(ps -o pid= --ppid "$nginx_master" | xargs)"
  for p in ${proxy_pids[self-nginx]}; do [[ $p == "$nginx_master" ]] || adopt "$p" "$(readlink "/proc/$p/exe")"; done
  proxy_pids[self-rip]=$rip_pid
  note "nginx (return 200, worker_processes $THREADS) pid $nginx_master on 127.0.0.1:$nginx_port"
fi
for t in "${haproxy_nbthreads[@]}"; do note "haproxy nbthread $t on 127.0.0.1:${haproxy_port[$t]}"; done

round=1
if [[ $LOADGEN == oha ]]; then
  note "limit: $W x oha -c 1 --unix-socket (one per worker)"
  measure_limit
fi
declare -A port_of=([rip-server]=$rip_port)
rows=(rip-server)
if [[ -n $BASELINE_BIN_DIR ]]; then rows+=(rip-base); port_of[rip-base]=$base_port; fi
if ((DEFAULTS)); then rows+=(rip-defaults); port_of[rip-defaults]=$defaults_port; fi
if ((SELF)); then rows+=(self-rip self-nginx); port_of[self-rip]=$rip_port port_of[self-nginx]=$nginx_port; fi
for t in "${haproxy_nbthreads[@]}"; do rows+=("haproxy-${t}t"); port_of[haproxy-${t}t]=${haproxy_port[$t]}; done
for ((round = 1; round <= ROUNDS; round++)); do
  # each round starts with the next row: none is always measured first
  mapfile -t order < <(rotate $((round - 1)) "${rows[@]}")
  for c in "${concurrencies[@]}"; do
    note "round $round of $ROUNDS, c=$c: ${order[*]}"
    for name in "${order[@]}"; do measure "$name" "$c" "${port_of[$name]}"; done
  done
done
sleep 2
rss_after=$(rss_kib "$rip_pid" VmRSS)
rss_hwm=$(rss_kib "$rip_pid" VmHWM)
rss_peak=$(cat "$scratch"/rss-c*.samples | sort -n | tail -n 1)

kill -0 "$rip_pid" 2>/dev/null || die "rip-server exited during the run; log: $scratch/rip-server.log"
restarts=$(rip_status_now | python3 -c 'import json, sys; print(json.load(sys.stdin)["restarts"])' || echo '?')

echo
echo "## load: GET $URL_PATH, W=$W, $ROUNDS rounds of ${DURATION}s per run (after ${WARMUP}s warm-up), $LOADGEN, $(nproc) CPUs"
echo
python3 "$here/summarize.py" table "$results"
echo
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "rip-server entry process (pid $rip_pid): VmRSS idle $(mib "$rss_idle"), peak under load $(mib "$rss_peak"), 2 s after load $(mib "$rss_after"); VmHWM $(mib "$rss_hwm")"
if ((rss_peak < 20 * 1024 && rss_hwm < 20 * 1024)); then memory=met; else memory="**MISSED**"; fi
echo "target, entry process under 20 MiB: $memory (peak $(mib "$rss_peak"), VmHWM $(mib "$rss_hwm"))"
echo "rip-server worker restarts during the run: $restarts"
warnings=$(rip_warnings "$scratch/rip-server.log" | grep -c . || true)
echo "rip-server log lines at WARN or ERROR: $warnings"
if ((warnings > 0)); then
  anomaly=1
  rip_warnings "$scratch/rip-server.log" | head -n 20 | sed 's/^/  /'
fi
if ((anomaly)); then
  echo "rip-server answered non-2xx, failed requests or logged warnings: see above and $scratch"
fi
