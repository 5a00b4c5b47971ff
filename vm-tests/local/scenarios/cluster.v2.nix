# cluster, configuration "v2": the deploy, one server VM after the other, as
# vm-tests/cluster.nix's "upgrade" specialisation: a new app version *and* another build of the
# server. The new package changes ExecStart, so switch-to-configuration restarts the unit (stop,
# then start: the drain above, then the new build). The NixOS test's other build is a
# symlinkJoin of the package; offline it is another stub package (a new store path, with
# mainProgram rip-server), which run-local.sh fills with this checkout's binary like any
# rip-server package.
{ lib, pkgs, ... }:
{
  imports = [ ./cluster.nix ];
  services.rip-server = {
    app = lib.mkForce "/srv/rip/app-v2";
    package = lib.mkForce (
      pkgs.nixcheck.mkStubPkg "rip-server-upgraded" // { meta.mainProgram = "rip-server"; }
    );
  };
}
