# cluster, configuration "base" (each server VM): app v1, plain HTTP on 80 for the balancer.
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
