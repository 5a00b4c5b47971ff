#!/usr/bin/env bash
# Rolling restarts under load: GET /ping through rip-server serving a copy of
# the bundled Node app (apps/api) with --reload=process (the default), in two
# phases with the same load:
#   A. steady    STEADY seconds of oha, no change to the app
#   B. rolls     oha for SAVES*INTERVAL+3 seconds while benches/load/rolls.py
#                saves a new version of the app every INTERVAL seconds (SAVES
#                saves); after each save it polls GET /v every 10 ms (its own
#                connection, not counted in oha's numbers) until the new version
#                answers, and records the time from save to new version
# in ROUNDS rounds (A, B, A, B, ... on the same server, so the two phases are
# measured alternately and a drift of a shared machine touches both), then per
# round and as medians over the rounds: both phases' requests/s, p50, p99,
# non-2xx and errors, p99 during rolls / p99 steady, the save-to-new-version
# times, the rolls rip-server counted, the CPU it and its workers used, the
# throughput by time since the last save, and the targets met or missed.
# Results and method: docs/benchmarks.md ("Rolling restarts under load").
#
# The app copy: apps/api's index.mjs becomes handler.mjs; a new index.mjs
# answers GET /v with the string exported by version.mjs and hands every other
# request to the original handler. A save rewrites version.mjs.
#
# Settings (environment):
#   W=2                 workers (w:W)
#   ROUNDS=3            rounds of phase A then phase B
#   CONCURRENCY=16      oha connections (HTTP/1.1 keep-alive) in both phases
#   STEADY=10           seconds of phase A
#   WARMUP=2            seconds of discarded load before phase A
#   SAVES=12 INTERVAL=1.5   phase B: saves, and seconds between them
#   SAVE_TIMEOUT=10     seconds a save may take to answer before it counts as timed out
#   THREADS=nproc/2     rip-server's runtime threads (--threads; its default: half the cores)
#   RIP_ARGS="r:0"      extra rip-server arguments (r:0: no recycling by request
#                       count, so phase A has no restarts of its own)
#   APP=apps/api        the app to copy
#   TRIGGER=save        save: file saves, as above. reload: a control run without
#                       the file watcher: each "save" is a POST /reload on the
#                       control socket, the new version is the next generation in
#                       GET /'s JSON, APP is served as it is (not copied; it may be
#                       an executable such as rip-example-worker) with --reload=none
#   BIN_DIR=target/release  where rip-server is (built if missing or BUILD=1)
#   RIP_COMMIT          the commit the binary was built from, for the header
#                       (default: this checkout's HEAD)
#   WAIT_QUIET=60 QUIET_PCT=10   the quiet-machine check (as in benches/load.sh)
#   KEEP=0              1 keeps the scratch directory (app copy, logs, raw JSON)
#
# Needs node on PATH (the app is a Node fetch handler). Every process this
# script starts is recorded by PID and stopped by PID on exit; rip-server's
# workers die with it. Traffic stays on 127.0.0.1 and Unix sockets.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here="$root/benches/load"

W=${W:-2}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-16}
STEADY=${STEADY:-10}
WARMUP=${WARMUP:-2}
SAVES=${SAVES:-12}
INTERVAL=${INTERVAL:-1.5}
SAVE_TIMEOUT=${SAVE_TIMEOUT:-10}
THREADS=${THREADS:-$(($(nproc) / 2 > 0 ? $(nproc) / 2 : 1))}
RIP_ARGS=${RIP_ARGS:-r:0}
APP=${APP:-$root/apps/api}
TRIGGER=${TRIGGER:-save}
BIN_DIR=${BIN_DIR:-$root/target/release}
BUILD=${BUILD:-0}
WAIT_QUIET=${WAIT_QUIET:-60}
QUIET_PCT=${QUIET_PCT:-10}
KEEP=${KEEP:-0}

prog=rolls.sh
source "$here/lib.sh"

for v in W ROUNDS CONCURRENCY STEADY SAVES SAVE_TIMEOUT THREADS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, got '${!v}'"
done
[[ $WARMUP =~ ^[0-9]+$ ]] || die "WARMUP must be whole seconds, got '$WARMUP'"
[[ $INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "INTERVAL must be seconds, got '$INTERVAL'"
[[ $WAIT_QUIET =~ ^[0-9]+$ && $QUIET_PCT =~ ^[0-9]+$ ]] || die "WAIT_QUIET and QUIET_PCT must be whole numbers"
[[ $TRIGGER == save || $TRIGGER == reload ]] || die "TRIGGER must be save or reload, got '$TRIGGER'"
[[ $TRIGGER == reload || -f $APP/index.mjs ]] || die "APP=$APP has no index.mjs"
read -r -a rip_args <<<"$RIP_ARGS"
if [[ $TRIGGER == reload ]]; then rip_args+=(--reload=none); fi
if [[ $TRIGGER == save || $APP == *.mjs || $APP == *.js || -f $APP/index.mjs || -f $APP/index.js ]]; then
  command -v node >/dev/null || die "node is needed and not on PATH"
fi
for tool in python3 curl; do command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"; done
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found at '$OHA' (cargo install oha --locked)"

rip="$BIN_DIR/rip-server"
ensure_built "$rip"
ROLL_SECONDS=$(awk -v n="$SAVES" -v i="$INTERVAL" 'BEGIN { printf "%d", n * i + 3.999 }')

bench_init rip-rolls

# ------------------------------------------------------------- the app copy

app="$scratch/app"
if [[ $TRIGGER == reload ]]; then
  app=$APP
else
  mkdir -p "$app"
  cp -R "$APP/." "$app/"
  mv "$app/index.mjs" "$app/handler.mjs"
  cat >"$app/index.mjs" <<'JS'
// benches/rolls.sh: the bundled app with a version marker. GET /v answers the
// string in version.mjs (the file the benchmark rewrites); everything else goes
// to the original handler (handler.mjs, apps/api/index.mjs as it was).
import handler from './handler.mjs';
import { version } from './version.mjs';

const headers = { 'content-type': 'text/plain; charset=utf-8' };

export default {
  fetch(req) {
    if (req.url.endsWith('/v')) return new Response(version, { headers });
    return handler.fetch(req);
  },
};
JS
  echo "export const version = 'v0';" >"$app/version.mjs"
fi

# ------------------------------------------------------------- load

# cpu_snap counting rip-server's whole tree: its own time, its reaped workers'
# (cutime/cstime) and its live workers', since workers come and go in phase B.
cpu_snap_tree() { cpu_snap $(ps -o pid= --ppid "$rip_pid" 2>/dev/null || true); }

# rip_cpu: "SECONDS SELF WORKERS": a monotonic clock, and the CPU seconds of
# rip-server itself and of its workers (reaped ones via cutime/cstime, plus live ones)
rip_cpu() {
  python3 - "$rip_pid" <<'PY'
import os, sys, time
hz = os.sysconf("SC_CLK_TCK")
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return [int(x) for x in f.read().rsplit(")", 1)[1].split()[11:15]]  # utime stime cutime cstime
rip = sys.argv[1]
utime, stime, cutime, cstime = stat(rip)
workers = cutime + cstime
with open(f"/proc/{rip}/task/{rip}/children") as f:
    for child in f.read().split():
        try:
            workers += sum(stat(child)[:2])
        except OSError:
            pass
print(time.monotonic(), (utime + stime) / hz, workers / hz)
PY
}

# cpu_share BEFORE AFTER: rip-server's and its workers' CPU as % of one CPU,
# tab-separated
cpu_share() {
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] - x[1]
    printf "%.0f\t%.0f", 100 * (y[2] - x[2]) / t, 100 * (y[3] - x[3]) / t }'
}

run_oha() { # OUT SECONDS: oha in the background; sets load_pid
  "$OHA" -z "$2s" -c "$CONCURRENCY" -w --no-tui --output-format json "http://127.0.0.1:$rip_port/ping" \
    >"$1" 2>"$1.err" &
  load_pid=$!
  pids+=("$load_pid")
}

finish() { # PID WHAT
  wait "$1" || die "$2 failed: $(tail -n 3 "$scratch/$2.err" 2>/dev/null)"
  forget "$1"
}

status_field() { python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))
for k in sys.argv[2:]: s = s.get(k) if isinstance(s, dict) else None
print(s)' "$@"; }

# ------------------------------------------------------------- run

bench_header "rip-server rolling restarts under load: GET /ping, HTTP/1.1 keep-alive, oha -c $CONCURRENCY" \
  "$(settings BIN_DIR W ROUNDS CONCURRENCY STEADY WARMUP SAVES INTERVAL SAVE_TIMEOUT THREADS RIP_ARGS APP TRIGGER WAIT_QUIET QUIET_PCT) benches/rolls.sh"
note "app: $([[ $TRIGGER == save ]] && echo "copy of $APP with a version marker" || echo "$APP, rolled by POST /reload (TRIGGER=reload)"); node $(node --version 2>/dev/null || echo none); load: $("$OHA" --version)"
note "W=$W ROUNDS=$ROUNDS CONCURRENCY=$CONCURRENCY STEADY=${STEADY}s WARMUP=${WARMUP}s SAVES=$SAVES INTERVAL=${INTERVAL}s (phase B ${ROLL_SECONDS}s) THREADS=$THREADS RIP_ARGS=\"$RIP_ARGS\""

settle
start_rip rolls http "$W" "$scratch/rip-server.log" "$app" "w:$W" http:0 --no-access-log "${rip_args[@]}"
wait_until "$rip_pid" "$scratch/rip-server.log" 5 "rip-server on port $rip_port" ping_tcp "$rip_port"
if [[ $TRIGGER == save ]]; then
  [[ $(curl -sf --max-time 2 "http://127.0.0.1:$rip_port/v") == v0 ]] || die "GET /v did not answer v0"
fi
note "rip-server pid $rip_pid on 127.0.0.1:$rip_port, reload=$(status_field "$rip_status" app reload 2>/dev/null || echo '?')"

for ((round = 1; round <= ROUNDS; round++)); do
  r="$scratch/r$round"
  mkdir -p "$r"
  # Phase A
  settle
  if ((WARMUP > 0)); then
    run_oha "$r/warmup.json" "$WARMUP"
    finish "$load_pid" "r$round/warmup.json"
  fi
  snap0=$(cpu_snap_tree)
  cpu0=$(rip_cpu)
  run_oha "$r/steady.json" "$STEADY"
  finish "$load_pid" "r$round/steady.json"
  cpu_steady=$(cpu_share "$cpu0" "$(rip_cpu)")
  busy_steady=$(other_cpu "$snap0" "$(cpu_snap_tree)")
  note "round $round, phase A (steady, ${STEADY}s): $(python3 "$here/summarize.py" row steady "$CONCURRENCY" "$r/steady.json" | cut -f3-7 | awk -F'\t' '{ printf "%s req/s, p50 %s ms, p99 %s ms, non-2xx %s, errors %s", $1, $2, $3, $4, $5 }') (other processes: ${busy_steady}% of all CPUs)"

  # Phase B
  rip_status_now >"$r/status-before.json"
  settle
  snap0=$(cpu_snap_tree)
  cpu0=$(rip_cpu)
  run_oha "$r/rolls.json" "$ROLL_SECONDS"
  oha_pid=$load_pid
  sleep 1
  FIRST_SAVE=$(((round - 1) * SAVES + 1)) python3 "$here/rolls.py" "$app" "$rip_port" "$rip_ctl" "$SAVES" "$INTERVAL" \
    "$SAVE_TIMEOUT" "$r/timeline.tsv" "$TRIGGER" >"$r/saves.tsv" 2>"$r/saves.err" &
  saver=$!
  pids+=("$saver")
  wait "$saver" || die "the save loop failed: $(tail -n 5 "$r/saves.err")"
  forget "$saver"
  # the load started 1 s before the save loop; did it outlast the last save's answer?
  python3 - "$r/saves.tsv" "$ROLL_SECONDS" <<'PY' || echo "$prog: warning: round $round: the load ended before the last save answered; phase B's numbers miss the last rolls" >&2
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
last = rows[-1] if rows else None
sys.exit(0 if last and last[3] != "timeout" and 1 + float(last[1]) + float(last[3]) / 1000 < float(sys.argv[2]) else 1)
PY
  finish "$oha_pid" "r$round/rolls.json"
  cpu_rolls=$(cpu_share "$cpu0" "$(rip_cpu)")
  busy_rolls=$(other_cpu "$snap0" "$(cpu_snap_tree)")
  sleep 1
  kill -0 "$rip_pid" 2>/dev/null || die "rip-server exited during the run; log: $scratch/rip-server.log"
  rip_status_now >"$r/status-after.json"
  cp "$r/status-after.json" "$rip_status"
  adopt_rip_workers
  printf 'steady_rip\tsteady_workers\trolls_rip\trolls_workers\tbusy_steady\tbusy_rolls\n%s\t%s\t%s\t%s\n' \
    "$cpu_steady" "$cpu_rolls" "$busy_steady" "$busy_rolls" >"$r/cpu.tsv"
  note "round $round, phase B (rolls, ${ROLL_SECONDS}s): $(python3 "$here/summarize.py" row rolls "$CONCURRENCY" "$r/rolls.json" | cut -f3-7 | awk -F'\t' '{ printf "%s req/s, p50 %s ms, p99 %s ms, non-2xx %s, errors %s", $1, $2, $3, $4, $5 }') (other processes: ${busy_rolls}% of all CPUs)"
done

echo
echo "## rolls: GET /ping, w:$W, oha -c $CONCURRENCY; $ROUNDS rounds of steady ${STEADY}s, then ${ROLL_SECONDS}s with $SAVES saves ${INTERVAL}s apart; $(nproc) CPUs"
echo
python3 "$here/summarize.py" rolls "$scratch" "$ROUNDS"

# anomalies: anything but 2xx during either phase, a save that never answered,
# a poll failure, an old version after the new one, a failed roll, a warning
python3 - "$scratch" "$ROUNDS" <<'PY' || anomaly=1
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
bad = []
for n in range(1, rounds + 1):
    r = f"{d}/r{n}"
    for phase in ("steady", "rolls"):
        doc = json.load(open(f"{r}/{phase}.json"))
        codes = {k: v for k, v in doc.get("statusCodeDistribution", {}).items() if not k.startswith("2")}
        if codes or doc.get("errorDistribution"):
            bad.append(f"round {n} {phase}: non-2xx {codes}, errors {doc.get('errorDistribution')}")
    for line in open(f"{r}/saves.tsv").read().splitlines()[1:]:
        save, at, version, ms, roll_ms, gen, polls, failures, back = line.split("\t")
        if ms == "timeout" or failures != "0" or back != "0":
            bad.append(f"round {n} save {save}: ms {ms}, poll failures {failures}, old version after new {back}")
    after = json.load(open(f"{r}/status-after.json"))
    if (after.get("rolls") or {}).get("failed"):
        bad.append(f"round {n}: rolls failed: {after['rolls']}, last_roll {after.get('last_roll')}")
for b in bad:
    print("ANOMALY:", b)
sys.exit(1 if bad else 0)
PY
warnings=$(rip_warnings "$scratch/rip-server.log" | grep -c . || true)
echo "rip-server log lines at WARN or ERROR: $warnings"
if ((warnings > 0)); then
  anomaly=1
  rip_warnings "$scratch/rip-server.log" | head -n 20 | sed 's/^/  /'
fi
if ((anomaly)); then
  echo "rip-server answered non-2xx, failed requests, missed a version or logged warnings: see above and $scratch"
fi
