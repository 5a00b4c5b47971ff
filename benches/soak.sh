#!/usr/bin/env bash
# Soak: the bundled app (apps/api) under steady load while the server is
# abused the way production abuses it, for DURATION seconds (10 minutes by
# default): a rolling restart every ROLL_EVERY seconds, a random worker
# SIGKILLed every KILL_EVERY seconds, and SLOW slow clients (slow uploads and
# connections that never speak). benches/load/soak.py drives it and prints:
# requests and failures (0 apart from the requests held by killed workers,
# which it counts from the access log and lists), every roll's outcome, the
# slow clients' fate, rip-server's resident memory and open fds over time
# (flat), and a last line `SOAK verdict=pass|fail ...`. Exit status 0 on pass.
# Results and method: docs/reliability.md.
#
# Settings (environment):
#   DURATION=600        seconds of soak (e.g. DURATION=60 for a quick one)
#   W=4                 workers (w:W)
#   CONNECTIONS=8       keep-alive load connections (GET /ping back to back)
#   ROLL_EVERY=20 KILL_EVERY=7 SLOW=2 SAMPLE_EVERY=10   the faults and sampling
#   SEED=1              the random choice of worker to kill
#   RIP_ARGS=""         extra rip-server arguments
#   BIN_DIR=target/release  where rip-server is (built if missing or BUILD=1)
#   KEEP=0              1 keeps the scratch directory (server log with the access log)
#
# Needs node, python3 and curl. Every process this script starts is recorded
# by PID and stopped by PID on exit; workers it kills are picked from the
# server's own /status. Traffic stays on 127.0.0.1 and Unix sockets.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"

DURATION=${DURATION:-600}
W=${W:-4}
CONNECTIONS=${CONNECTIONS:-8}
ROLL_EVERY=${ROLL_EVERY:-20}
KILL_EVERY=${KILL_EVERY:-7}
SLOW=${SLOW:-2}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
SEED=${SEED:-1}
RIP_ARGS=${RIP_ARGS:-}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
THREADS=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
KEEP=${KEEP:-0}

prog=soak.sh
source "$here/lib.sh"

for v in DURATION W CONNECTIONS ROLL_EVERY KILL_EVERY SAMPLE_EVERY SEED THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, got '${!v}'"
done
[[ $SLOW =~ ^[0-9]+$ ]] || die "SLOW must be a whole number, got '$SLOW'"
for tool in node python3 curl; do command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"; done
read -r -a rip_args <<<"$RIP_ARGS"

rip="$BIN_DIR/rip-server"
ensure_built "$rip"

bench_init rip-soak
bench_header "soak: rolls every ${ROLL_EVERY}s, a worker SIGKILLed every ${KILL_EVERY}s, $SLOW slow clients" \
  "$(settings DURATION W CONNECTIONS ROLL_EVERY KILL_EVERY SLOW SEED) benches/soak.sh"

log="$scratch/rip.log"
# JSON logs: soak.py reads the access log to attribute failures to kills.
start_rip soak http "$W" "$log" "$root/apps/api" "w:$W" http:0 --json-logging "${rip_args[@]}"
note "rip-server pid $rip_pid on port $rip_port, log $log"

rc=0
python3 "$here/soak.py" --port "$rip_port" --ctl "$rip_ctl" --rip-pid "$rip_pid" --log "$log" \
  --duration "$DURATION" --connections "$CONNECTIONS" --roll-every "$ROLL_EVERY" \
  --kill-every "$KILL_EVERY" --slow "$SLOW" --sample-every "$SAMPLE_EVERY" --seed "$SEED" || rc=$?
((rc == 0)) || anomaly=1
exit "$rc"
