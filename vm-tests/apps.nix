# Tiny fetch-handler apps for the VM tests: each answers every request with
# its own name, so a test can tell which version or host answered.
{ pkgs }:
let
  app =
    answer:
    pkgs.writeTextDir "index.mjs" ''
      export default {
        fetch() {
          return new Response("${answer}\n", { headers: { "content-type": "text/plain" } });
        },
      };
    '';
in
{
  inherit app;
  v1 = app "v1";
  v2 = app "v2";
  v3 = app "v3";
  api = app "api";
  shop = app "shop";
}
