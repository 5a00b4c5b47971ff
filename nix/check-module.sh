#!/usr/bin/env bash
# Offline checks of the Nix appliance (no Nix store builds, no network):
#
#   1. every .nix file parses (nix-instantiate --parse);
#   2. flake.lock pins nixpkgs to the node in shared/nix/nixpkgs-pin.json,
#      rev, narHash and lastModified unchanged;
#   3. the flake's outputs are wired (with nixpkgs' lib standing in for
#      nixpkgs): checks hold the package, every VM test and the format check;
#   4. nix/check_module.py: services.rip-server evaluated over a matrix of
#      option sets with nixpkgs' real lib (nixcheck), the generated units and
#      config file checked, and every generated ExecStart run through the
#      real binary's --check (the flag round trip).
#
# Usage: nix/check-module.sh [--update]   (--update rewrites nix/expected/)
# Needs: nix-instantiate and nix (apt-get install nix-bin), jq, python3,
# openssl, cargo. Finds nixcheck in $NIXCHECK_DIR, else
# <repo>/../shared/nix/nixcheck, else /work/shared/nix/nixcheck. Uses
# $RIP_SERVER_BIN if set, else builds target/debug/rip-server.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

die() {
  echo "check-module: $*" >&2
  exit 1
}

candidates=("${NIXCHECK_DIR:-}" "$repo/../shared/nix/nixcheck" /work/shared/nix/nixcheck)
nixcheck=""
for dir in "${candidates[@]}"; do
  if [ -n "$dir" ] && [ -x "$dir/eval-module.sh" ]; then
    nixcheck="$(cd "$dir" && pwd)"
    break
  fi
done
[ -n "$nixcheck" ] || die "nixcheck not found: looked in \$NIXCHECK_DIR (${NIXCHECK_DIR:-unset}), $repo/../shared/nix/nixcheck and /work/shared/nix/nixcheck; set NIXCHECK_DIR to the folder holding eval-module.sh"
pin="$nixcheck/../nixpkgs-pin.json"
nixpkgs_lib="$nixcheck/../nixpkgs-lib"
for tool in nix-instantiate nix jq python3 openssl; do
  command -v "$tool" >/dev/null || die "$tool is not installed (.ci/run installs it)"
done
[ -f "$pin" ] || die "nixpkgs pin not found at $pin"

echo "== 1. every .nix file parses"
mapfile -t nix_files < <(git ls-files --cached --others --exclude-standard '*.nix')
[ "${#nix_files[@]}" -gt 0 ] || die "no .nix files found"
for file in "${nix_files[@]}"; do
  nix-instantiate --parse "$file" >/dev/null || die "$file does not parse"
  echo "   ok $file"
done

echo "== 2. flake.lock pins nixpkgs to $pin"
jq -e --slurpfile pin "$pin" '
  .version == 7
  and .root == "root"
  and .nodes.root.inputs == { nixpkgs: "nixpkgs" }
  and .nodes.nixpkgs.locked == $pin[0].locked
  and .nodes.nixpkgs.original == $pin[0].original
' flake.lock >/dev/null || die "flake.lock's nixpkgs node differs from $pin (rev, narHash, lastModified and original must be copied unchanged)"
echo "   ok: rev $(jq -r .nodes.nixpkgs.locked.rev flake.lock)"

echo "== 3. flake outputs are wired (nixpkgs' lib standing in for nixpkgs)"
# A copy of the tracked sources only (a path: flake copies its directory
# into the store, and target/ is large).
flake="$(mktemp -d)"
trap 'rm -rf "$flake" "$flake.err"' EXIT
git ls-files --cached --others --exclude-standard -z | xargs -0 cp --parents -t "$flake"
flake_eval() {
  nix --extra-experimental-features 'nix-command flakes' eval --json --no-write-lock-file \
    --override-input nixpkgs "path:$(cd "$nixpkgs_lib" && pwd)" "path:$flake#$1" --apply "$2" 2>"$flake.err"
}
expect_output() {
  local got
  got="$(flake_eval "$1" "$2")" || die "nix eval .#$1 failed: $(grep -v '^warning:' "$flake.err" | tail -5)"
  [ "$got" = "$3" ] || die ".#$1: expected $3, got $got"
  echo "   ok .#$1 -> $got"
}
systems='["aarch64-linux","x86_64-linux"]'
for output in packages apps checks devShells formatter; do
  expect_output "$output" builtins.attrNames "$systems"
done
expect_output checks.x86_64-linux builtins.attrNames '["nixfmt","package","vm-cluster","vm-rolling-restart","vm-tls-hosts"]'
expect_output packages.x86_64-linux builtins.attrNames '["default"]'
expect_output apps.x86_64-linux.default.type 'x: x' '"app"'
expect_output nixosModules.default builtins.isFunction true
expect_output overlays.default builtins.isFunction true

echo "== 4. services.rip-server over the option matrix, and the flag round trip"
if [ -z "${RIP_SERVER_BIN:-}" ]; then
  cargo build --locked --quiet --bin rip-server
  RIP_SERVER_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/rip-server"
fi
[ -x "$RIP_SERVER_BIN" ] || die "no rip-server binary at $RIP_SERVER_BIN"
NIXCHECK_DIR="$nixcheck" RIP_SERVER_BIN="$RIP_SERVER_BIN" python3 nix/check_module.py "$@"
