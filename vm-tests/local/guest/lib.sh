# Guest-side library of the scenario drivers (sourced by driver.sh and agent.sh, after
# /rip-vm/params.sh). Everything it prints goes to the journal and the serial console, where
# the host reads these machine-readable lines:
#
#   RIP-VM-BOOT   role=R uptime_s=S                          the driver started (boot time)
#   RIP-VM-STEP   role=R t=S what happened                   progress, t = seconds since start
#   RIP-VM-CHECK  role=R result=pass|fail name=N [detail=..] one assertion
#   RIP-VM-LOAD   role=R name=N requests=.. non2xx=.. errors=.. ...   one wrk run
#   RIP-VM-RESULT scenario=S role=R verdict=pass|fail requests=N non2xx=N errors=N
#                 load_s=N boot_s=S elapsed_s=S switch=A reason=ok|check,check,...
#
# Every wait has a deadline; a deadline missed is a failed check, never a hang.

RIPVM=/rip-vm
RUNDIR=/run/rip-vm
mkdir -p "$RUNDIR"

uptime_s() { cut -d' ' -f1 /proc/uptime; }
T_START="$(uptime_s)"
elapsed() { awk -v a="$T_START" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

emit() { printf '%s\n' "$*"; }
step() { emit "RIP-VM-STEP role=$ROLE t=$(elapsed) $*"; }

FAILED=()
REQUESTS=0 NON2XX=0 ERRORS=0 LOAD_SECS=0
SWITCH_ACTION=none
pass() { emit "RIP-VM-CHECK role=$ROLE result=pass name=$1${2:+ detail=$2}"; }
fail() {
  emit "RIP-VM-CHECK role=$ROLE result=fail name=$1${2:+ detail=$2}"
  FAILED+=("$1")
}
# check NAME CMD...: CMD's exit status is the check.
check() {
  local name="$1"
  shift
  if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "failed: $*"; fi
}
# expect_eq NAME GOT WANT
expect_eq() {
  if [ "$2" = "$3" ]; then pass "$1" "$2"; else fail "$1" "got '$2', want '$3'"; fi
}
# wait_for SECS NAME CMD...: polls CMD every 0.3 s; returns 0 once it succeeds, or records the
# failed check NAME and returns 1 at the deadline.
wait_for() {
  local secs="$1" name="$2" end
  shift 2
  end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= end)); then
      fail "$name" "not within ${secs}s: $*"
      return 1
    fi
    sleep 0.3
  done
}

# --- HTTP ------------------------------------------------------------------------------------
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" || true; }
http_body() { curl -s --max-time 10 "$@" || true; }
http_header() { # http_header NAME CURL-ARGS...: the value of response header NAME
  local name="$1"
  shift
  curl -s -D - -o /dev/null --max-time 10 "$@" | tr -d '\r' |
    awk -v n="$(echo "$name" | tr 'A-Z' 'a-z')" 'BEGIN { FS = ": " } tolower($1) == n { print substr($0, length($1) + 3) }' || true
}
code_is() { [ "$(http_code "${@:2}")" = "$1" ]; }  # code_is CODE CURL-ARGS...
body_is() { [ "$(http_body "${@:2}")" = "$1" ]; }  # body_is BODY CURL-ARGS...

# --- systemd ---------------------------------------------------------------------------------
unit_prop() { systemctl show -P "$2" "$1"; }
unit_active() { [ "$(systemctl is-active "$1" 2>/dev/null)" = active ]; }
main_pid() { unit_prop "$UNIT.service" MainPID; }
cfg_info() { sed -n "s/^$2=//p" "$RIPVM/configs/$1/info"; } # cfg_info CONFIG KEY
# server_up SECONDS: waits until rip-server.service is active (after boot); records the check.
# A unit that systemd gave up on (state "failed", e.g. start-limit-hit) fails it at once.
server_up() {
  local end=$(($(date +%s) + $1)) state
  while :; do
    state="$(systemctl is-active "$UNIT.service" 2>/dev/null || true)"
    case "$state" in
      active)
        pass "$UNIT-active" "main pid $(main_pid)"
        return 0 ;;
      failed)
        fail "$UNIT-active" "systemd gave up: $(unit_prop "$UNIT.service" Result)"
        return 1 ;;
    esac
    if (($(date +%s) >= end)); then
      fail "$UNIT-active" "not within $1s (state: $state)"
      return 1
    fi
    sleep 0.3
  done
}
# worker_pids: the server's child processes (its workers), one per line, sorted.
worker_pids() { pgrep -P "$(main_pid)" | sort -n || true; }
# has_new_pid BEFORE: is there a worker now that was not in BEFORE (a worker_pids output)?
has_new_pid() { [ -n "$(comm -13 <(echo "$1") <(worker_pids))" ]; }
# took T0: seconds since the uptime T0, one decimal.
took() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# --- load (wrk, counting sent requests and non-2xx answers in Lua: wrk-count.lua) ------------
# load_start NAME URL CONNECTIONS MAX_SECONDS [wrk args...]: starts wrk in the background; it
# runs until load_stop (MAX_SECONDS is its deadline). LOAD_DELAY_MS (default 0) pauses each
# connection after each answer; it blocks a wrk thread, so there is one thread per connection.
load_start() {
  local name="$1" url="$2" conns="$3" secs="$4"
  shift 4
  rm -f "$RUNDIR/load-$name.drain"
  wrk -t"$conns" -c"$conns" -d"$((secs + ${LOAD_DRAIN_S:-10}))s" --timeout "${LOAD_TIMEOUT_S:-60}s" \
    -s "$RIPVM/wrk-count.lua" "$@" "$url" -- "${LOAD_DELAY_MS:-0}" "$RUNDIR/load-$name.drain" \
    "$(((${LOAD_DRAIN_S:-10} + 1) * 1000))" \
    >"$RUNDIR/load-$name.out" 2>&1 &
  echo "$!" >"$RUNDIR/load-$name.pid"
  echo "$secs" >"$RUNDIR/load-$name.secs"
  uptime_s >"$RUNDIR/load-$name.start"
  step "load $name started: $conns connections (delay ${LOAD_DELAY_MS:-0} ms) on $url"
}
# load_running NAME: is that load still going?
load_running() { kill -0 "$(cat "$RUNDIR/load-$1.pid")" 2>/dev/null; }
# load_stop NAME MIN_SECONDS: lets the load run at least MIN_SECONDS in all, then drains it
# (no connection sends a new request; those in flight get LOAD_DRAIN_S, default 10 s, to be
# answered), stops wrk (it prints its summary on SIGINT) and collects it (load_collect).
load_stop() {
  local name="$1" min="$2" ran
  ran="$(took "$(cat "$RUNDIR/load-$name.start")")"
  if awk -v r="$ran" -v m="$min" 'BEGIN { exit !(r < m) }'; then
    sleep "$(awk -v r="$ran" -v m="$min" 'BEGIN { printf "%.1f", m - r }')"
  fi
  if load_running "$name"; then
    : >"$RUNDIR/load-$name.drain"
    sleep "${LOAD_DRAIN_S:-10}"
    kill -INT "$(cat "$RUNDIR/load-$name.pid")" 2>/dev/null || true
  else
    fail "load-$name-ran-throughout" "wrk ended before the steps did (raise its MAX_SECONDS)"
  fi
  load_collect "$name"
}
# load_collect NAME: waits for wrk to exit (deadline 60 s), adds its counts to the totals and
# records the check load-NAME: requests > 0, no non-2xx, no error. An error is a refused
# connection (connect), an answer later than LOAD_TIMEOUT_S (timeout) or a request sent and
# never answered (unanswered = sent - requests, exact since the load was drained first: a
# request whose connection failed before its answer is sent again, counted twice in `sent`).
# Read and write errors are shown, not counted twice: a request they cost is unanswered; a read
# error that cost none is a kept-alive connection a stopping server closed while it was idle
# between two requests, which any HTTP client reopens.
load_collect() {
  local name="$1" pid end line
  pid="$(cat "$RUNDIR/load-$name.pid")"
  end=$(($(date +%s) + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s) >= end)); then
      kill -KILL "$pid" 2>/dev/null || true
      fail "load-$name" "wrk did not exit within 60 s of its stop"
      return 1
    fi
    sleep 0.5
  done
  wait "$pid" 2>/dev/null || true
  line="$(grep -m1 '^RIPWRK ' "$RUNDIR/load-$name.out" || true)"
  if [ -z "$line" ]; then
    fail "load-$name" "wrk printed no summary: $(tail -n 3 "$RUNDIR/load-$name.out" | tr '\n' ' ')"
    return 1
  fi
  local requests sent non2xx connect read write timeout status duration_us p99_us max_us errors lost
  eval "$(echo "${line#RIPWRK }" | tr ' ' '\n' | grep -E '^[a-z_0-9]+=[0-9]+$')"
  lost=$((sent - requests))
  ((lost > 0)) || lost=0
  errors=$((connect + timeout + lost))
  REQUESTS=$((REQUESTS + requests))
  NON2XX=$((NON2XX + non2xx))
  ERRORS=$((ERRORS + errors))
  LOAD_SECS=$((LOAD_SECS + duration_us / 1000000))
  emit "RIP-VM-LOAD role=$ROLE name=$name requests=$requests non2xx=$non2xx errors=$errors" \
    "connect=$connect timeout=$timeout unanswered=$lost sent=$sent read_errors=$read write_errors=$write" \
    "seconds=$((duration_us / 1000000)) p99_ms=$((p99_us / 1000)) max_ms=$((max_us / 1000))"
  if ((requests > 0 && non2xx == 0 && errors == 0)); then
    pass "load-$name" "$requests requests"
  else
    fail "load-$name" "requests=$requests non2xx=$non2xx errors=$errors"
  fi
}

# --- switch (what nixos-rebuild switch does to this service) ---------------------------------
# switch_to CONFIG: installs CONFIG's units and files (activate.sh) and stops, reloads,
# restarts and starts units exactly as the plan computed on the host from the old and new unit
# texts says (materialise.py plan, a port of switch-to-configuration's decision), in
# switch-to-configuration's order: stop, activate, daemon-reload, reload, restart, start.
switch_to() {
  local new="$1" cur plan rc=0 u t0 phases=""
  cur="$(cat "$RIPVM/current")"
  plan="$RIPVM/configs/$new/plan-from-$cur.sh"
  [ -f "$plan" ] || { echo "no switch plan from $cur to $new ($plan)"; return 1; }
  # shellcheck source=/dev/null
  source "$plan"
  step "switch $cur -> $new: $PLAN_DECISIONS; main unit: $PLAN_ACTION"
  t0="$(uptime_s)"
  if ((${#PLAN_STOP[@]})); then
    systemctl stop "${PLAN_STOP[@]}" || rc=1
    phases="$phases stop=$(took "$t0")s"
  fi
  t0="$(uptime_s)"
  "$RIPVM/activate.sh" "$new" || return 1
  systemd-sysusers || rc=1
  systemd-tmpfiles --create /etc/tmpfiles.d/rip-vm.conf || rc=1
  systemctl reset-failed || true
  phases="$phases activate=$(took "$t0")s"
  t0="$(uptime_s)"
  systemctl daemon-reload || return 1
  phases="$phases daemon-reload=$(took "$t0")s"
  t0="$(uptime_s)"
  for u in ${PLAN_RELOAD[@]+"${PLAN_RELOAD[@]}"}; do
    if unit_active "$u"; then
      systemctl reload "$u" || rc=1
    else
      systemctl start "$u" || rc=1
    fi
  done
  ((${#PLAN_RELOAD[@]})) && phases="$phases reload=$(took "$t0")s"
  t0="$(uptime_s)"
  if ((${#PLAN_RESTART[@]})); then
    systemctl restart "${PLAN_RESTART[@]}" || rc=1
    phases="$phases restart=$(took "$t0")s"
  fi
  t0="$(uptime_s)"
  if ((${#PLAN_START[@]})); then
    systemctl start "${PLAN_START[@]}" || rc=1
    phases="$phases start=$(took "$t0")s"
  fi
  SWITCH_ACTION="$PLAN_ACTION"
  echo "$PLAN_ACTION" >"$RUNDIR/switch-action"
  step "switch to $new done (rc=$rc):$phases"
  return "$rc"
}

# --- other VMs ---------------------------------------------------------------------------------
# agent_call HOST COMMAND...: runs COMMAND through HOST's agent (agent.sh); prints its output,
# returns its exit status. Deadline: AGENT_TIMEOUT_S (default 300 s) per line of output.
agent_call() {
  local host="$1" fd line rc=255
  shift
  exec {fd}<>"/dev/tcp/$host/7000" || { echo "cannot reach the agent on $host"; return 255; }
  printf '%s\n' "$*" >&"$fd"
  while IFS= read -r -t "${AGENT_TIMEOUT_S:-300}" line <&"$fd"; do
    case "$line" in
      RIP-VM-AGENT-RC=*) rc="${line#RIP-VM-AGENT-RC=}" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
  exec {fd}>&-
  return "$rc"
}
# wait_agent HOST SECONDS: waits until HOST's agent answers.
wait_agent() {
  wait_for "$2" "agent-on-$1" agent_call "$1" ping
}
# peer_active HOST SECONDS: waits until rip-server.service is active on HOST (deadline SECONDS).
peer_active() {
  local out
  if out="$(AGENT_TIMEOUT_S=$(($2 + 10)) agent_call "$1" wait-active "$2" 2>&1)"; then
    pass "$UNIT-active-on-$1"
  else
    fail "$UNIT-active-on-$1" "$(echo "$out" | tail -n 1)"
    return 1
  fi
}
# poweroff_peers: asks every other VM to power off (best effort, so the host never waits).
poweroff_peers() {
  local r
  for r in $ROLES; do
    [ "$r" = "$ROLE" ] && continue
    AGENT_TIMEOUT_S=10 agent_call "$r" poweroff >/dev/null 2>&1 || true
  done
}

# --- the verdict -----------------------------------------------------------------------------
diagnostics() {
  emit "---- diagnostics ($ROLE)"
  systemctl --no-pager --failed 2>&1 | head -n 20 || true
  if [ -e "/etc/systemd/system/$UNIT.service" ]; then
    systemctl --no-pager status "$UNIT.service" 2>&1 | tail -n 25 || true
    # the unit's journal without the access lines of answered requests
    journalctl --no-pager -o short-monotonic -u "$UNIT.service" -u "$UNIT.socket" 2>&1 |
      grep -Ev ' access: .* status=[23][0-9][0-9] ' | tail -n 80 || true
  fi
  # seccomp kills (SystemCallFilter=) and other kernel complaints, with the syscall number
  journalctl --no-pager -k -o short-monotonic 2>/dev/null | grep -Ei 'audit|seccomp|segfault|oom' | tail -n 10 || true
  local f
  for f in "$RUNDIR"/load-*.out; do
    [ -e "$f" ] && { emit "-- $f"; tail -n 15 "$f"; }
  done
  emit "---- end of diagnostics"
}

RESULT_DONE=0
driver_result() {
  local verdict=pass reason=ok
  if ((${#FAILED[@]})); then
    verdict=fail
    reason="$(IFS=,; echo "${FAILED[*]}")"
    diagnostics
  fi
  emit "RIP-VM-RESULT scenario=$SCENARIO role=$ROLE verdict=$verdict requests=$REQUESTS non2xx=$NON2XX" \
    "errors=$ERRORS load_s=$LOAD_SECS boot_s=$T_START elapsed_s=$(elapsed) switch=$SWITCH_ACTION reason=$reason"
  RESULT_DONE=1
}
