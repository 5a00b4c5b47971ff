{
  description = "rip-server: a per-worker-socket application server, as a Nix appliance";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.default;

      # `nix run .#` serves the bundled app; `nix run .# -- ARGS` passes ARGS.
      serve =
        pkgs:
        pkgs.writeShellApplication {
          name = "rip-server-run";
          text = ''
            if [ "$#" -eq 0 ]; then
              set -- ${packageFor pkgs}/share/rip-server/apps/api
            fi
            exec ${lib.getExe (packageFor pkgs)} "$@"
          '';
        };

      # Every .nix file of the project, formatted as nixfmt would.
      nixfmtCheck =
        pkgs:
        pkgs.runCommand "rip-server-nixfmt-check" { nativeBuildInputs = [ pkgs.nixfmt ]; } ''
          cp -r ${
            lib.fileset.toSource {
              root = ./.;
              fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ./.;
            }
          } src
          chmod -R u+w src
          find src -name '*.nix' -print0 | xargs -0 nixfmt --check
          touch $out
        '';
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe (serve pkgs);
          meta.description = "Serve an app (default: the bundled example) with rip-server";
        };
      });

      overlays.default = final: _prev: {
        rip-server = final.callPackage ./nix/package.nix { };
      };

      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ ./nixos-module ];
          services.rip-server.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      # `nix flake check`: the package (its whole test suite runs in
      # checkPhase), every NixOS VM test, and the formatting of every .nix file.
      checks = forAllSystems (
        pkgs:
        {
          package = packageFor pkgs;
          nixfmt = nixfmtCheck pkgs;
        }
        // import ./vm-tests { inherit pkgs self; }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            nodejs
            oha
            haproxy
            openssl
            nixfmt
          ];
        };
      });

      # nixfmt is the RFC 166 style formatter (nixfmt-rfc-style is now an
      # alias of it); nixfmt-tree runs it over the whole tree for `nix fmt`.
      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
