#!/usr/bin/env bash
# run-local.sh - run the NixOS VM scenarios of rip-server in real QEMU VMs on this machine
# (Debian 13 + systemd 257 guests) with the exact units the NixOS module generates.
#
#   vm-tests/run-local.sh --scenario NAME[,NAME...] [options]
#
# For each scenario: evaluate nixos-module/ with eval-module.sh for each of the scenario's
# option sets (vm-tests/local/scenarios/NAME.nix, NAME.v2.nix, ...) or take that JSON from
# --eval-json; build or reuse the guest kernel and root image (cache); materialise every file
# the evaluation produced at its store path, the release binary at the package's store path,
# the units and /etc entries; boot the VM(s); let the guest driver run the scenario; read the
# verdict from the serial console. Exit status: 0 every scenario passed, 1 a scenario failed
# or timed out, 2 usage.
#
# Options:
#   --scenario NAMES      comma-separated: smoke smoke-net rolling-restart tls-hosts
#                         socket-activation cluster (or "all")
#   --eval-json [CFG=]FILE  use FILE (eval-module.sh output) for configuration CFG of the
#                         scenario (default CFG: base) instead of evaluating the module;
#                         repeatable (e.g. --eval-json base=a.json --eval-json v2=b.json)
#   --module FILE         the NixOS module to evaluate (default nixos-module/default.nix)
#   --eval-module FILE    eval-module.sh (default $RIP_EVAL_MODULE, else $NIXCHECK_DIR's,
#                         else ../shared/nix/nixcheck/eval-module.sh beside the checkout,
#                         else /work/shared/nix/nixcheck/eval-module.sh)
#   --cache DIR           kernel and root image cache
#                         (default $RIP_VM_CACHE or ${XDG_CACHE_HOME:-~/.cache}/rip-server-vm)
#   --refresh-image       fetch the kernel and rebuild the root image even if cached
#   --binary FILE         rip-server binary (default target/release/rip-server, built with
#                         `cargo build --release --locked` unless --no-build)
#   --no-build            do not run cargo; the binary must exist
#   --accel auto|kvm|tcg  accelerator (default auto: probe KVM with a short timeout, else TCG)
#   --timeout SECONDS     whole-run deadline per scenario (default: the scenario's own)
#   --logs DIR            where serial logs go (default target/vm-tests); DIR/NAME/ per scenario
#   --keep                keep the run directory (overlays, initrds) for inspection
#   --list                list the scenarios and exit
#
# One summary line per scenario on stdout:
#   RIP-VM scenario=NAME verdict=pass|fail requests=N non2xx=N errors=N duration_s=N boot_s=N ...
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/local" && pwd)"
PROJECT="$(cd "$HERE/../.." && pwd)"
source "$HERE/lib.sh"
source "$HERE/image.sh"

usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

SCENARIOS=""
declare -A EVAL_JSON=()
MODULE="$PROJECT/nixos-module/default.nix"
EVAL_MODULE="${RIP_EVAL_MODULE:-}"
CACHE="${RIP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rip-server-vm}"
REFRESH_IMAGE=0
BINARY=""
BUILD=1
ACCEL=auto
TIMEOUT=""
LOGS="$PROJECT/target/vm-tests"
KEEP=0
ALL_SCENARIOS=(smoke smoke-net rolling-restart tls-hosts socket-activation cluster)

while [ $# -gt 0 ]; do
  case "$1" in
    --scenario) SCENARIOS="$2"; shift 2 ;;
    --eval-json)
      case "$2" in
        *=*) EVAL_JSON["${2%%=*}"]="$(realpath "${2#*=}")" ;;
        *) EVAL_JSON[base]="$(realpath "$2")" ;;
      esac
      shift 2 ;;
    --module) MODULE="$(realpath "$2")"; shift 2 ;;
    --eval-module) EVAL_MODULE="$(realpath "$2")"; shift 2 ;;
    --cache) CACHE="$2"; shift 2 ;;
    --refresh-image) REFRESH_IMAGE=1; shift ;;
    --binary) BINARY="$(realpath "$2")"; BUILD=0; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --accel) ACCEL="$2"; shift 2 ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --logs) LOGS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --list)
      for s in "${ALL_SCENARIOS[@]}"; do
        printf '%-18s %s\n' "$s" "$(sed -n 's/^SCENARIO_DESC="\(.*\)"$/\1/p' "$HERE/scenarios/$s.sh")"
      done
      exit 0 ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$SCENARIOS" ] || usage
[ "$SCENARIOS" = all ] && SCENARIOS="$(IFS=,; echo "${ALL_SCENARIOS[*]}")"
case "$ACCEL" in auto | kvm | tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac
for f in "${EVAL_JSON[@]}"; do [ -f "$f" ] || die "--eval-json: $f does not exist"; done

need_cmd qemu-system-x86_64 qemu-system-x86
need_cmd python3 python3
need_cmd ss iproute2
need_cmd flock util-linux
mkdir -p "$CACHE" "$LOGS"
CACHE="$(cd "$CACHE" && pwd)"
LOGS="$(cd "$LOGS" && pwd)"

# The run directory holds one initramfs (~230 MiB) per VM: in memory (/dev/shm) when it has
# room, since writing them to a disk shared with other builds took 6 s each.
run_base="${RIP_VM_TMP:-}"
if [ -z "$run_base" ]; then
  run_base="${TMPDIR:-/tmp}"
  if [ -w /dev/shm ] && (($(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') > 2 * 1024 * 1024)); then
    run_base=/dev/shm
  fi
fi
RUN_ROOT="$(mktemp -d "$run_base/rip-vm.XXXXXX")"
SCENARIO_PID=""
cleanup() {
  # the running scenario's subshell stops its own VMs (by PID) when it gets TERM
  [ -n "$SCENARIO_PID" ] && stop_pid "$SCENARIO_PID" 20
  stop_tracked
  if [ "$KEEP" = 1 ]; then
    log "run directory kept: $RUN_ROOT"
  else
    rm -rf "$RUN_ROOT"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- inputs: the binary, the image, the accelerator ------------------------------------------

prepare_binary() {
  if [ -z "$BINARY" ]; then
    BINARY="$PROJECT/target/release/rip-server"
    if [ "$BUILD" = 1 ]; then
      need_cmd cargo "rustup (https://rustup.rs)"
      log "cargo build --release --locked --bin rip-server"
      (cd "$PROJECT" && cargo build --release --locked --bin rip-server) >&2 ||
        die "cargo build --release failed"
    fi
  fi
  [ -x "$BINARY" ] || die "no rip-server binary at $BINARY (run cargo build --release, or pass --binary)"
}

prepare_image() {
  exec {lockfd}>"$CACHE/.lock"
  flock -w 900 "$lockfd" || die "another run holds $CACHE/.lock for more than 15 minutes"
  image_kernel
  image_root
  flock -u "$lockfd"
}

# probe_accel: KVM if /dev/kvm boots the guest kernel to its panic within a few seconds (it
# hangs where nested virtualisation does not work), else TCG. Cached for 12 hours.
probe_accel() {
  if [ "$ACCEL" != auto ]; then
    return
  fi
  local cachefile="$CACHE/accel" stamp now log pid
  now="$(date +%s)"
  if [ -s "$cachefile" ]; then
    read -r ACCEL_CACHED stamp <"$cachefile"
    if ((now - stamp < 43200)); then
      ACCEL="$ACCEL_CACHED"
      return
    fi
  fi
  ACCEL=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    log "probing KVM (8 s at most)"
    log="$RUN_ROOT/kvm-probe.log"
    qemu-system-x86_64 -accel kvm -cpu host -m 256 -nodefaults -no-user-config -display none \
      -no-reboot -serial "file:$log" -kernel "$KERNEL" \
      -append "console=ttyS0 panic=-1 root=/dev/nonexistent" >/dev/null 2>&1 &
    pid=$!
    track_pid "$pid"
    # (a QEMU that aborts on KVM is expected here: keep bash's job notice off the terminal)
    exec 3>&2 2>/dev/null
    if wait_pid_deadline "$pid" 8 && grep -q "Kernel panic" "$log" 2>/dev/null; then
      ACCEL=kvm
    else
      stop_pid "$pid" 1
    fi
    exec 2>&3 3>&-
  fi
  echo "$ACCEL $now" >"$cachefile"
  log "accelerator: $ACCEL"
}

# --- evaluation ---------------------------------------------------------------------------------

find_eval_module() {
  [ -n "$EVAL_MODULE" ] && { echo "$EVAL_MODULE"; return; }
  local c
  # The same places nix/check-module.sh looks: beside the checkout, or this
  # machine's shared folder (a CI clone can live anywhere).
  local c candidates=("${NIXCHECK_DIR:+$NIXCHECK_DIR/eval-module.sh}"
    "$PROJECT/../shared/nix/nixcheck/eval-module.sh"
    "$PROJECT/../../shared/nix/nixcheck/eval-module.sh"
    /work/shared/nix/nixcheck/eval-module.sh)
  for c in "${candidates[@]}"; do
    [ -n "$c" ] && [ -x "$c" ] && { realpath "$c"; return; }
  done
  die "eval-module.sh not found beside the checkout or in /work/shared/nix/nixcheck:" \
    "pass --eval-module, or set RIP_EVAL_MODULE or NIXCHECK_DIR (or pass --eval-json)"
}

# evaluate CFG OUT: the scenario's configuration CFG as eval-module.sh JSON in OUT.
evaluate() {
  local cfg="$1" out="$2" src
  if [ -n "${EVAL_JSON[$cfg]:-}" ]; then
    cp "${EVAL_JSON[$cfg]}" "$out"
    log "configuration $cfg: $(basename "${EVAL_JSON[$cfg]}") (--eval-json)"
    return
  fi
  src="$(scenario_eval_source "$cfg")"
  case "$src" in
    fixture:*)
      cp "$HERE/fixtures/${src#fixture:}" "$out"
      log "configuration $cfg: stand-in fixtures/${src#fixture:}" ;;
    nix:*)
      [ -f "$MODULE" ] || die "the NixOS module $MODULE does not exist (yet): pass --module, or --eval-json [$cfg=]FILE"
      need_cmd nix-instantiate nix-bin
      need_cmd jq jq
      local em rc=0
      em="$(find_eval_module)"
      log "configuration $cfg: eval-module.sh $(basename "$MODULE") -f scenarios/${src#nix:}"
      "$em" "$MODULE" rip-server -f "$HERE/scenarios/${src#nix:}" >"$out" 2>"$out.err" || rc=$?
      if [ "$rc" != 0 ]; then
        cat "$out.err" >&2
        die "eval-module.sh failed (exit $rc) for configuration $cfg of $SCENARIO"
      fi ;;
    *) die "scenario $SCENARIO: bad evaluation source '$src' for configuration $cfg" ;;
  esac
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d.get("service"), "no service"' "$out" 2>/dev/null ||
    die "configuration $cfg of $SCENARIO: the evaluation has no systemd.services.rip-server"
}

# --- overlays -----------------------------------------------------------------------------------

# install_app SRC DEST [VERSION]: an app directory in the overlay; with VERSION, version.mjs
# says it (the apps/version app serves it on /version).
install_app() {
  local src="$1" dest="$2" version="${3:-}"
  mkdir -p "$dest"
  cp -R "$src"/. "$dest"/
  if [ -n "$version" ]; then
    printf 'export const version = %s;\n' "\"$version\"" >"$dest/version.mjs"
  fi
  chmod -R a+rX,go-w "$dest"
}

# role_ip INDEX: 10.77.0.(10+INDEX); the first role is the hub of the star network.
role_ip() { echo "10.77.0.$((10 + $1))"; }

build_overlay() {
  local role="$1" index="$2" ov="$3" cfg boot_cfg r i
  mkdir -p "$ov/rip-vm" "$ov/etc/systemd/system" "$ov/usr/lib/modules/$KERNEL_RELEASE"
  cp "$HERE"/guest/{lib.sh,driver.sh,agent.sh,activate.sh,net-setup.sh,wrk-count.lua} "$ov/rip-vm/"
  cp "$HERE/scenarios/$SCENARIO.guest.sh" "$ov/rip-vm/scenario.sh"
  cp "$HERE"/guest/units/* "$ov/etc/systemd/system/"
  cp -R "$KERNEL_MODDIR"/. "$ov/usr/lib/modules/$KERNEL_RELEASE/"
  if ((${#SCENARIO_VMS[@]} > 1)); then
    mkdir -p "$ov/etc/systemd/system/sockets.target.wants"
    ln -s /etc/systemd/system/rip-vm-agent.socket "$ov/etc/systemd/system/sockets.target.wants/"
  fi
  mkdir -p "$ov/etc/systemd/system/network-online.target.wants"
  ln -s /etc/systemd/system/rip-vm-net.service "$ov/etc/systemd/system/network-online.target.wants/"
  echo "$role" >"$ov/etc/hostname"
  python3 -c 'import uuid; print(uuid.uuid4().hex)' >"$ov/etc/machine-id"
  {
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
    for i in "${!SCENARIO_VMS[@]}"; do
      printf '%s\t%s\n' "$(role_ip "$i")" "${SCENARIO_VMS[$i]}"
    done
    for r in ${SCENARIO_LOCAL_HOSTS:-}; do printf '127.0.0.1\t%s\n' "$r"; done
  } >"$ov/etc/hosts"
  {
    printf 'SCENARIO=%q\nROLE=%q\nUNIT=rip-server\n' "$SCENARIO" "$role"
    printf 'ROLES=%q\nVERDICT_ROLE=%q\n' "${SCENARIO_VMS[*]}" "$SCENARIO_VERDICT_ROLE"
    printf 'CONFIGS=%q\n' "${SCENARIO_CONFIGS[*]}"
    for r in ${SCENARIO_PARAMS[@]+"${SCENARIO_PARAMS[@]}"}; do printf '%q=%q\n' "${r%%=*}" "${r#*=}"; done
    [ "$role" != "$SCENARIO_VERDICT_ROLE" ] && ((${#SCENARIO_VMS[@]} > 1)) && echo "STAY_UP=1"
    true
  } >"$ov/rip-vm/params.sh"

  boot_cfg="$(scenario_boot_config "$role")"
  if [ -n "$boot_cfg" ]; then
    for cfg in "${SCENARIO_CONFIGS[@]}"; do
      python3 "$HERE/materialise.py" stage --eval "$RUN/eval-$cfg.json" --config "$cfg" \
        --overlay "$ov" --unit rip-server --binary "$BINARY" --root-files "$ROOT_FILES" ||
        die "materialising configuration $cfg of $SCENARIO failed"
    done
    for pair in ${SCENARIO_SWITCHES[@]+"${SCENARIO_SWITCHES[@]}"}; do
      python3 "$HERE/materialise.py" plan --old "$RUN/eval-${pair%%:*}.json" \
        --new "$RUN/eval-${pair#*:}.json" --unit rip-server \
        >"$ov/rip-vm/configs/${pair#*:}/plan-from-${pair%%:*}.sh" || die "switch plan $pair failed"
    done
    "$HERE/guest/activate.sh" "$boot_cfg" "$ov"
  fi
  scenario_overlay "$role" "$ov"
}

# --- VMs ------------------------------------------------------------------------------------

VM_PIDS=()
VM_LOGS=()
start_vms() {
  local n=${#SCENARIO_VMS[@]} i role cpu ports=() netargs port mac accel=$ACCEL
  [ "$ACCEL" = kvm ] && cpu=host || cpu=max
  # Under TCG a guest's vCPUs share one host thread (thread=single). With a thread per vCPU,
  # one vCPU can run a translation of kernel code that another has just patched through an
  # int3 (text_poke_bp, for static keys at boot); the guest kernel then dies with "Oops:
  # int3" before anything of ours runs (seen here: tls-hosts, sched_clock_cpu, on CPU 1).
  [ "$ACCEL" = tcg ] && ((SCENARIO_SMP > 1)) && accel=tcg,thread=single
  for ((i = 1; i < n; i++)); do
    port="$(free_port)"
    while [[ " ${ports[*]} " == *" $port "* ]]; do port="$(free_port)"; done
    ports+=("$port")
  done
  for ((i = 0; i < n; i++)); do
    role="${SCENARIO_VMS[$i]}"
    mac="$(printf '52:54:00:77:00:%02x' $((10 + i)))"
    netargs=()
    if ((n > 1)); then
      if ((i == 0)); then
        netargs+=(-netdev hubport,id=nic,hubid=0 -device "virtio-net-pci,netdev=nic,mac=$mac")
        for ((p = 1; p < n; p++)); do
          netargs+=(-netdev "socket,id=peer$p,listen=127.0.0.1:${ports[$((p - 1))]}"
            -netdev "hubport,id=hub$p,hubid=0,netdev=peer$p")
        done
      else
        netargs+=(-netdev "socket,id=nic,connect=127.0.0.1:${ports[$((i - 1))]}"
          -device "virtio-net-pci,netdev=nic,mac=$mac")
      fi
    fi
    local ip_arg=""
    ((n > 1)) && ip_arg="rip.ip=$(role_ip "$i")/24"
    VM_LOGS[i]="$RUN/serial-$role.log"
    : >"${VM_LOGS[i]}"
    qemu-system-x86_64 -name "rip-vm-$SCENARIO-$role" -accel "$accel" -cpu "$cpu" \
      -smp "$SCENARIO_SMP" -m "$SCENARIO_MEM" -nodefaults -no-user-config -display none \
      -no-reboot -monitor none -serial "file:${VM_LOGS[i]}" \
      -kernel "$KERNEL" -initrd "$RUN/$role/initrd" \
      -append "console=ttyS0 rdinit=/sbin/init panic=-1 quiet loglevel=3 mitigations=off net.ifnames=0 systemd.show_status=false systemd.wants=rip-vm-driver.service rip.role=$role $ip_arg" \
      ${netargs[@]+"${netargs[@]}"} >"$RUN/qemu-$role.out" 2>&1 &
    VM_PIDS[i]=$!
    track_pid "${VM_PIDS[i]}"
    log "VM $role started (pid ${VM_PIDS[i]}${ip_arg:+, ${ip_arg#rip.ip=}})"
    if ((i == 0 && n > 1)); then
      local end=$((SECONDS + 20)) port
      for port in "${ports[@]}"; do
        until port_listening "$port"; do
          pid_alive "${VM_PIDS[0]}" || die "VM $role exited at start: $(cat "$RUN/qemu-$role.out")"
          ((SECONDS < end)) || die "VM $role did not listen on 127.0.0.1:$port within 20 s"
          sleep 0.1
        done
      done
    fi
  done
}

# result_line ROLE: the RIP-VM-RESULT line in ROLE's serial log (empty if none yet).
result_line() {
  local i
  for i in "${!SCENARIO_VMS[@]}"; do
    [ "${SCENARIO_VMS[$i]}" = "$1" ] || continue
    clean_log "${VM_LOGS[$i]}" | grep -o 'RIP-VM-RESULT .*' | tail -n1 || true
  done
}
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"; }

# watch_vms DEADLINE_S: waits until every VM has powered off or the deadline passes.
watch_vms() {
  local deadline="$1" end i alive verdict_seen_at=""
  end=$((SECONDS + deadline))
  while :; do
    alive=0
    for i in "${!VM_PIDS[@]}"; do pid_alive "${VM_PIDS[$i]}" && alive=$((alive + 1))
    done
    ((alive == 0)) && return 0
    if [ -z "$verdict_seen_at" ] && [ -n "$(result_line "$SCENARIO_VERDICT_ROLE")" ]; then
      verdict_seen_at=$SECONDS
    fi
    # After the verdict, a VM has 45 s to power off cleanly (units stop, rip-server drains).
    if [ -n "$verdict_seen_at" ] && ((SECONDS - verdict_seen_at > 45)); then
      for i in "${!VM_PIDS[@]}"; do
        if pid_alive "${VM_PIDS[$i]}"; then
          POWEROFF_FAILED+=("${SCENARIO_VMS[$i]}")
          stop_pid "${VM_PIDS[$i]}" 2
        fi
      done
      return 0
    fi
    if ((SECONDS >= end)); then
      return 1
    fi
    sleep 0.5
  done
}

# --- one scenario -------------------------------------------------------------------------------

run_scenario() {
  SCENARIO="$1"
  local def="$HERE/scenarios/$SCENARIO.sh" start role i cfg verdict line timeout reason
  [ -f "$def" ] || die "unknown scenario '$SCENARIO' (see --list)"
  # scenario definition: defaults first
  SCENARIO_VMS=(server) SCENARIO_VERDICT_ROLE=server SCENARIO_CONFIGS=(base) SCENARIO_SWITCHES=()
  SCENARIO_PARAMS=() SCENARIO_TIMEOUT=180 SCENARIO_MEM=2048 SCENARIO_SMP=2 SCENARIO_LOCAL_HOSTS=""
  scenario_boot_config() { echo base; }
  scenario_overlay() { :; }
  # shellcheck source=/dev/null
  source "$def"
  timeout="${TIMEOUT:-$SCENARIO_TIMEOUT}"
  start=$(now_ms)
  RUN="$RUN_ROOT/$SCENARIO"
  mkdir -p "$RUN"
  log "scenario $SCENARIO: ${SCENARIO_VMS[*]} (deadline ${timeout}s)"

  for cfg in "${!EVAL_JSON[@]}"; do
    [[ " ${SCENARIO_CONFIGS[*]} " == *" $cfg "* ]] ||
      die "--eval-json $cfg=...: scenario $SCENARIO has no configuration '$cfg' (it has: ${SCENARIO_CONFIGS[*]})"
  done
  for cfg in "${SCENARIO_CONFIGS[@]}"; do evaluate "$cfg" "$RUN/eval-$cfg.json"; done
  prepare_image
  probe_accel
  for i in "${!SCENARIO_VMS[@]}"; do
    role="${SCENARIO_VMS[$i]}"
    mkdir -p "$RUN/$role/overlay"
    build_overlay "$role" "$i" "$RUN/$role/overlay"
    python3 "$HERE/cpio.py" from-dir "$RUN/$role/overlay" "$RUN/$role/overlay.cpio"
    cat "$ROOT_CPIO" "$RUN/$role/overlay.cpio" >"$RUN/$role/initrd"
  done
  log "ready to boot $(secs_since "$start") s after the start; booting ($ACCEL)"

  VM_PIDS=() VM_LOGS=() POWEROFF_FAILED=()
  local boot_start
  boot_start=$(now_ms)
  start_vms
  local timed_out=0
  watch_vms "$timeout" || timed_out=1
  stop_tracked

  rm -rf "${LOGS:?}/$SCENARIO"
  mkdir -p "$LOGS/$SCENARIO"
  for i in "${!SCENARIO_VMS[@]}"; do
    clean_log "${VM_LOGS[$i]}" >"$LOGS/$SCENARIO/serial-${SCENARIO_VMS[$i]}.log"
  done
  cp "$RUN"/eval-*.json "$LOGS/$SCENARIO/" 2>/dev/null || true

  local reasons=() requests=0 non2xx=0 errors=0 boot_s switch="" r
  for role in "${SCENARIO_VMS[@]}"; do
    line="$(result_line "$role")"
    if [ -z "$line" ]; then
      reasons+=("no-verdict-from-$role")
      continue
    fi
    [ "$(field "$line" verdict)" = pass ] || reasons+=("$role:$(field "$line" reason)")
    requests=$((requests + $(field "$line" requests)))
    non2xx=$((non2xx + $(field "$line" non2xx)))
    errors=$((errors + $(field "$line" errors)))
    r="$(field "$line" switch)"
    [ "$r" = none ] || switch="$switch${switch:+,}$role:$r"
  done
  ((timed_out)) && reasons=("timeout-after-${timeout}s" ${reasons[@]+"${reasons[@]}"})
  ((${#POWEROFF_FAILED[@]})) && reasons+=("no-poweroff-within-45s:$(IFS=+; echo "${POWEROFF_FAILED[*]}")")
  boot_s="$(cat "$LOGS/$SCENARIO"/serial-*.log | sed -n 's/.*RIP-VM-BOOT role=[^ ]* uptime_s=\([0-9.]*\).*/\1/p' | sort -n | tail -n1)"
  verdict=pass reason=ok
  if ((${#reasons[@]})); then
    verdict=fail
    reason="$(IFS=,; echo "${reasons[*]}")"
  fi
  if [ "$verdict" != pass ]; then
    for i in "${!SCENARIO_VMS[@]}"; do
      echo "---- last 60 lines of the serial console of ${SCENARIO_VMS[$i]} ($LOGS/$SCENARIO/serial-${SCENARIO_VMS[$i]}.log)" >&2
      tail -n 60 "$LOGS/$SCENARIO/serial-${SCENARIO_VMS[$i]}.log" >&2
    done
  fi
  echo "RIP-VM scenario=$SCENARIO verdict=$verdict requests=$requests non2xx=$non2xx errors=$errors" \
    "duration_s=$(secs_since "$start") vm_s=$(secs_since "$boot_start") boot_s=${boot_s:-?} accel=$ACCEL" \
    "switch=${switch:-none} reason=$reason logs=$LOGS/$SCENARIO" | tee "$RUN_ROOT/summary-$SCENARIO"
  [ "$verdict" = pass ]
}

prepare_binary
failed=0
IFS=, read -r -a list <<<"$SCENARIOS"
for s in "${list[@]}"; do
  # A subshell per scenario: a runner error (die) fails that scenario only, and its VMs are
  # stopped by PID on the way out, also when the runner itself is interrupted.
  (
    trap stop_tracked EXIT
    trap 'exit 143' TERM INT
    run_scenario "$s"
  ) &
  SCENARIO_PID=$!
  rc=0
  wait "$SCENARIO_PID" || rc=$?
  SCENARIO_PID=""
  if [ "$rc" != 0 ]; then
    failed=1
    [ -s "$RUN_ROOT/summary-$s" ] || echo "RIP-VM scenario=$s verdict=fail reason=runner-error (see the error above)"
  fi
done
exit "$failed"
