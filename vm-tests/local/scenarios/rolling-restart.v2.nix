# rolling-restart, configuration "v2": the switch deploys a new app version. Only the app
# changes, so the generated config file changes and with it X-Reload-Triggers: NixOS reloads.
{ lib, ... }:
{
  imports = [ ./rolling-restart.nix ];
  services.rip-server.app = lib.mkForce "/srv/rip/app-v2";
}
