# tls-hosts: two hosts -> two apps over HTTPS (one certificate for both names), port 80 answers
# 301 to HTTPS, HSTS, public /status; under DynamicUser with the module's hardening.
# The certificate is made by run-local.sh (scenario_overlay) at these guest paths.
{
  imports = [ ./slow-guest.nix ];
  services.rip-server = {
    enable = true;
    workers = 1;
    reload = "process";
    http = {
      enable = true;
      port = 80;
    };
    https = {
      enable = true;
      port = 443;
      certFile = "/etc/rip-vm/tls/cert.pem";
      keyFile = "/etc/rip-vm/tls/key.pem";
      hsts = true;
    };
    hosts = {
      "a.test".app = "/srv/rip/app-a";
      "b.test".app = "/srv/rip/app-b";
    };
  };
}
