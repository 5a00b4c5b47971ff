// benches/js.sh's Bun baseline: Bun.serve on the Unix socket RIP_SOCKET, answering every
// request with the bytes the loader sends for apps/api's GET /ping. Bun only.
import fs from 'node:fs';

const socket = process.env.RIP_SOCKET;
const headers = { 'content-type': 'text/plain; charset=utf-8', 'rip-worker-id': process.env.RIP_WORKER_ID || '0' };
try { fs.unlinkSync(socket); } catch {}
Bun.serve({ unix: socket, idleTimeout: 0, fetch: () => new Response('pong', { headers }) });
process.on('SIGTERM', () => process.exit(0));
