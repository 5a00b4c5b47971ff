// The app of the VM scenarios. It answers with its version (version.mjs, written by
// run-local.sh and edited by the drivers), so a driver can tell which deploy is serving.
//
//   GET /ping -> pong     GET /version -> the version     anything else -> "<version> <host>"
import { version } from './version.mjs';

const text = (body, status = 200) =>
  new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8' } });

export default {
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === '/ping') return text('pong');
    if (url.pathname === '/version') return text(version);
    return text(`${version} ${url.hostname}\n`);
  },
};
