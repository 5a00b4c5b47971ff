# rolling-restart, configuration "base": one app (v1) under reload = "process", plain HTTP on
# port 80. The paths are guest paths the runner fills (run-local.sh: scenario_overlay).
{
  imports = [ ./slow-guest.nix ];
  services.rip-server = {
    enable = true;
    app = "/srv/rip/app-v1";
    workers = 2;
    reload = "process";
    http = {
      enable = true;
      port = 80;
    };
    https.enable = false;
  };
}
