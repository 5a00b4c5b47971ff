# services.rip-server: rip-server as a hardened NixOS service.
#
# The options are written into one TOML file (`settings`, RFC 42), installed
# at the stable path /etc/rip-server/config.toml. ExecStart names only that
# path, never the file's store path, so a new app version, host table or
# worker count changes nothing in ExecStart: `nixos-rebuild switch` reloads
# the unit (reloadTriggers, Type=notify-reload: SIGHUP, a rolling restart of
# the workers, READY=1 when it is done) instead of restarting the server.
# A new rip-server package does change ExecStart and restarts it; with
# `socketActivation` the ports stay open meanwhile.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib)
    concatStringsSep
    filterAttrs
    literalExpression
    mapAttrs
    mapAttrsToList
    mkDefault
    mkEnableOption
    mkIf
    mkOption
    mkPackageOption
    optional
    optionals
    types
    ;

  cfg = config.services.rip-server;

  settingsFormat = pkgs.formats.toml { };

  # What ExecStart names; the file behind it changes, this path does not.
  configPath = "/etc/rip-server/config.toml";
  configFile = settingsFormat.generate "rip-server.toml" cfg.settings;

  workersType = types.either (types.ints.between 1 1024) (
    types.enum [
      "auto"
      "half"
      "2x"
      "3x"
    ]
  );

  millis = types.ints.between 1 86400000;

  # Certificates are public and may live in the store; a key file is only
  # ever named by its path, so it is never copied into the world-readable
  # store.
  certPath = file: if file == null then null else "${file}";
  keyPath = file: if file == null then null else toString file;
  appPath = app: if app == null then null else "${app}";

  # `r:` without its prefix: only the parts that are set.
  restart =
    let
      p = cfg.restartPolicy;
      parts =
        optional (p.requests != null) (toString p.requests)
        ++ optional (p.seconds != null) "${toString p.seconds}s"
        ++ optional (p.reloads != null) "${toString p.reloads}r";
    in
    if parts == [ ] then null else concatStringsSep "," parts;

  # The [hosts] table, in the schema the host registry reads.
  hostEntry =
    _: host:
    filterAttrs (_: v: v != null) {
      app = appPath host.app;
      inherit (host) workers;
      cert = certPath host.certFile;
      key = keyPath host.keyFile;
    };

  listenerSettings =
    if cfg.https.enable then
      {
        https_port = cfg.https.port;
        cert = certPath cfg.https.certFile;
        key = keyPath cfg.https.keyFile;
        auto_tls = if cfg.https.autoTls then true else null;
        hsts = if cfg.https.hsts then true else null;
      }
      // (
        if cfg.http.enable && cfg.http.redirectToHttps then
          { redirect_port = cfg.http.port; }
        else
          { no_redirect_http = true; }
      )
    else if cfg.http.enable then
      { listen = "http:${toString cfg.http.port}"; }
    else
      { };

  # Every typed option, as the config file keys the server reads.
  typedSettings = filterAttrs (_: v: v != null) (
    {
      app = appPath cfg.app;
      inherit (cfg) workers reload;
      inherit restart;
      max_queue = cfg.maxQueue;
      queue_timeout_ms = cfg.queueTimeoutMs;
      connect_timeout_ms = cfg.connectTimeoutMs;
      read_timeout_ms = cfg.readTimeoutMs;
      no_access_log = if cfg.accessLog.enable then null else true;
      json_logging = if cfg.accessLog.json then true else null;
      hosts = if cfg.hosts == { } then null else mapAttrs hostEntry cfg.hosts;
    }
    // listenerSettings
  );

  # The ports the server listens on (HTTPS, then the HTTP redirect or HTTP).
  ports = optional cfg.https.enable cfg.https.port ++ optional cfg.http.enable cfg.http.port;

  # systemd binds the ports itself with socket activation.
  bindsPrivilegedPort = !cfg.socketActivation && lib.any (port: port < 1024) ports;

  hostOptions =
    { name, ... }:
    {
      options = {
        app = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = literalExpression "./shop";
          description = ''
            The app that serves `${name}`: a directory (entry {file}`index.mjs`,
            {file}`index.js` or an executable {file}`serve`) or an entry file.
            Required.
          '';
        };
        workers = mkOption {
          type = types.nullOr workersType;
          default = null;
          example = 2;
          description = ''
            Workers for this host's app, in the same forms as
            {option}`services.rip-server.workers`; `null` uses that value.
          '';
        };
        certFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/var/lib/acme/example.com/fullchain.pem";
          description = "PEM certificate chain for this host, chosen by SNI.";
        };
        keyFile = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = "/var/lib/acme/example.com/key.pem";
          description = ''
            PEM private key for {option}`certFile`. Only its path is written
            to the configuration; the file is never copied into the Nix store.
          '';
        };
      };
    };
in
{
  # interface
  options.services.rip-server = {
    enable = mkEnableOption "rip-server, the per-worker-socket application server";

    package = mkPackageOption pkgs "rip-server" { };

    app = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = literalExpression "./api";
      description = ''
        The default app: a directory (entry {file}`index.mjs`, {file}`index.js`
        or an executable {file}`serve`) or an entry file. A path in the Nix
        store makes every new version a reload (a rolling restart of the
        workers); a mutable directory such as {file}`/srv/api` is watched with
        {option}`reload`.
      '';
    };

    workers = mkOption {
      type = workersType;
      default = "half";
      example = 4;
      description = ''
        Worker processes: a count, `"auto"` (one per core), `"half"` (half
        the cores, at least one), `"2x"` or `"3x"` (per core).
      '';
    };

    restartPolicy = {
      requests = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 5000;
        description = "Recycle a worker after this many requests (0: never; `null`: 10000).";
      };
      seconds = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 600;
        description = "Recycle a worker after this many seconds (0: never; `null`: 3600).";
      };
      reloads = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 10;
        description = ''
          Recycle a worker after this many in-place module reloads (0: never;
          `null`: 10).
        '';
      };
    };

    reload = mkOption {
      type = types.enum [
        "none"
        "process"
        "module"
      ];
      default = "process";
      description = ''
        How changes to the app's files are picked up: `process` rolls the
        workers, `module` reloads the handler inside each worker, `none`
        watches nothing. A new app path in the configuration always rolls.
      '';
    };

    http = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Listen for plain HTTP on {option}`http.port`: a redirect to HTTPS
          when {option}`https.enable` is set, else the app itself.
        '';
      };
      port = mkOption {
        type = types.port;
        default = 80;
        description = "The plain-HTTP port.";
      };
      redirectToHttps = mkOption {
        type = types.bool;
        default = cfg.https.enable;
        defaultText = literalExpression "config.services.rip-server.https.enable";
        description = "Answer plain HTTP with `301` to the same URL over HTTPS.";
      };
    };

    https = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Serve HTTPS on {option}`https.port` (HTTP/2 by ALPN).";
      };
      port = mkOption {
        type = types.port;
        default = 443;
        description = "The HTTPS port.";
      };
      certFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/lib/acme/example.com/fullchain.pem";
        description = ''
          PEM certificate chain. Without it (and without
          {option}`https.autoTls`), rip-server serves a self-signed
          certificate kept in its state directory.
        '';
      };
      keyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/var/lib/acme/example.com/key.pem";
        description = ''
          PEM private key for {option}`https.certFile`. Only its path is
          written to the configuration; the file is never copied into the
          Nix store. It must be readable by the service (DynamicUser: use
          group permissions and {option}`systemd.services.rip-server.serviceConfig.SupplementaryGroups`,
          or systemd credentials).
        '';
      };
      autoTls = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Use an automatic certificate (mkcert if installed, else
          self-signed, cached in {file}`/var/lib/rip-server`).
        '';
      };
      hsts = mkOption {
        type = types.bool;
        default = false;
        description = "Add `Strict-Transport-Security` to HTTPS responses.";
      };
    };

    hosts = mkOption {
      type = types.attrsOf (types.submodule hostOptions);
      default = { };
      example = literalExpression ''
        {
          "api.example.com" = {
            app = ./api;
            workers = 4;
          };
          "shop.example.com" = {
            app = ./shop;
            certFile = "/var/lib/acme/shop.example.com/fullchain.pem";
            keyFile = "/var/lib/acme/shop.example.com/key.pem";
          };
        }
      '';
      description = ''
        The declarative host registry, written to the configuration's
        `[hosts]` table: each host name routes (by `Host` and SNI) to its own
        app and worker pool. Hosts not listed go to {option}`app`, if set.
        `rip-server add/remove` refuse to edit it.
      '';
    };

    maxQueue = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = 1024;
      description = "Requests that may wait for a worker before new ones get 503 (`null`: 8192).";
    };

    queueTimeoutMs = mkOption {
      type = types.nullOr millis;
      default = null;
      example = 1000;
      description = "How long a request may wait for a worker before it gets 504 (`null`: 2000).";
    };

    connectTimeoutMs = mkOption {
      type = types.nullOr millis;
      default = null;
      description = "How long dialling a worker's socket may take (`null`: 200).";
    };

    readTimeoutMs = mkOption {
      type = types.nullOr millis;
      default = null;
      example = 30000;
      description = ''
        How long a worker may take to send response headers before it is
        presumed hung, answered 504 and replaced (`null`: 5000).
      '';
    };

    accessLog = {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = "Log one line per request to the journal.";
      };
      json = mkOption {
        type = types.bool;
        default = false;
        description = "Write the logs, access log included, as JSON lines.";
      };
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the HTTP and HTTPS ports that are enabled in the firewall.";
    };

    socketActivation = mkEnableOption ''
      systemd socket activation: a {file}`rip-server.socket` unit holds the
      ports and passes them to the server (`LISTEN_FDS`), so even a restart
      of the server itself (a new package) refuses no connection
    '';

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--threads=4" ];
      description = ''
        Extra command-line arguments. They change ExecStart, so changing them
        restarts the server; prefer {option}`settings`, which reloads.
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = literalExpression ''
        {
          shutdown_delay_ms = 3000;
          grace_ms = 20000;
          max_body_bytes = 10485760;
        }
      '';
      description = ''
        Free-form rip-server configuration (RFC 42), written to
        {file}`${configPath}`: every command-line flag has a key of the same
        name with `_` for `-` (`rip-server --help`). The typed options above
        are written here too; setting a key that one of them also sets is a
        conflicting definition, so use the typed option for it.
      '';
    };
  };

  # implementation
  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.https.enable || cfg.http.enable;
          message = "services.rip-server: enable https or http (or both: http then redirects to https).";
        }
        {
          assertion = !(cfg.https.enable && cfg.http.enable && !cfg.http.redirectToHttps);
          message = ''
            services.rip-server: rip-server serves one listener; with https.enable, http only
            redirects to it. Set http.redirectToHttps = true, or disable https or http.
          '';
        }
        {
          assertion = cfg.http.redirectToHttps -> cfg.https.enable;
          message = "services.rip-server.http.redirectToHttps needs https.enable: there is no HTTPS to redirect to.";
        }
        {
          assertion = !(cfg.https.enable && cfg.http.enable && cfg.https.port == cfg.http.port);
          message = "services.rip-server: http.port and https.port are both ${toString cfg.https.port}; give them different ports.";
        }
        {
          assertion = (cfg.https.certFile == null) == (cfg.https.keyFile == null);
          message = ''
            services.rip-server.https: certFile and keyFile come as a pair; set both (the
            certificate chain and its private key) or neither.
          '';
        }
        {
          assertion = !(cfg.https.autoTls && cfg.https.certFile != null);
          message = "services.rip-server.https: choose either autoTls or certFile/keyFile, not both.";
        }
        {
          assertion =
            cfg.https.enable
            || !(cfg.https.certFile != null || cfg.https.autoTls || cfg.https.hsts);
          message = "services.rip-server.https: certFile, autoTls and hsts apply only with https.enable = true.";
        }
        {
          assertion = cfg.app != null || cfg.hosts != { };
          message = "services.rip-server: nothing to serve; set app (the default app) or at least one entry in hosts.";
        }
      ]
      ++ lib.concatLists (
        mapAttrsToList (name: host: [
          {
            assertion = host.app != null;
            message = "services.rip-server.hosts.\"${name}\".app is not set: every host needs the app that serves it.";
          }
          {
            assertion = (host.certFile == null) == (host.keyFile == null);
            message = "services.rip-server.hosts.\"${name}\": certFile and keyFile come as a pair; set both or neither.";
          }
          {
            assertion = host.certFile == null || cfg.https.enable;
            message = "services.rip-server.hosts.\"${name}\".certFile needs https.enable = true.";
          }
        ]) cfg.hosts
      );

    warnings = optional (
      cfg.https.enable
      && cfg.https.certFile == null
      && !cfg.https.autoTls
      && lib.all (host: host.certFile == null) (lib.attrValues cfg.hosts)
    ) "services.rip-server serves HTTPS with a self-signed certificate; set https.certFile/keyFile, or https.autoTls = true to say that is intended.";

    services.rip-server.settings = typedSettings // {
      # A fixed instance name: the control socket stays
      # /run/rip-server/rip-server.ctl.sock whatever the app's store path.
      name = mkDefault "rip-server";
    };

    environment.etc."rip-server/config.toml".source = configFile;

    systemd.services.rip-server = {
      description = "rip-server application server";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ optional cfg.socketActivation "rip-server.socket";
      requires = optional cfg.socketActivation "rip-server.socket";
      # A new config (app version, hosts, workers, settings) reloads: a
      # rolling restart of the workers, no dropped request.
      reloadTriggers = [ configFile ];
      # With socket activation, a restart (new package) must leave the socket
      # running; stop-and-start would close the ports meanwhile.
      stopIfChanged = !cfg.socketActivation;

      serviceConfig = {
        # SIGHUP, then RELOADING=1 … READY=1 from the server when the roll is done.
        Type = "notify-reload";
        NotifyAccess = "main";
        ExecStart = utils.escapeSystemdExecArgs (
          [
            (lib.getExe cfg.package)
            "--config"
            configPath
          ]
          ++ cfg.extraArgs
        );
        # SIGTERM to the server only: it drains its workers itself.
        KillMode = "mixed";
        Restart = "on-failure";
        RestartSec = "2s";
        # Exit 2 is a configuration error: restarting would not fix it.
        RestartPreventExitStatus = 2;
        LimitNOFILE = 65536;

        DynamicUser = true;
        RuntimeDirectory = "rip-server";
        RuntimeDirectoryMode = "0700";
        StateDirectory = "rip-server";
        StateDirectoryMode = "0700";
        UMask = "0077";

        AmbientCapabilities = optionals bindsPrivilegedPort [ "CAP_NET_BIND_SERVICE" ];
        CapabilityBoundingSet = if bindsPrivilegedPort then [ "CAP_NET_BIND_SERVICE" ] else [ "" ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          # pkey_alloc/pkey_mprotect/pkey_free: V8 (Node) allocates a memory
          # protection key at start to guard its JIT code. They act on the
          # process's own memory only. Not in @system-service: without this
          # line a Node worker is killed with SIGSYS (syscall 330) unless
          # SystemCallErrorNumber turns the kill into an error, and with it
          # V8 silently loses that protection.
          "@pkey"
          "~@privileged"
        ];
        # A refused system call fails (libuv then falls back) instead of
        # killing the worker. No MemoryDenyWriteExecute: Node's JIT needs
        # writable, executable memory.
        SystemCallErrorNumber = "EPERM";
      };
    };

    systemd.sockets.rip-server = mkIf cfg.socketActivation {
      description = "rip-server listening sockets";
      wantedBy = [ "sockets.target" ];
      # The server tells them apart by port (HTTPS, then the HTTP redirect).
      listenStreams = map toString ports;
      socketConfig = {
        NoDelay = true;
        Backlog = 4096;
      };
    };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall ports;
  };

  meta.maintainers = [ ];
}
