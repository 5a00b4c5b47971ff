# For nix/check-module.sh: the services.rip-server definitions a VM test
# gives one of its nodes (plus, optionally, one of that node's
# specialisations), as a module for nixcheck's eval-module.sh. Only the
# rip-server definitions are taken; the rest of the node is NixOS that the
# checker does not stub.
{
  file,
  node,
  specialisation ? null,
}:
{ pkgs, lib, ... }:
let
  # What the tests take from the flake, stubbed: the module itself is loaded
  # by the checker, the package is nixcheck's stub.
  self = {
    nixosModules.default = { };
    packages.${pkgs.stdenv.hostPlatform.system}.default = pkgs.rip-server;
  };
  test = import file { inherit pkgs self; };
  raw = test.nodes.${node};
  definitions =
    if lib.isFunction raw then
      raw {
        inherit pkgs lib;
        config = { };
        nodes = { };
      }
    else
      raw;
in
{
  imports = [
    { services.rip-server = definitions.services.rip-server; }
  ]
  ++ lib.optional (specialisation != null) {
    services.rip-server = definitions.specialisation.${specialisation}.configuration.services.rip-server;
  };
}
