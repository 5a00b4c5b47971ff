# The rip-server package: the binary (its test suite run in checkPhase),
# wrapped so the Node loader finds `node`, with the bundled example app.
{
  lib,
  rustPlatform,
  makeBinaryWrapper,
  nodejs,
  haproxy,
  openssl,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "rip-server";
  inherit (cargoToml.package) version;

  # Only what cargo reads: a change to the Nix files or docs rebuilds nothing.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../loaders
      ../apps
      ../tests
      ../benches
      ../proptest-regressions
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [ makeBinaryWrapper ];

  # The integration tests run the real binary with real workers on loopback:
  # Node for the bundled app, HAProxy for the cluster twin, openssl for an
  # RSA certificate.
  nativeCheckInputs = [
    nodejs
    haproxy
    openssl
  ];

  preCheck = ''
    export HOME=$(mktemp -d)
  '';

  postInstall = ''
    mkdir -p $out/share/rip-server
    cp -r apps $out/share/rip-server/apps
    wrapProgram $out/bin/rip-server --prefix PATH : ${lib.makeBinPath [ nodejs ]}
  '';

  meta = {
    description = "Per-worker-socket application server: one request per worker, zero-downtime rolling restarts";
    license = lib.licenses.mit;
    mainProgram = "rip-server";
    platforms = lib.platforms.linux;
  };
}
