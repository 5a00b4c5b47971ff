# socket-activation: systemd owns the listening socket (rip-server.socket), the server takes it
# through LISTEN_FDS, so a restart of rip-server itself refuses no connection.
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
    socketActivation = true;
  };
}
