#!/usr/bin/env bash
# Instructions per request: rip-server's own cost of one keep-alive GET, counted
# by valgrind's callgrind, which (unlike requests/s or CPU time) is the same
# from run to run on a noisy shared machine. Each build runs in turn under
# callgrind with w:W rip-example-workers (native, not under valgrind); after a
# warm-up its counters are zeroed, REQUESTS requests are sent (oha -n, keep-alive,
# CONCURRENCY connections), and the counters are dumped: every instruction of
# every rip-server thread in that window, divided by REQUESTS. With
# BASELINE_BIN_DIR, the baseline build runs the same way and the ratio is printed.
# Then the TOP functions by exclusive count, per request, for each build.
#
# Settings (environment):
#   W=2  REQUESTS=20000  WARMUP_REQUESTS=2000  CONCURRENCY=4  TOP=25
#   URL_PATHS="/ping /server"   paths measured, each in its own window
#   RIP_ARGS="r:0 --reload=none"  extra rip-server arguments
#   ACCESS_LOG=0                1 keeps rip-server's access log on (its default; written to a
#                               file here), to count what a line per request costs
#   BIN_DIR=target/release      this build (built if missing, or if BUILD=1)
#   BASELINE_BIN_DIR            another build's directory (holding rip-server)
#   BASELINE_COMMIT             names it in the header
#   CALLGRIND_ARGS              more callgrind options, e.g. --cache-sim=yes (the dumps then
#                               hold simulated cache misses too; the table stays instructions)
#   KEEP=0                      1 keeps the scratch directory (the callgrind dumps)
#
# Every process this script starts is recorded by PID and stopped by PID on
# exit. Traffic stays on 127.0.0.1 and Unix sockets in a private mktemp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

W=${W:-2}
REQUESTS=${REQUESTS:-20000}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-2000}
CONCURRENCY=${CONCURRENCY:-4}
TOP=${TOP:-25}
URL_PATHS=${URL_PATHS:-/ping /server}
RIP_ARGS=${RIP_ARGS:-r:0 --reload=none}
BIN_DIR=${BIN_DIR:-$root/target/release}
BASELINE_BIN_DIR=${BASELINE_BIN_DIR:-}
BASELINE_COMMIT=${BASELINE_COMMIT:-}
CALLGRIND_ARGS=${CALLGRIND_ARGS:-}
ACCESS_LOG=${ACCESS_LOG:-0}
KEEP=${KEEP:-0}
THREADS=1 # under valgrind every thread runs in turn anyway

prog=instructions.sh
source "$root/benches/load/lib.sh"

for v in W REQUESTS WARMUP_REQUESTS CONCURRENCY TOP; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive whole number, got '${!v}'"
done
read -r -a rip_args <<<"$RIP_ARGS"
read -r -a url_paths <<<"$URL_PATHS"
((${#url_paths[@]} > 0)) || die "URL_PATHS is empty"
for tool in valgrind callgrind_control callgrind_annotate python3 curl; do
  command -v "$tool" >/dev/null || die "$tool is needed and not on PATH (apt install valgrind python3 curl)"
done
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[[ -x $OHA ]] || die "oha not found at '$OHA' (cargo install oha --locked)"
if [[ -n $BASELINE_BIN_DIR ]]; then
  [[ -x $BASELINE_BIN_DIR/rip-server ]] || die "BASELINE_BIN_DIR=$BASELINE_BIN_DIR holds no rip-server"
fi
rip="$BIN_DIR/rip-server"
worker="$BIN_DIR/rip-example-worker"
ensure_built "$rip" "$worker"

bench_init rip-instructions

# The app gets a directory of its own: with --reload=process rip-server watches
# the app's directory and hashes it at start, and the worker's own directory is
# target/release (thousands of build files, slow to hash under valgrind).
mkdir -p "$scratch/app"
cp "$worker" "$scratch/app/"
worker="$scratch/app/$(basename "$worker")"

# measure NAME BINARY: prints "NAME PATH INSTRUCTIONS_PER_REQUEST" per path and
# leaves the dumps in $scratch/NAME.PATH.out
measure() {
  local name=$1 binary=$2 wrapper="$scratch/$1.valgrind" path out
  # start_rip runs "$rip ARGS": make that callgrind running the real binary
  cat >"$wrapper" <<EOF
#!/bin/sh
case "\$1" in --help|--version) exec "$binary" "\$@" ;; esac
exec valgrind --tool=callgrind --callgrind-out-file="$scratch/$name.callgrind.%p" $CALLGRIND_ARGS "$binary" "\$@"
EOF
  chmod +x "$wrapper"
  rip=$wrapper
  local access_log=(--no-access-log)
  [[ $ACCESS_LOG == 1 ]] && access_log=()
  start_rip "$name" http "$W" "$scratch/$name.log" "$worker" "w:$W" http:0 "${access_log[@]}" "${rip_args[@]}"
  for path in "${url_paths[@]}"; do
    "$OHA" -n "$WARMUP_REQUESTS" -c "$CONCURRENCY" --no-tui "http://127.0.0.1:$rip_port$path" >/dev/null
    callgrind_control --zero "$rip_pid" >/dev/null 2>&1 || die "callgrind_control could not zero rip-server's counters"
    out="$scratch/$name.${path//\//}.oha"
    "$OHA" -n "$REQUESTS" -c "$CONCURRENCY" --no-tui --output-format json \
      "http://127.0.0.1:$rip_port$path" >"$out"
    python3 - "$out" "$REQUESTS" <<'PY' || die "$name $path: not every request succeeded (see $out)"
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
ok = sum(n for code, n in codes.items() if code.startswith("2"))
sys.exit(0 if ok == int(sys.argv[2]) else 1)
PY
    rm -f "$scratch/$name.callgrind.$rip_pid".*
    callgrind_control --dump="$path" "$rip_pid" >/dev/null 2>&1 || die "callgrind_control could not dump rip-server's counters"
    local dump
    dump=$(ls -t "$scratch/$name.callgrind.$rip_pid".* | head -n 1)
    mv "$dump" "$scratch/$name.${path//\//}.out"
    echo "$name $path $(awk -v n="$REQUESTS" '/^(summary|totals):/ { printf "%.0f", $2 / n; exit }' "$scratch/$name.${path//\//}.out")"
  done
  stop_pids "$rip_pid"
  wait "$rip_pid" 2>/dev/null || true
  forget "$rip_pid"
}

bench_header "rip-server instructions per request (valgrind --tool=callgrind), keep-alive GET, oha -c $CONCURRENCY" \
  "$(settings W REQUESTS WARMUP_REQUESTS CONCURRENCY URL_PATHS RIP_ARGS ACCESS_LOG CALLGRIND_ARGS BIN_DIR BASELINE_BIN_DIR BASELINE_COMMIT) benches/instructions.sh"
note "$(valgrind --version); load: $("$OHA" --version)"
[[ -z $BASELINE_BIN_DIR ]] || note "baseline: $BASELINE_BIN_DIR/rip-server (commit ${BASELINE_COMMIT:-?})"

results="$scratch/results.txt"
measure rip "$BIN_DIR/rip-server" | tee -a "$results" >/dev/null
[[ -z $BASELINE_BIN_DIR ]] || measure rip-base "$BASELINE_BIN_DIR/rip-server" | tee -a "$results" >/dev/null

echo
printf '%-8s %14s %14s %8s\n' path rip-server baseline ratio
for path in "${url_paths[@]}"; do
  this=$(awk -v p="$path" '$1 == "rip" && $2 == p { print $3 }' "$results")
  base=$(awk -v p="$path" '$1 == "rip-base" && $2 == p { print $3 }' "$results")
  if [[ -n $base ]]; then
    printf '%-8s %14s %14s %8s\n' "$path" "$this" "$base" "$(awk -v a="$this" -v b="$base" 'BEGIN { printf "%.3f", a / b }')"
  else
    printf '%-8s %14s %14s %8s\n' "$path" "$this" - -
  fi
done
echo "(instructions per request in rip-server, every thread; ratio: this build / baseline, lower is cheaper)"

# With --cache-sim=yes (CALLGRIND_ARGS) each dump holds more events than Ir:
# data reads and writes, and simulated first-level and last-level misses.
if [[ $(awk '/^events:/ { print NF - 1; exit }' "$scratch/rip.${url_paths[0]//\//}.out") -gt 1 ]]; then
  echo
  echo "every event per request (callgrind's names: Dr/Dw data reads/writes, I1mr/D1mr/D1mw first-level misses, ILmr/DLmr/DLmw last-level)"
  for name in rip rip-base; do
    for path in "${url_paths[@]}"; do
      dump="$scratch/$name.${path//\//}.out"
      [[ -f $dump ]] || continue
      awk -v n="$REQUESTS" -v label="$name $path" '
        /^events:/ { for (i = 2; i <= NF; i++) event[i] = $i }
        /^summary:/ {
          line = sprintf("%-16s", label)
          for (i = 2; i <= NF; i++) line = line sprintf(" %s %.1f", event[i], $i / n)
          print line; exit
        }' "$dump"
    done
  done
fi

for name in rip rip-base; do
  for path in "${url_paths[@]}"; do
    dump="$scratch/$name.${path//\//}.out"
    [[ -f $dump ]] || continue
    echo
    echo "## $name $path: top $TOP functions by exclusive instructions per request"
    # exclusive counts; the frames every thread runs under (main, the
    # runtime's entry) show as (nearly) 100 % and are skipped: as 99.9x %
    # when threads that run outside them had work too (the file watcher's,
    # the one that forks workers)
    callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null |
      awk -v n="$REQUESTS" -v top="$TOP" '
        /^-+$/ { rule++; next }
        rule >= 3 && /^ *[0-9,]+ \( *[0-9.]+%\)/ && shown < top {
          share = $0; sub(/^ *[0-9,]+ \( */, "", share); sub(/%.*$/, "", share)
          if (share + 0 >= 99) next
          count = $1; gsub(",", "", count)
          name = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", name); sub(/ \[.*$/, "", name)
          sub(/^[^:]*:/, "", name)
          printf "%8.1f  %s\n", count / n, name; shown++
        }'
  done
done
