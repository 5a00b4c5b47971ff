#!/usr/bin/env bash
# Load benchmark: GET /ping with keep-alive, side by side in one run,
#   1. limit      W load generators, each -c 1 straight to one worker's socket
#   2. rip-server w:W, over TCP on 127.0.0.1, at each CONCURRENCY
#   3. haproxy    the same example worker binary behind HAProxy (one `server`
#                 line per worker socket, maxconn 1, queueing), at each CONCURRENCY,
#                 with nbthread = rip-server's threads and with nbthread 1
# then the table, the ratios and rip-server's entry-process memory.
# Results and method: docs/benchmarks.md.
#
# Settings (environment):
#   W=2                  workers (rip-server w:W; W standalone workers for limit/HAProxy)
#   DURATION=10          seconds measured per run
#   WARMUP=2             seconds of discarded load before each measured run
#   CONCURRENCY="16 64"  client connections for the rip-server and HAProxy runs
#   THREADS=$(nproc)     rip-server's runtime threads (TOKIO_WORKER_THREADS) = HAProxy nbthread
#   HAPROXY_NBTHREADS="$THREADS 1"  one HAProxy (row "haproxy-Nt") per nbthread value; the
#                        ratios are taken against the best of them (see docs/benchmarks.md)
#   HAPROXY_BALANCE=leastconn   HAProxy's balance algorithm
#   RIP_ARGS="r:0 --reload=none"  extra rip-server arguments (see docs/benchmarks.md)
#   BIN_DIR=target/release  where rip-server and rip-example-worker are; built
#                        (CARGO_TARGET_DIR=BIN_DIR/..) if missing or if BUILD=1
#   LOADGEN=oha|wrk      load generator (default: oha if found, else wrk)
#   OHA=oha  WRK=wrk     their paths
#   WAIT_QUIET=60        before each run, wait up to this many seconds for other work on
#   QUIET_PCT=10         the machine to fall to QUIET_PCT % CPU busy. Each row shows how
#                        much CPU other processes took during its measured run ("other CPU %")
#   KEEP=0               1 keeps the scratch directory (logs, raw JSON); kept
#                        anyway when rip-server answers non-2xx or errors
#
# Every process this script starts is recorded by PID and stopped by PID on
# exit. Traffic stays on 127.0.0.1 and Unix sockets in a private mktemp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"

W=${W:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONCURRENCY=${CONCURRENCY:-16 64}
THREADS=${THREADS:-$(nproc)}
HAPROXY_NBTHREADS=${HAPROXY_NBTHREADS:-$THREADS 1}
HAPROXY_BALANCE=${HAPROXY_BALANCE:-leastconn}
RIP_ARGS=${RIP_ARGS:-r:0 --reload=none}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
WAIT_QUIET=${WAIT_QUIET:-60}
QUIET_PCT=${QUIET_PCT:-10}
KEEP=${KEEP:-0}
URL_PATH=/ping

die() { echo "load.sh: $*" >&2; exit 2; }
note() { echo "# $*"; }

[[ $W =~ ^[1-9][0-9]*$ ]] || die "W must be a positive whole number, got '$W'"
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
if [[ $BUILD == 1 || ! -x $rip || ! -x $worker ]]; then
  [[ $(basename "$BIN_DIR") == release ]] || die "BIN_DIR must end in /release to be built, or hold both binaries"
  note "building: CARGO_TARGET_DIR=$(dirname "$BIN_DIR") cargo build --release --bins"
  (cd "$root" && CARGO_TARGET_DIR=$(dirname "$BIN_DIR") cargo build --release --bins) >&2
fi

# ---------------------------------------------------------------- processes

scratch=$(mktemp -d /tmp/rip-load.XXXXXX)
pids=()      # everything started here, stopped by PID on exit
anomaly=0

forget() { # PID: drop a process that has been waited for
  local keep=() p
  for p in "${pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  pids=("${keep[@]}")
}

stop_pids() { # PID...: SIGTERM, up to 5 s to exit, then SIGKILL
  local pid i
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

rip_children=() # rip-server's workers (grandchildren): stopped if rip-server left them behind

cleanup() {
  local rc=$? pid live=()
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    stop_pids "${pids[@]}"
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  for pid in "${rip_children[@]}"; do
    # only if that PID is still our worker binary (not a reused PID)
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$worker")" ]]; then live+=("$pid"); fi
  done
  if ((${#live[@]})); then
    echo "load.sh: rip-server left workers ${live[*]} behind; stopping them" >&2
    stop_pids "${live[@]}"
  fi
  if [[ $KEEP == 1 || $anomaly == 1 ]]; then
    echo "load.sh: logs and raw results kept in $scratch" >&2
  else
    rm -rf "$scratch"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_until() { # PID LOG SECONDS DESCRIPTION COMMAND...: poll COMMAND every 50 ms while PID lives
  local pid=$1 log=$2 deadline=$((SECONDS + $3)) what=$4
  shift 4
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "$what: the process exited; $log says: $(tail -n 5 "$log")"
    ((SECONDS < deadline)) || die "timed out waiting for $what; $log says: $(tail -n 5 "$log")"
    sleep 0.05
  done
}

free_port() { # a loopback TCP port nobody listens on
  local port i
  for ((i = 0; i < 20; i++)); do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    if [[ -z $(ss -Hltn "sport = :$port") ]]; then echo "$port"; return; fi
  done
  die "no free port found"
}

ping_unix() { [[ $(curl -sf --max-time 1 --unix-socket "$1" "http://localhost$URL_PATH") == pong ]]; }
ping_tcp() { [[ $(curl -sf --max-time 1 "http://127.0.0.1:$1$URL_PATH") == pong ]]; }

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

finish_load() { # PID OUT
  wait "$1" || die "$LOADGEN failed ($2): $(tail -n 3 "$2.err")"
  forget "$1"
}

# measure NAME CONNECTIONS PORT: warm-up, measured run, one results row
measure() {
  local name=$1 conns=$2 target=$3 out="$scratch/$1-c$2.json" sampler='' snap0
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
  start_load "$out" "$conns" "$DURATION" "$target"
  finish_load "$load_pid" "$out"
  busy_now=$(other_cpu "$snap0" "$(cpu_snap)")
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
  local i phase secs out outs=() started=() snap0
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
  busy_now=$(other_cpu "$snap0" "$(cpu_snap)")
  python3 "$here/summarize.py" row limit "${W}x1" "${outs[@]}" | add_busy | tee -a "$results" | row_echo
  check_clean limit "${outs[@]}"
}

add_busy() { sed "s/\$/\t$busy_now/"; }
row_echo() { awk -F'\t' '{ printf "#   %-10s c=%-5s %8s req/s  p50 %7s ms  p99 %7s ms  non-2xx %s  errors %s  (other processes: %s%% CPU)\n", $1, $2, $3, $4, $5, $6, $7, $8 }'; }

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

# ------------------------------------------------------------- other load

# Everything here shares the CPUs with the load generator; anything else that
# runs (a build, a test suite) skews the numbers. Between runs our own
# processes are idle, so the CPU busy then is someone else's.
cpu_busy() { # percent of all CPUs busy over half a second
  python3 -c '
import time
def snap():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v)
i0, t0 = snap(); time.sleep(0.5); i1, t1 = snap()
print(round(100 * (1 - (i1 - i0) / max(t1 - t0, 1))))'
}

# cpu_snap: "ALL BUSY OURS" in clock ticks: all CPUs' capacity and busy time
# since boot (/proc/stat), and the CPU time of this script's processes: those
# alive (pids, rip-server's workers) plus those already reaped (the load
# generators, counted in this shell's cutime/cstime).
cpu_snap() {
  python3 - "$$" "${pids[@]}" "${rip_children[@]}" <<'PY'
import sys
with open("/proc/stat") as f:
    v = [int(x) for x in f.readline().split()[1:]]
total, idle = sum(v[:8]), v[3] + v[4]
def ticks(pid, fields):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(stat[i - 3]) for i in fields)  # field numbers as in proc(5)
ours = ticks(sys.argv[1], (16, 17)) + sum(ticks(p, (14, 15, 16, 17)) for p in set(sys.argv[2:]))
print(total, total - idle, ours)
PY
}

# other_cpu BEFORE AFTER: % of all CPUs used by other processes in between
other_cpu() {
  local t0 b0 o0 t1 b1 o1
  read -r t0 b0 o0 <<<"$1"
  read -r t1 b1 o1 <<<"$2"
  awk -v t=$((t1 - t0)) -v o=$(((b1 - b0) - (o1 - o0))) 'BEGIN { p = t > 0 ? 100 * o / t : 0; printf "%.0f", p < 0 ? 0 : p }'
}

# settle: sets busy_now; waits up to WAIT_QUIET seconds for it to be at most QUIET_PCT
settle() {
  local deadline=$((SECONDS + WAIT_QUIET)) waited=0
  busy_now=$(cpu_busy)
  while ((busy_now > QUIET_PCT && SECONDS < deadline)); do
    ((waited)) || note "the machine is ${busy_now}% busy with other work; waiting up to ${WAIT_QUIET}s for it to settle"
    waited=1
    sleep 2
    busy_now=$(cpu_busy)
  done
  if ((busy_now > QUIET_PCT)); then
    echo "load.sh: warning: the machine is ${busy_now}% busy with other work before this run; its numbers are skewed" >&2
  fi
}

# ------------------------------------------------------------- memory

rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# sample_rss PID FILE: VmRSS every 100 ms until killed (or PID exits)
sample_rss() {
  while [[ -r /proc/$1/status ]]; do
    rss_kib "$1" VmRSS >>"$2" || return 0
    sleep 0.1
  done
}

# ------------------------------------------------------------- run

note "rip-server load benchmark: GET $URL_PATH, keep-alive, $LOADGEN"
note "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)"
note "rip-server: $rip ($(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- src Cargo.toml Cargo.lock loaders 2>/dev/null || echo "+uncommitted changes"))"
note "haproxy: $(haproxy -v | head -n 1)"
if [[ $LOADGEN == oha ]]; then note "load: $("$OHA" --version)"; else note "load: wrk (oha not found; no limit row: wrk cannot use Unix sockets)"; fi
note "W=$W DURATION=${DURATION}s WARMUP=${WARMUP}s CONCURRENCY=\"${concurrencies[*]}\" THREADS=$THREADS HAPROXY_NBTHREADS=\"${haproxy_nbthreads[*]}\" HAPROXY_BALANCE=$HAPROXY_BALANCE RIP_ARGS=\"$RIP_ARGS\""

settle  # is the machine quiet to begin with?

# W standalone example workers: behind HAProxy, and alone for the limit.
mkdir -p "$scratch/w"
for ((i = 1; i <= W; i++)); do
  RIP_SOCKET="$scratch/w/w$i.sock" RIP_WORKER_ID=$i RIP_VERSION=0 "$worker" \
    </dev/null >"$scratch/w/w$i.log" 2>&1 &
  pids+=("$!")
  wait_until "$!" "$scratch/w/w$i.log" 10 "worker $i" ping_unix "$scratch/w/w$i.sock"
done

# One HAProxy per nbthread value, as configured in benches/load/haproxy.cfg.in,
# all in front of the same W workers (only one is under load at a time).
declare -A haproxy_port=()
for t in "${haproxy_nbthreads[@]}"; do
  port=$(free_port)
  cfg="$scratch/haproxy-${t}t.cfg"
  {
    sed -e "s/@NBTHREAD@/$t/" -e "s/@PORT@/$port/" -e "s/@BALANCE@/$HAPROXY_BALANCE/" "$here/haproxy.cfg.in"
    for ((i = 1; i <= W; i++)); do
      echo "    server w$i unix@$scratch/w/w$i.sock maxconn 1"
    done
  } >"$cfg"
  haproxy -c -q -f "$cfg" || die "haproxy rejected $cfg"
  haproxy -db -f "$cfg" </dev/null >"${cfg%.cfg}.log" 2>&1 &
  pids+=("$!")
  wait_until "$!" "${cfg%.cfg}.log" 10 "haproxy (nbthread $t) on port $port" ping_tcp "$port"
  haproxy_port[$t]=$port
done

# rip-server with its own W workers (same binary) on a kernel-chosen port.
export XDG_RUNTIME_DIR="$scratch/xdg"
mkdir -m 700 "$XDG_RUNTIME_DIR"
TOKIO_WORKER_THREADS=$THREADS "$rip" "$worker" "w:$W" http:0 --no-access-log --name bench "${rip_args[@]}" \
  </dev/null >"$scratch/rip-server.log" 2>&1 &
rip_pid=$!
pids+=("$rip_pid")
wait_until "$rip_pid" "$scratch/rip-server.log" 10 "rip-server's port" grep -q '^listening on http://localhost:[0-9]*$' "$scratch/rip-server.log"
rip_port=$(sed -n 's|^listening on http://localhost:\([0-9]*\)$|\1|p' "$scratch/rip-server.log")
ctl="$XDG_RUNTIME_DIR/rip-server/bench.ctl.sock"
rip_ready() {
  curl -sf --max-time 1 --unix-socket "$ctl" http://localhost/status >"$scratch/status.json" &&
    python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(s["pool"]["idle"] != int(sys.argv[2]))' \
      "$scratch/status.json" "$W"
}
wait_until "$rip_pid" "$scratch/rip-server.log" 20 "rip-server's $W workers" rip_ready
wait_until "$rip_pid" "$scratch/rip-server.log" 5 "rip-server on port $rip_port" ping_tcp "$rip_port"
mapfile -t rip_children < <(python3 -c 'import json, sys; [print(w["pid"]) for w in json.load(open(sys.argv[1]))["workers"]]' "$scratch/status.json")
rss_idle=$(rss_kib "$rip_pid" VmRSS)
note "rip-server pid $rip_pid on 127.0.0.1:$rip_port (workers ${rip_children[*]})"
for t in "${haproxy_nbthreads[@]}"; do note "haproxy nbthread $t on 127.0.0.1:${haproxy_port[$t]}"; done

if [[ $LOADGEN == oha ]]; then
  note "limit: $W x oha -c 1 --unix-socket (one per worker)"
  measure_limit
fi
for c in "${concurrencies[@]}"; do
  note "c=$c"
  measure rip-server "$c" "$rip_port"
  for t in "${haproxy_nbthreads[@]}"; do
    measure "haproxy-${t}t" "$c" "${haproxy_port[$t]}"
  done
done
sleep 2
rss_after=$(rss_kib "$rip_pid" VmRSS)
rss_hwm=$(rss_kib "$rip_pid" VmHWM)
rss_peak=$(cat "$scratch"/rss-c*.samples | sort -n | tail -n 1)

kill -0 "$rip_pid" 2>/dev/null || die "rip-server exited during the run; log: $scratch/rip-server.log"
restarts=$(curl -sf --unix-socket "$ctl" http://localhost/status | python3 -c 'import json, sys; print(json.load(sys.stdin)["restarts"])' || echo '?')

echo
echo "## load: GET $URL_PATH, W=$W, ${DURATION}s per run (after ${WARMUP}s warm-up), $LOADGEN, $(nproc) CPUs"
echo
python3 "$here/summarize.py" table "$results"
echo
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
echo "rip-server entry process (pid $rip_pid): VmRSS idle $(mib "$rss_idle"), peak under load $(mib "$rss_peak"), 2 s after load $(mib "$rss_after"); VmHWM $(mib "$rss_hwm") (target < 20 MiB)"
echo "rip-server worker restarts during the run: $restarts"
if ((anomaly)); then
  echo "rip-server answered non-2xx or failed requests: see above and $scratch"
fi
