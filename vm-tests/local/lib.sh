# Host-side helpers for vm-tests/run-local.sh (sourced; bash, set -euo pipefail by the caller).
#
# Every process this runner starts is recorded by PID (track_pid) and stopped by PID on exit
# (stop_tracked); nothing is ever killed by name.

log()  { printf '[vm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[vm %s] warning: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[vm] error: %s\n' "$*" >&2; exit 1; }

need_cmd() { # need_cmd CMD APT-PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install it (apt-get install -y $2)"
}

TRACKED_PIDS=()
track_pid() { TRACKED_PIDS+=("$1"); }

pid_alive() { kill -0 "$1" 2>/dev/null; }

# stop_pid PID [GRACE_SECONDS]: TERM, wait up to GRACE, then KILL; reaps it if it is our child.
stop_pid() {
  local pid="$1" grace="${2:-3}" i
  pid_alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_tracked() {
  local pid
  for pid in ${TRACKED_PIDS[@]+"${TRACKED_PIDS[@]}"}; do
    stop_pid "$pid" 3
  done
  TRACKED_PIDS=()
}

# wait_pid_deadline PID SECONDS: 0 if PID exited within SECONDS (its status in WAITED_RC), 1 if not.
wait_pid_deadline() {
  local pid="$1" secs="$2" end
  end=$((SECONDS + secs))
  while pid_alive "$pid"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
  WAITED_RC=0
  wait "$pid" 2>/dev/null || WAITED_RC=$?
  return 0
}

# now_ms: wall clock in milliseconds (for durations printed to the user).
now_ms() { date +%s%3N; }
secs_since() { # secs_since START_MS -> "12.3"
  local d=$(($(now_ms) - $1))
  printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100))
}

# clean_log FILE: the serial log without CRs and terminal escape sequences.
clean_log() { tr -d '\r' <"$1" | sed -E 's/\x1b\[[0-9;?!]*[A-Za-z]//g; s/\x1b[()][A-Za-z0-9]//g'; }

# free_port: an unused TCP port on 127.0.0.1 (checked with ss; the caller binds it at once).
free_port() {
  local port i used
  used="$(ss -Htan 2>/dev/null | awk '{print $4}' | sed -E 's/.*:([0-9]+)$/\1/' | sort -u)"
  for ((i = 0; i < 200; i++)); do
    port=$((40000 + RANDOM % 20000))
    grep -qx "$port" <<<"$used" || { echo "$port"; return 0; }
  done
  die "no free TCP port found on 127.0.0.1 between 40000 and 59999"
}

port_listening() { # port_listening PORT: is something listening on 127.0.0.1:PORT?
  [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}
