# Shared by benches/load.sh, benches/tls.sh and benches/rolls.sh (sourced, not run).
#
# Gives: die/note; a private scratch directory; process bookkeeping (every
# process started is recorded by PID and stopped by PID on exit, Ctrl-C or
# failure; grandchildren such as rip-server's or nginx's workers are recorded
# with their executable and stopped only if that PID still runs it); waiting
# for readiness; free loopback ports; the quiet-machine check and the
# "other CPU %" accounting; rip-server start-up.
#
# The sourcing script sets `prog` (its name, for messages) and KEEP, then calls
# bench_init PREFIX.

die() { echo "$prog: $*" >&2; exit 2; }
note() { echo "# $*"; }

pids=()          # everything started here, stopped by PID on exit
grandchildren=() # "PID EXE": stopped on exit only if PID still runs EXE
anomaly=0        # 1 keeps the scratch directory
scratch=

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

adopt() { # PID EXE: a process we did not start directly but must not leave behind
  grandchildren+=("$1 $(readlink -f "$2")")
}

grandchild_pids() { local g; for g in "${grandchildren[@]}"; do echo "${g%% *}"; done; }

bench_cleanup() {
  local rc=$? pid exe g live=()
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    stop_pids "${pids[@]}"
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
  for g in "${grandchildren[@]}"; do
    pid=${g%% *} exe=${g#* }
    # only if that PID still runs the same program (not a reused PID)
    if [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$exe" ]]; then live+=("$pid"); fi
  done
  if ((${#live[@]})); then
    echo "$prog: processes ${live[*]} were left behind by their parent; stopping them" >&2
    stop_pids "${live[@]}"
  fi
  if [[ -n $scratch ]]; then
    if [[ $KEEP == 1 || $anomaly == 1 ]]; then
      echo "$prog: logs and raw results kept in $scratch" >&2
    else
      rm -rf "$scratch"
    fi
  fi
  exit "$rc"
}

bench_init() { # PREFIX: the scratch directory and the traps
  scratch=$(mktemp -d "/tmp/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

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

# cpu_snap [PID...]: "ALL BUSY OURS" in clock ticks: all CPUs' capacity and busy
# time since boot (/proc/stat), and the CPU time of this script's processes:
# those alive (pids, grandchildren, any PIDs given) plus those already reaped
# (load generators, counted in this shell's cutime/cstime).
cpu_snap() {
  python3 - "$$" "${pids[@]}" $(grandchild_pids) "$@" <<'PY'
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
    echo "$prog: warning: the machine is ${busy_now}% busy with other work before this run; its numbers are skewed" >&2
  fi
}

# ensure_built BINARY...: builds the release binaries (CARGO_TARGET_DIR=BIN_DIR/..)
# when BUILD=1 or one of BINARY is missing; BIN_DIR must then end in /release
ensure_built() {
  local b missing=0
  for b in "$@"; do [[ -x $b ]] || missing=1; done
  [[ ${BUILD:-0} == 1 || $missing == 1 ]] || return 0
  [[ $(basename "$BIN_DIR") == release ]] || die "BIN_DIR must end in /release to be built, or hold: ${*##*/}"
  note "building: CARGO_TARGET_DIR=$(dirname "$BIN_DIR") cargo build --release --bins"
  (cd "$root" && CARGO_TARGET_DIR=$(dirname "$BIN_DIR") cargo build --release --bins) >&2
}

# finish_load PID OUT: waits for a load generator started in the background
# (recorded in pids) and forgets it; its failure ends the script with its stderr.
finish_load() {
  wait "$1" || die "${LOADGEN:-the load generator} failed ($2): $(tail -n 3 "$2.err")"
  forget "$1"
}

# rip_warnings LOG: rip-server's log lines at WARN or ERROR, but for the
# warning that workers run as root (benchmarks run as root; no anomaly)
rip_warnings() { grep -E 'WARN|ERROR' "$1" | grep -v 'rip_server::privileges: running as root' || true; }

rss_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# proc_cpu ARG...: "TOTAL SYS", the CPU seconds (utime + stime, and stime alone)
# the processes named have used, summed: read before and after a measured run
# for a row's CPU per request and how much of it the kernel spent. ARG is a PID,
# or tree:PID for PID's children, live ones and those it has reaped (recycled
# workers, whose time the kernel adds to PID's cutime and cstime).
proc_cpu() {
  python3 - "$@" <<'PY'
import os, sys
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]  # utime stime cutime cstime
def children(pid):
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(f.read().split())
    return found
total = system = 0
for arg in sys.argv[1:]:
    try:
        if arg.startswith("tree:"):
            _, _, cutime, cstime = stat(arg[5:])
            total, system = total + cutime + cstime, system + cstime
            pids = children(arg[5:])
        else:
            pids = [arg]
        for pid in pids:
            try:
                utime, stime, _, _ = stat(pid)
                total, system = total + utime + stime, system + stime
            except OSError:
                pass  # gone since it was listed
    except (OSError, ValueError):
        pass
tick = os.sysconf("SC_CLK_TCK")
print(f"{total / tick:.2f} {system / tick:.2f}")
PY
}

# cpu_delta BEFORE AFTER: "TOTAL<tab>SYS" seconds between two proc_cpu readings
cpu_delta() {
  local total0 sys0 total1 sys1
  read -r total0 sys0 <<<"$1"
  read -r total1 sys1 <<<"$2"
  awk -v a="$total0" -v b="$total1" -v c="$sys0" -v d="$sys1" 'BEGIN { printf "%.2f\t%.2f", b - a, d - c }'
}

# machine_cpu BEFORE AFTER: "SECONDS<tab>PERCENT", how long the whole machine
# (every CPU, every process, the kernel) was busy between two cpu_snap
# readings, and that as a share of all its CPUs' time
machine_cpu() {
  local t0 b0 o0 t1 b1 o1
  read -r t0 b0 o0 <<<"$1"
  read -r t1 b1 o1 <<<"$2"
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.2f\t%.0f", b / hz, (t > 0 ? 100 * b / t : 0) }'
}

# rotate N ITEM...: the items, starting at index N modulo their count, so
# each round of a benchmark starts with a different row (no row is always
# measured first, or always right after the same neighbour)
rotate() {
  local n=$1
  shift
  local count=$# i
  for ((i = 0; i < count; i++)); do
    local j=$(((n + i) % count + 1))
    echo "${!j}"
  done
}

# settings VAR...: "VAR=value ..." for a command line, quoted where needed
settings() {
  local v out=()
  for v in "$@"; do out+=("$v=$(printf '%q' "${!v}")"); done
  echo "${out[*]}"
}

# bench_header TITLE COMMAND: what a pasted summary must say: the date, the
# command that reproduces it, the commit the binary was built from, the machine
bench_header() {
  note "$1"
  note "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  note "command: $2"
  note "rip-server: $rip (commit ${RIP_COMMIT:-$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet HEAD -- src Cargo.toml Cargo.lock loaders 2>/dev/null || echo "+uncommitted changes")})"
  note "machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)$(grep -qw hypervisor /proc/cpuinfo && echo ' (VM)'), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
}

# ------------------------------------------------------------- processes we run

# start_workers DIR W WORKER_BIN: W standalone example workers, DIR/wN.sock
start_workers() {
  local dir=$1 n=$2 bin=$3 i
  mkdir -p "$dir"
  for ((i = 1; i <= n; i++)); do
    RIP_SOCKET="$dir/w$i.sock" RIP_WORKER_ID=$i RIP_VERSION=0 "$bin" \
      </dev/null >"$dir/w$i.log" 2>&1 &
    pids+=("$!")
    worker_pids+=("$!")
    wait_until "$!" "$dir/w$i.log" 10 "worker $i" ping_unix "$dir/w$i.sock"
  done
}
worker_pids=() # the standalone workers start_workers started (the peers' upstream)

# row_workers NAME PROXY_PID: what proc_cpu reads for a row's workers:
# rip-server's own (its children: "tree:PID"), or the standalone workers
# behind the peers
row_workers() {
  case $1 in
    rip-* | self-rip) echo "tree:$2" ;;
    *) echo "${worker_pids[*]}" ;;
  esac
}

ping_unix() { [[ $(curl -sf --max-time 1 --unix-socket "$1" "http://localhost/ping") == pong ]]; }
ping_tcp() { [[ $(curl -sf --max-time 1 "http://127.0.0.1:$1/ping") == pong ]]; }
ping_tls() { [[ $(curl -sf --max-time 1 --cacert "$2" --resolve "localhost:$1:127.0.0.1" "https://localhost:$1/ping") == pong ]]; }

# rip-server's own default thread count: half the cores, at least 1
default_rip_threads() { local n; n=$(nproc); echo $((n / 2 > 0 ? n / 2 : 1)); }

# start_rip NAME SCHEME W LOG ARG...: rip-server (binary $rip) with
# XDG_RUNTIME_DIR=$scratch/xdg and $THREADS runtime threads (--threads; builds
# without that flag read TOKIO_WORKER_THREADS), SCHEME http or https (port 0:
# the kernel picks). Waits for W idle workers. Sets rip_pid, rip_port, rip_ctl,
# rip_status (a file with the last /status).
start_rip() {
  local name=$1 scheme=$2 n=$3 log=$4 threads=()
  shift 4
  export XDG_RUNTIME_DIR="$scratch/xdg"
  mkdir -p -m 700 "$XDG_RUNTIME_DIR"
  if "$rip" --help 2>/dev/null | grep -q -- '--threads'; then threads=(--threads="$THREADS"); fi
  TOKIO_WORKER_THREADS=$THREADS "$rip" "$@" "${threads[@]}" --name "$name" \
    </dev/null >"$log" 2>&1 &
  rip_pid=$!
  pids+=("$rip_pid")
  wait_until "$rip_pid" "$log" 20 "rip-server's port" grep -q "^listening on $scheme://localhost:[0-9]*\$" "$log"
  rip_port=$(sed -n "s|^listening on $scheme://localhost:\([0-9]*\)\$|\1|p" "$log")
  rip_ctl="$XDG_RUNTIME_DIR/rip-server/$name.ctl.sock"
  rip_status="$scratch/$name.status.json"
  rip_ready() {
    curl -sf --max-time 1 --unix-socket "$rip_ctl" http://localhost/status >"$rip_status" &&
      python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); sys.exit(s["pool"]["idle"] != int(sys.argv[2]))' \
        "$rip_status" "$n"
  }
  wait_until "$rip_pid" "$log" 60 "rip-server's $n workers" rip_ready
  adopt_rip_workers
}

adopt_rip_workers() { # record rip-server's current workers (from $rip_status) as grandchildren
  local pid exe
  while read -r pid exe; do adopt "$pid" "$exe"; done < <(python3 -c '
import json, os, sys
for w in json.load(open(sys.argv[1]))["workers"]:
    try:
        print(w["pid"], os.readlink("/proc/%d/exe" % w["pid"]))
    except OSError:
        pass' "$rip_status")
}

rip_status_now() { # print rip-server's /status JSON
  curl -sf --max-time 5 --unix-socket "$rip_ctl" http://localhost/status
}
