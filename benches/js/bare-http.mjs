// benches/js.sh's baseline: a bare node:http server on the Unix socket RIP_SOCKET that answers
// every request with the bytes the loader sends for apps/api's GET /ping (status, the same
// headers, `pong`). Runs under node and under bun (Bun's node:http). No fetch handler, no
// Request or Response: the most a JavaScript server does on this socket.
import http from 'node:http';
import fs from 'node:fs';

const socket = process.env.RIP_SOCKET;
const headers = {
  'content-type': 'text/plain; charset=utf-8',
  'rip-worker-id': process.env.RIP_WORKER_ID || '0',
  'content-length': '4',
};
try { fs.unlinkSync(socket); } catch {}
const server = http.createServer((req, res) => {
  req.resume();
  res.writeHead(200, headers);
  res.end('pong');
});
server.keepAliveTimeout = 0;
server.listen(socket);
process.on('SIGTERM', () => process.exit(0));
