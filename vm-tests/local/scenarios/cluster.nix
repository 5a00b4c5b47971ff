# cluster, configuration "base" (each server VM), as vm-tests/cluster.nix's nodes: app v1, two
# workers, plain HTTP on 8080 (no capability needed), no access log, and a stop that first
# drains for shutdown_delay_ms (/server answers 503 so HAProxy takes the node out, the app is
# still served) before the listener closes.
{
  imports = [ ./slow-guest.nix ];
  services.rip-server = {
    enable = true;
    app = "/srv/rip/app-v1";
    workers = 2;
    https.enable = false;
    http.port = 8080;
    accessLog.enable = false;
    # Longer than HAProxy needs to see two failed checks (2 x 250 ms, with room for TCG).
    settings.shutdown_delay_ms = 3000;
  };
}
