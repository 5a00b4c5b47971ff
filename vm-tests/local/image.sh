# The guest kernel and root image, built once and kept in the cache directory (sourced by
# run-local.sh after lib.sh; uses CACHE, HERE, REFRESH_IMAGE).
#
#   kernel: Debian's linux-image-cloud-amd64 for IMAGE_SUITE, fetched with `apt-get download`
#           through an apt configuration private to the cache (the host's apt setup is not
#           touched), unpacked with dpkg-deb. Kept: vmlinuz and the few modules the VMs load.
#   root:   `mmdebstrap --variant=minbase` of IMAGE_SUITE with IMAGE_PACKAGES, customised by
#           image-customize.sh, converted to an uncompressed newc cpio (measured fastest to
#           boot under TCG: the kernel copies it faster than it decompresses zstd or gzip).
#           Its name carries a hash of the package list, the mmdebstrap options and the scripts
#           that shape it, so any change builds a new one.
# Both come from the Debian mirror the host's apt sources use (RIP_VM_MIRROR overrides it).

IMAGE_SUITE=trixie
IMAGE_PACKAGES=(
  systemd systemd-sysv libnss-systemd # systemd 257 as PID 1, DynamicUser names via nss-systemd
  nodejs                              # the apps' runtime (Node 20)
  curl wrk                            # checks and load (wrk: Lua-scripted status counting)
  haproxy                             # the cluster scenario's load balancer
  iproute2 kmod                       # static addresses; insmod for virtio_net
  ca-certificates procps jq           # TLS trust store, ps/pgrep, JSON from /status
)
KERNEL_PACKAGE=linux-image-cloud-amd64
# virtio_net and what it depends on, in load order (the cloud kernel builds them as modules).
KERNEL_MODULES=(kernel/net/core/failover kernel/drivers/net/net_failover kernel/drivers/net/virtio_net)
MMDEBSTRAP_OPTS=(
  --variant=minbase
  --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
)

# debian_mirror: the Debian archive URI the host's apt sources use (deb822 or one-line format).
debian_mirror() {
  if [ -n "${RIP_VM_MIRROR:-}" ]; then
    echo "$RIP_VM_MIRROR"
    return
  fi
  local uri
  uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -Eo '(https?|file)://[^ ]+' | sed 's:/*$::' | grep -E '/debian$' | head -n1 || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

# apt_private ARGS...: apt-get with sources, lists, cache and state inside $CACHE/apt only.
apt_private() {
  local dir="$CACHE/apt"
  apt-get -q \
    -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts="$dir/empty" \
    -o Dir::Etc::Preferences="$dir/empty/none" -o Dir::Etc::PreferencesParts="$dir/empty" \
    -o Dir::State="$dir/state" -o Dir::State::Lists="$dir/state/lists" \
    -o Dir::State::Status="$dir/state/status" -o Dir::Cache="$dir/cache" \
    -o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o Acquire::Languages=none \
    -o APT::Sandbox::User=root "$@"
}
apt_cache_private() {
  local dir="$CACHE/apt"
  apt-cache \
    -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts="$dir/empty" \
    -o Dir::Etc::Preferences="$dir/empty/none" -o Dir::Etc::PreferencesParts="$dir/empty" \
    -o Dir::State="$dir/state" -o Dir::State::Lists="$dir/state/lists" \
    -o Dir::State::Status="$dir/state/status" -o Dir::Cache="$dir/cache" \
    -o APT::Architecture=amd64 -o APT::Architectures::=amd64 "$@"
}

# image_kernel: sets KERNEL (vmlinuz) and KERNEL_MODDIR (the kept modules), fetching if needed.
image_kernel() {
  local current="$CACHE/kernel/current" name dir pkg version tmp mod
  if [ "$REFRESH_IMAGE" != 1 ] && [ -s "$current" ]; then
    dir="$CACHE/kernel/$(cat "$current")"
    if [ -f "$dir/vmlinuz" ] && [ -f "$dir/release" ]; then
      KERNEL="$dir/vmlinuz"
      KERNEL_MODDIR="$dir/modules"
      KERNEL_RELEASE="$(cat "$dir/release")"
      return
    fi
  fi
  need_cmd apt-get apt
  need_cmd dpkg-deb dpkg
  log "fetching the guest kernel ($KERNEL_PACKAGE from $IMAGE_SUITE, $(debian_mirror))"
  mkdir -p "$CACHE/apt/empty" "$CACHE/apt/state/lists/partial" "$CACHE/apt/cache/archives/partial"
  : >"$CACHE/apt/state/status"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$(debian_mirror)" "$IMAGE_SUITE" >"$CACHE/apt/sources.list"
  apt_private update >"$CACHE/apt/update.log" 2>&1 ||
    die "apt-get update for $IMAGE_SUITE failed (see $CACHE/apt/update.log); is the Debian mirror reachable?"
  pkg="$(apt_cache_private depends "$KERNEL_PACKAGE" | awk '/Depends: linux-image-/ {print $2; exit}')"
  [ -n "$pkg" ] || die "cannot resolve $KERNEL_PACKAGE to a versioned kernel package in $IMAGE_SUITE"
  version="$(apt_cache_private show --no-all-versions "$pkg" | awk '/^Version:/ {print $2; exit}')"
  name="${pkg}_${version}"
  dir="$CACHE/kernel/$name"
  tmp="$(mktemp -d "$CACHE/tmp.kernel.XXXXXX")"
  (cd "$tmp" && apt_private download "$pkg" >download.log 2>&1) ||
    die "apt-get download $pkg failed (see $tmp/download.log)"
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  rm -rf "$dir"
  mkdir -p "$dir/modules"
  cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz"
  basename "$tmp"/x/boot/vmlinuz-* | sed 's/^vmlinuz-//' >"$dir/release"
  for mod in "${KERNEL_MODULES[@]}"; do
    mkdir -p "$dir/modules/$(dirname "$mod")"
    cp "$tmp"/x/usr/lib/modules/*/"$mod".ko* "$dir/modules/$(dirname "$mod")/" ||
      die "module $mod not in $pkg"
  done
  rm -rf "$tmp"
  echo "$name" >"$current"
  KERNEL="$dir/vmlinuz"
  KERNEL_MODDIR="$dir/modules"
  KERNEL_RELEASE="$(cat "$dir/release")"
  log "kernel: $name"
}

# image_key: hash of everything that shapes the root image.
image_key() {
  {
    echo "$IMAGE_SUITE"
    printf '%s\n' "${IMAGE_PACKAGES[@]}" "${MMDEBSTRAP_OPTS[@]}"
    cat "$HERE/image-customize.sh" "$HERE/cpio.py"
  } | sha256sum | cut -c1-16
}

# image_root: sets ROOT_CPIO and ROOT_FILES (the archive's path list), building if needed.
image_root() {
  local key tmp start
  key="$(image_key)"
  ROOT_CPIO="$CACHE/root-$key.cpio"
  ROOT_FILES="$CACHE/root-$key.files"
  if [ "$REFRESH_IMAGE" != 1 ] && [ -s "$ROOT_CPIO" ] && [ -s "$ROOT_FILES" ]; then
    return
  fi
  need_cmd mmdebstrap mmdebstrap
  need_cmd python3 python3
  start=$(now_ms)
  log "building the guest root ($IMAGE_SUITE: ${IMAGE_PACKAGES[*]}) with mmdebstrap"
  tmp="$(mktemp -d "$CACHE/tmp.root.XXXXXX")"
  if ! mmdebstrap "${MMDEBSTRAP_OPTS[@]}" --include="$(IFS=,; echo "${IMAGE_PACKAGES[*]}")" \
    --customize-hook="\"$HERE/image-customize.sh\" \"\$1\"" \
    --customize-hook="dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Package} \${Version}\n' >\"$tmp/versions\"" \
    "$IMAGE_SUITE" "$tmp/root.tar" "$(debian_mirror)" >"$tmp/mmdebstrap.log" 2>&1; then
    tail -n 20 "$tmp/mmdebstrap.log" >&2
    die "mmdebstrap failed (log: $tmp/mmdebstrap.log)"
  fi
  python3 "$HERE/cpio.py" from-tar "$tmp/root.tar" "$tmp/root.cpio" --list "$tmp/root.files"
  cp "$tmp/versions" "$CACHE/root-$key.versions"
  mv "$tmp/root.files" "$ROOT_FILES"
  mv "$tmp/root.cpio" "$ROOT_CPIO"
  rm -rf "$tmp"
  # images of other package lists are stale now (200+ MiB each)
  find "$CACHE" -maxdepth 1 -name 'root-*' ! -name "root-$key.*" -delete
  log "root image $(basename "$ROOT_CPIO") ($(du -m "$ROOT_CPIO" | cut -f1) MiB) built in $(secs_since "$start") s;" \
    "$(grep -E '^(systemd|nodejs|wrk|haproxy) ' "$CACHE/root-$key.versions" | tr '\n' ' ')"
}
