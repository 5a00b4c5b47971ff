// The example app bundled with rip-server: a plain fetch handler (no dependencies), run by the
// Node loader (loaders/node.mjs). Its routes exist to demonstrate and test the server:
//
//   cargo run --release -- apps/api http:5002
//   curl http://localhost:5002/ping
//
// GET /ping, GET /, ANY /echo, GET /sleep?ms=N, GET /stream?n=N&ms=M, GET /bytes?n=N,
// GET /ready (the app's own route, not the server's readiness probe), GET /status/:code.

const text = (body, status = 200, headers = {}) =>
  new Response(body, { status, headers: { 'content-type': 'text/plain; charset=utf-8', ...headers } });
const json = (value, status = 200) =>
  new Response(JSON.stringify(value), { status, headers: { 'content-type': 'application/json' } });

// An integer query parameter, clamped to [0, max].
const intParam = (url, name, fallback, max) => {
  const n = Number.parseInt(url.searchParams.get(name) ?? '', 10);
  return Number.isFinite(n) ? Math.min(Math.max(n, 0), max) : fallback;
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// n server-sent events `data: i`, ms apart; stops early when the client goes away.
function events(n, ms) {
  const enc = new TextEncoder();
  let i = 0;
  let timer;
  return new ReadableStream({
    async pull(controller) {
      if (i >= n) return controller.close();
      if (i > 0) await new Promise((resolve) => (timer = setTimeout(resolve, ms)));
      controller.enqueue(enc.encode(`data: ${i++}\n\n`));
    },
    cancel() {
      clearTimeout(timer);
    },
  });
}

// n bytes of 'x' in 64 KiB chunks, produced only as fast as they are consumed.
function bytes(n) {
  const chunk = new Uint8Array(64 * 1024).fill(0x78);
  let left = n;
  return new ReadableStream({
    pull(controller) {
      if (left <= 0) return controller.close();
      const size = Math.min(left, chunk.length);
      controller.enqueue(size === chunk.length ? chunk.slice() : chunk.slice(0, size));
      left -= size;
    },
  });
}

export default {
  async fetch(req) {
    const url = new URL(req.url);
    const path = url.pathname;

    if (path === '/echo') {
      return json({
        method: req.method,
        path,
        query: Object.fromEntries(url.searchParams),
        headers: Object.fromEntries([...req.headers].map(([k, v]) => [k.toLowerCase(), v])),
        body: await req.text(),
      });
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return text('not found', 404);

    if (path === '/ping') return text('pong');
    if (path === '/') {
      return json({
        hello: 'rip-server',
        worker: Number(process.env.RIP_WORKER_ID ?? 0),
        pid: process.pid,
        version: Number(process.env.RIP_VERSION ?? 0),
      });
    }
    if (path === '/sleep') {
      const ms = intParam(url, 'ms', 0, 60_000);
      await sleep(ms);
      return text(`slept ${ms}`);
    }
    if (path === '/stream') {
      const n = intParam(url, 'n', 5, 100_000);
      const ms = intParam(url, 'ms', 100, 60_000);
      return new Response(events(n, ms), {
        headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
      });
    }
    if (path === '/bytes') {
      const n = intParam(url, 'n', 1024, 100 * 1024 * 1024);
      return new Response(bytes(n), {
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(n) },
      });
    }
    if (path === '/ready') return text('app ready route');

    const status = /^\/status\/([^/]+)$/.exec(path);
    if (status) {
      const code = /^\d{3}$/.test(status[1]) ? Number(status[1]) : 0;
      // The Fetch API's Response cannot carry 1xx, so 100-199 are rejected like out-of-range codes.
      if (code < 200 || code > 599) return text(`status must be 200-599, got ${status[1]}`, 400);
      return new Response(null, { status: code });
    }
    return text('not found', 404);
  },
};
