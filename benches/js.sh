#!/usr/bin/env bash
# JavaScript workers benchmark: GET /ping of apps/api with keep-alive, per runtime
# (node, and bun when installed), side by side in one run:
#   bare-http   W bare node:http servers answering the same bytes (benches/js/bare-http.mjs,
#               run by that runtime: Bun's node:http under bun), each under oha -c 1 on its
#               Unix socket: the most a JavaScript server does on this kind of socket
#   bare-serve  (bun only) the same with Bun.serve({ unix }) (benches/js/bare-serve.mjs)
#   loader      W loaders (loaders/node.mjs running apps/api, as rip-server starts them),
#               each under oha -c 1 on its socket: the workers' own limit
#   rip-server  rip-server --runtime=R w:W apps/api over TCP on 127.0.0.1, at each CONCURRENCY
# in ROUNDS rounds (each round starts with the next row, so a slow drift of a shared machine
# touches every row alike), then one table: each row's median, and the ratios (taken within
# each round, then their median): loader / bare (for bun: the faster bare server of that
# round), rip-server / loader; the Node workers' memory.
# Targets (issue 13): 1. node loader >= 0.8x bare; 2. bun loader >= 0.8x the faster bare;
# 3. rip-server >= 0.7x the loader, both runtimes, each concurrency.
# Results and method: docs/benchmarks.md.
#
# Settings (environment):
#   W=2                  workers (loaders, bare servers, rip-server w:W)
#   ROUNDS=3             rounds
#   DURATION=5           seconds measured per run
#   WARMUP=1             seconds of discarded load before each measured run
#   CONCURRENCY="16 64"  client connections for the rip-server runs
#   RUNTIMES="node bun"  runtimes to measure; bun is left out (with a note) when not installed
#   THREADS=nproc/2      rip-server's runtime threads (--threads)
#   RIP_ARGS="r:0 --reload=none"  extra rip-server arguments (recycling off: as benches/load.sh)
#   BIN_DIR=target/release  where rip-server is; built (CARGO_TARGET_DIR=BIN_DIR/..) if missing
#                        or if BUILD=1. The loader run directly is this checkout's
#                        loaders/node.mjs, the one the binary embeds when built from it.
#   OHA=oha              oha's path (needed: it loads Unix sockets; cargo install oha --locked)
#   WAIT_QUIET=60 QUIET_PCT=10  wait up to WAIT_QUIET s before each run for other work on the
#                        machine to fall to QUIET_PCT % CPU; each row shows the other CPU %
#   KEEP=0               1 keeps the scratch directory (logs, raw JSON)
#
# Every process this script starts is recorded by PID and stopped by PID on exit (rip-server's
# workers too, if it left any). Traffic stays on 127.0.0.1 and Unix sockets in a private
# mktemp dir; each run is bounded by DURATION.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"
js="$root/benches/js"

W=${W:-2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-16 64}
RUNTIMES=${RUNTIMES:-node bun}
THREADS=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
RIP_ARGS=${RIP_ARGS:-r:0 --reload=none}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
WAIT_QUIET=${WAIT_QUIET:-60}
QUIET_PCT=${QUIET_PCT:-10}
KEEP=${KEEP:-0}
APP="$root/apps/api"
LOADER="$root/loaders/node.mjs"

prog=js.sh
source "$here/lib.sh"

for v in W ROUNDS DURATION THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, got '${!v}'"
done
for v in WARMUP WAIT_QUIET QUIET_PCT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
read -r -a concurrencies <<<"$CONCURRENCY"
((${#concurrencies[@]} > 0)) || die "CONCURRENCY is empty"
for c in "${concurrencies[@]}"; do
  [[ $c =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY holds '$c', not a positive whole number"
done
read -r -a rip_args <<<"$RIP_ARGS"
runtimes=()
for r in $RUNTIMES; do
  case $r in
    node | bun) ;;
    *) die "RUNTIMES holds '$r': expected node and/or bun" ;;
  esac
  if command -v "$r" >/dev/null; then runtimes+=("$r")
  elif [[ $r == node ]]; then die "node is not on PATH"
  else note "bun is not on PATH (npm install -g bun): its rows are left out"
  fi
done
((${#runtimes[@]} > 0)) || die "RUNTIMES is empty"
for tool in python3 curl ss; do
  command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"
done
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found at '$OHA' (cargo install oha --locked); wrk cannot load a Unix socket"

rip="$BIN_DIR/rip-server"
ensure_built "$rip"

bench_init rip-js # scratch directory, traps (benches/load/lib.sh)
results="$scratch/results.tsv"
: >"$results"

# ---------------------------------------------------------------- processes

declare -A sockets_of=() # "RUNTIME ROW" -> its W sockets, space-separated
declare -A pids_of=()    # "RUNTIME ROW" -> the processes whose CPU time the row reports
declare -A port_of=()    # RUNTIME -> its rip-server's port

# start_direct RUNTIME ROW SCRIPT [ENV...]: W processes `RUNTIME SCRIPT`, each on its own
# socket in $scratch/RUNTIME-ROW/, with the environment rip-server gives a worker.
start_direct() {
  local runtime=$1 row=$2 script=$3 dir="$scratch/$1-$2" i socks=() own=()
  shift 3
  mkdir -p "$dir"
  for ((i = 1; i <= W; i++)); do
    env RIP_SOCKET="$dir/w$i.sock" RIP_WORKER_ID=$i RIP_VERSION=0 RIP_APP_DIR="$APP" \
      RIP_ENTRY="$APP/index.mjs" RIP_RELOAD=none "$@" "$runtime" "$script" \
      </dev/null >"$dir/w$i.log" 2>&1 &
    pids+=("$!")
    own+=("$!")
    wait_until "$!" "$dir/w$i.log" 20 "$runtime $row $i" ping_unix "$dir/w$i.sock"
    socks+=("$dir/w$i.sock")
  done
  sockets_of["$runtime $row"]="${socks[*]}"
  pids_of["$runtime $row"]="${own[*]}"
}

# ---------------------------------------------------------------- load runs

# start_load OUT CONNECTIONS SECONDS PORT|unix:SOCKET: oha in the background (recorded in
# pids, so the EXIT trap can stop it); sets load_pid.
start_load() {
  local out=$1 conns=$2 secs=$3 target=$4 url args=()
  if [[ $target == unix:* ]]; then
    url="http://localhost/ping"
    args+=(--unix-socket "${target#unix:}" --worker-threads 1)
  else
    url="http://127.0.0.1:$target/ping"
  fi
  # -w: requests in flight at the deadline finish instead of counting as errors
  "$OHA" "${args[@]}" -z "${secs}s" -c "$conns" -w --no-tui --output-format json "$url" \
    >"$out" 2>"$out.err" &
  load_pid=$!
  pids+=("$load_pid")
}

# measure RUNTIME ROW: one warm-up and one measured run of a row, one results line
# (runtime, then benches/load/summarize.py's row, the other CPU %, the round and the CPU
# seconds of the row's own processes: the servers for direct rows, rip-server and its
# workers for rip-server rows).
measure() {
  local runtime=$1 row=$2 conc phase secs i targets=() outs=() started=() snap0 cpu0 own
  settle
  if [[ $row == rip-server-c* ]]; then
    conc=${row#rip-server-c}
    targets=("$(port_of_rip "$runtime")")
    own="${pids_of["$runtime rip-server"]}"
  else
    conc="${W}x1"
    for s in ${sockets_of["$runtime $row"]}; do targets+=("unix:$s"); done
    own="${pids_of["$runtime $row"]}"
  fi
  for phase in warmup run; do
    secs=$DURATION
    if [[ $phase == warmup ]]; then
      ((WARMUP > 0)) || continue
      secs=$WARMUP
    fi
    started=()
    outs=()
    if [[ $phase == run ]]; then
      snap0=$(cpu_snap)
      cpu0=$(proc_cpu $own)
    fi
    for ((i = 0; i < ${#targets[@]}; i++)); do
      outs+=("$scratch/$runtime-$row-$phase-$i-r$round.json")
      if [[ $row == rip-server-c* ]]; then start_load "${outs[i]}" "$conc" "$secs" "${targets[i]}"
      else start_load "${outs[i]}" 1 "$secs" "${targets[i]}"
      fi
      started+=("$load_pid")
    done
    for ((i = 0; i < ${#started[@]}; i++)); do finish_load "${started[i]}" "${outs[i]}"; done
  done
  cpu_s=$(cpu_delta "$cpu0" "$(proc_cpu $own)")
  local snap1
  snap1=$(cpu_snap)
  busy_now=$(other_cpu "$snap0" "$snap1")
  machine_s=$(machine_cpu "$snap0" "$snap1")
  local name=${row%-c*}
  python3 "$here/summarize.py" row "$name" "${conc}" "${outs[@]}" |
    sed "s/^/$runtime\t/; s/\$/\t$busy_now\t$round\t$cpu_s\t$machine_s/" | tee -a "$results" |
    awk -F'\t' '{ printf "#   %-4s %-10s c=%-4s %8s req/s  p99 %6s ms  non-2xx %s  errors %s  (other processes: %s%% CPU)\n", $1, $2, $3, $4, $6, $7, $8, $10 }'
  local line
  line=$(tail -n 1 "$results")
  if [[ $(cut -f7 <<<"$line") != 0 || $(cut -f8 <<<"$line") != 0 ]]; then
    anomaly=1
    echo "js.sh: $runtime $row: non-2xx answers or errors:" >&2
    python3 "$here/summarize.py" detail "${outs[@]}" >&2
  fi
}

port_of_rip() { echo "${port_of[$1]}"; }

# rss_line RUNTIME ROW: "VmRSS a, b MiB (VmHWM c, d MiB)" of the row's processes
rss_line() {
  local pid rss=() hwm=()
  for pid in ${pids_of["$1 $2"]}; do
    rss+=("$(awk -v k="$(rss_kib "$pid" VmRSS)" 'BEGIN { printf "%.1f", k / 1024 }')")
    hwm+=("$(awk -v k="$(rss_kib "$pid" VmHWM)" 'BEGIN { printf "%.1f", k / 1024 }')")
  done
  local IFS=,
  echo "VmRSS ${rss[*]} MiB (VmHWM ${hwm[*]} MiB)"
}

# ---------------------------------------------------------------- run

bench_header "rip-server JavaScript workers benchmark: GET /ping of apps/api, keep-alive, oha" \
  "$(settings BIN_DIR W ROUNDS DURATION WARMUP CONCURRENCY RUNTIMES THREADS RIP_ARGS WAIT_QUIET QUIET_PCT) benches/js.sh"
note "load: $("$OHA" --version); node $(node --version)$(command -v bun >/dev/null && echo ", bun $(bun --version)")"
settle # is the machine quiet to begin with?

rows=()
for r in "${runtimes[@]}"; do
  start_direct "$r" bare-http "$js/bare-http.mjs"
  rows+=("$r bare-http")
  if [[ $r == bun ]]; then
    start_direct "$r" bare-serve "$js/bare-serve.mjs"
    rows+=("$r bare-serve")
  fi
  start_direct "$r" loader "$LOADER"
  rows+=("$r loader")
  known=${#grandchildren[@]}
  start_rip "js-$r" http "$W" "$scratch/rip-$r.log" "$APP" "w:$W" http:0 --no-access-log \
    --runtime="$r" "${rip_args[@]}"
  wait_until "$rip_pid" "$scratch/rip-$r.log" 5 "rip-server ($r) on port $rip_port" ping_tcp "$rip_port"
  grep -q "fetch handler ($r loader)" "$scratch/rip-$r.log" || die "rip-server --runtime=$r did not start the $r loader: $(head -n 3 "$scratch/rip-$r.log")"
  port_of[$r]=$rip_port
  pids_of["$r rip-server"]="$rip_pid $(for g in "${grandchildren[@]:known}"; do echo "${g%% *}"; done | xargs)"
  for c in "${concurrencies[@]}"; do rows+=("$r rip-server-c$c"); done
  note "$r: rip-server pid $rip_pid on 127.0.0.1:$rip_port"
done

for ((round = 1; round <= ROUNDS; round++)); do
  mapfile -t order < <(rotate $((round - 1)) "${rows[@]}")
  note "round $round of $ROUNDS"
  for row in "${order[@]}"; do measure ${row}; done
done

echo
echo "## JavaScript workers: GET /ping of apps/api, W=$W, $ROUNDS rounds of ${DURATION}s per run (after ${WARMUP}s warm-up), oha, $(nproc) CPUs"
echo
python3 "$here/summarize.py" jstable "$results"
echo
for r in "${runtimes[@]}"; do
  echo "$r workers' memory after the run: loader $(rss_line "$r" loader); bare-http $(rss_line "$r" bare-http)"
done
for r in "${runtimes[@]}"; do
  warnings=$(rip_warnings "$scratch/rip-$r.log" | grep -c . || true)
  if ((warnings > 0)); then
    anomaly=1
    echo "rip-server ($r) logged $warnings lines at WARN or ERROR:"
    rip_warnings "$scratch/rip-$r.log" | head -n 10 | sed 's/^/  /'
  fi
done
if ((anomaly)); then echo "non-2xx answers, failed requests or warnings: see above and $scratch"; fi
