# cluster, configuration "v2": the deploy, one server VM after the other.
{ lib, ... }:
{
  imports = [ ./cluster.nix ];
  services.rip-server.app = lib.mkForce "/srv/rip/app-v2";
}
