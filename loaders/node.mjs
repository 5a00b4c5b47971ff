// rip-server Node loader: runs a fetch-handler module as a rip-server worker.
//
// Contract: docs/worker-protocol.md (the worker protocol). This file is embedded in the
// rip-server binary (include_str!), written to the private runtime dir and started as
// `node <path>` (or `bun <path>` with --runtime=bun), cwd = app dir, stdin closed.
//
// Environment read:
//   RIP_SOCKET     unix socket path to bind (HTTP/1.1; a stale file there is unlinked first)
//   RIP_WORKER_ID  integer worker id, echoed in every response as `Rip-Worker-Id`
//   RIP_APP_DIR    app directory (module reload busts the cache of files under it)
//   RIP_ENTRY      absolute path of the entry module exporting the fetch handler
//   RIP_RELOAD     none | process | module (only `module` acts on SIGHUP)
//   RIP_CONTROL    server control socket; best-effort POST /worker {"op":"join"|"quit",...}
//   RIP_VERSION    generation number, reported in join/quit
//
// Behaviour in short: `Rip-Probe: 1` + `/ready` answers readiness; one app request at a time
// (a concurrent one gets 503 + `Rip-Worker-Busy: 1`); SIGHUP (module mode) reloads the handler
// when idle, keeping the last good one on failure; SIGTERM drains (503 + `Rip-Worker-Draining: 1`
// for new requests), sends quit and exits 0; a second SIGTERM/SIGINT exits at once; the worker
// exits when its parent dies. Log lines are single-line (the server forwards them to its log).

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import * as nodeModule from 'node:module';

const env = process.env;
const SOCKET = env.RIP_SOCKET;
const WORKER_ID = String(env.RIP_WORKER_ID ?? '0');
const APP_DIR = path.resolve(env.RIP_APP_DIR || process.cwd());
const ENTRY = env.RIP_ENTRY ? path.resolve(APP_DIR, env.RIP_ENTRY) : '';
const RELOAD = env.RIP_RELOAD || 'none';
const CONTROL = env.RIP_CONTROL || '';
const VERSION = Number(env.RIP_VERSION ?? 0) || 0;
const WORKER_NUM = Number(WORKER_ID) || 0;

const oneLine = (v) => String(v).replace(/\s*\n\s*/g, ' | ').trim();
// An error with its stack on one line, leaving out Node-internal and loader frames.
const errText = (e) => {
  if (!e || !e.stack) return oneLine(e);
  const own = (l) => /^\s+at /.test(l) && (/[( ]node:/.test(l) || l.includes(import.meta.url));
  return oneLine(String(e.stack).split('\n').filter((l) => !own(l)).join('\n'));
};
const errShort = (e) => oneLine(e && e.name && e.message !== undefined ? `${e.name}: ${e.message}` : e);
const log = (msg) => process.stdout.write(`${oneLine(msg)}\n`);
const logErr = (msg) => process.stderr.write(`${oneLine(msg)}\n`);

if (!SOCKET || !ENTRY) {
  logErr('rip-loader: RIP_SOCKET and RIP_ENTRY must be set (see docs/worker-protocol.md)');
  process.exit(1);
}

// ---------------------------------------------------------------- handler loading

const ENTRY_URL = pathToFileURL(ENTRY).href;
// Node resolves modules to real paths, so the app dir is matched by its real path too.
let APP_DIR_REAL = APP_DIR;
try { APP_DIR_REAL = fs.realpathSync(APP_DIR); } catch {}
const APP_DIRS = [...new Set([APP_DIR, APP_DIR_REAL])];
const APP_DIR_URLS = APP_DIRS.map((d) => pathToFileURL(d).href.replace(/\/?$/, '/'));

function resolveHandler(mod) {
  const d = mod && mod.default;
  if (d && typeof d.fetch === 'function') return d.fetch.bind(d); // { fetch } or Hono-style app
  if (typeof d === 'function') return d; // export default function (req)
  if (mod && typeof mod.fetch === 'function') return mod.fetch; // export function fetch
  return null;
}

const NO_HANDLER =
  'exports no fetch handler (expected `export default { fetch }`, `export default app` with ' +
  'app.fetch, `export default function (req)`, or `export function fetch`)';

async function loadHandler(url) {
  const handler = resolveHandler(await import(url));
  if (!handler) throw new Error(`${ENTRY} ${NO_HANDLER}`);
  return handler;
}

// In module mode, re-importing the entry with `?rip-reload=N` re-evaluates the entry; this
// resolve hook carries the query on to the app's own files (not node_modules) so that the
// modules it imports are re-evaluated too. CommonJS files are dropped from require.cache.
if (RELOAD === 'module' && typeof nodeModule.register === 'function') {
  const hooks = `
    let appDirs = [];
    export function initialize(data) { appDirs = data.appDirs; }
    export async function resolve(specifier, context, next) {
      const r = await next(specifier, context);
      const m = context.parentURL && /[?&]rip-reload=(\\d+)/.exec(context.parentURL);
      if (m && appDirs.some((d) => r.url.startsWith(d)) && !r.url.includes('/node_modules/') && !r.url.includes('?'))
        return { ...r, url: r.url + '?rip-reload=' + m[1] };
      return r;
    }`;
  try {
    nodeModule.register(`data:text/javascript,${encodeURIComponent(hooks)}`, {
      data: { appDirs: APP_DIR_URLS },
    });
  } catch (e) {
    logErr(`rip-loader: module reload will only re-evaluate the entry file: ${errShort(e)}`);
  }
}

function forgetCommonJs() {
  try {
    const cache = createRequire(ENTRY).cache || {};
    const nm = `${path.sep}node_modules${path.sep}`;
    for (const key of Object.keys(cache)) {
      if (APP_DIRS.some((d) => key.startsWith(d + path.sep)) && !key.includes(nm)) delete cache[key];
    }
  } catch {}
}

// ---------------------------------------------------------------- state

let handler = null; // the current (last good) fetch handler
let loading = null; // promise while the initial load or a reload runs
let inflight = false; // an app request is in flight (single-inflight)
let reloadPending = false;
let reloadCount = 0;
let draining = false;

function reload() {
  reloadPending = false;
  const n = ++reloadCount;
  forgetCommonJs();
  loading = loadHandler(`${ENTRY_URL}?rip-reload=${n}`)
    .then(
      (h) => {
        handler = h;
        log(`reloaded ${ENTRY} (reload #${n})`);
      },
      (e) => logErr(`reload of ${ENTRY} failed, keeping the last good handler: ${errShort(e)}`),
    )
    .finally(() => {
      loading = null;
      maybeReloadWhenIdle();
    });
  return loading;
}

function maybeReloadWhenIdle() {
  if (reloadPending && !loading && !inflight && !draining) reload();
}

// ---------------------------------------------------------------- request / response bridging

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade']);

function plain(res, status, body, extra = {}) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'rip-worker-id': WORKER_ID,
    ...extra,
  });
  res.end(body);
}

// The request body as a web stream. Hand-rolled rather than Readable.toWeb so that whatever
// the app leaves unread is discarded once the response is done: the server keeps one
// keep-alive connection per worker, and unread body bytes would stall it.
function bodyStream(req) {
  let discard = false;
  let controller;
  const stream = new ReadableStream(
    {
      start(c) {
        controller = c;
        req.on('data', (chunk) => {
          if (discard) return;
          c.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
          if (c.desiredSize <= 0) req.pause();
        });
        req.on('end', () => {
          if (!discard) try { c.close(); } catch {}
        });
        req.on('error', (e) => {
          if (!discard) try { c.error(e); } catch {}
        });
      },
      pull() {
        req.resume();
      },
      cancel() {
        discard = true;
        req.resume();
      },
    },
    { highWaterMark: 64 * 1024, size: (chunk) => chunk.byteLength },
  );
  const finish = () => {
    if (req.complete || discard) return;
    discard = true;
    try { controller.error(new Error('request finished')); } catch {}
    req.resume();
  };
  return { stream, finish };
}

// Builds the web Request; `out.finishBody` is set as soon as a body stream exists, so the
// caller can discard an unread body even when the Request constructor throws.
function toRequest(req, signal, out) {
  let proto = String(req.headers['x-forwarded-proto'] || 'http').split(',')[0].trim().toLowerCase();
  if (proto !== 'http' && proto !== 'https') proto = 'http';
  const host = req.headers.host || 'localhost';
  const target = req.url.startsWith('/') ? req.url : '/';
  const url = new URL(`${proto}://${host}${target}`);
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    try { headers.append(raw[i], raw[i + 1]); } catch {}
  }
  const init = { method: req.method, headers, signal };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    const body = bodyStream(req);
    out.finishBody = body.finish;
    init.body = body.stream;
    init.duplex = 'half';
  }
  return new Request(url, init);
}

const PENDING = Symbol('pending');
// A read that settles before the next macrotask (in-memory bodies) or PENDING.
function readSoon(p) {
  return new Promise((resolve, reject) => {
    const t = setImmediate(() => resolve(PENDING));
    p.then(
      (v) => { clearImmediate(t); resolve(v); },
      (e) => { clearImmediate(t); reject(e); },
    );
  });
}

function waitWritable(res) {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function waitDone(res) {
  return new Promise((resolve) => {
    if (res.writableFinished || res.destroyed) return resolve();
    res.once('finish', resolve);
    res.once('close', resolve);
  });
}

// The body length the app declared, if it is a valid one.
function declaredLength(headers) {
  const value = headers.get('content-length');
  if (value === null || !/^\d{1,15}$/.test(value.trim())) return null;
  return Number(value.trim());
}

// The wire must never carry a length that does not match the body that follows: the server
// reads exactly what the framing says, and any byte past it would be read as the answer to
// the next request. So the loader, not the app, has the last word on Content-Length:
// - HEAD, 204 and 304 send no body whatever the app returns (204 also no Content-Length);
// - a body already in memory goes out with its real length;
// - a streamed body the app gave a length is held to it: bytes beyond it are dropped, and a
//   body that ends short has its connection closed, so the client sees a cut-off answer;
// - a streamed body without a length goes out chunked.
async function sendResponse(req, res, response) {
  const status = response.status;
  res.statusCode = status;
  if (response.statusText) res.statusMessage = response.statusText;
  const declared = declaredLength(response.headers);
  for (const [name, value] of response.headers) {
    if (name === 'set-cookie' || name === 'content-length' || HOP_BY_HOP.has(name)) continue;
    res.setHeader(name, value);
  }
  const cookies = response.headers.getSetCookie ? response.headers.getSetCookie() : [];
  if (cookies.length) res.setHeader('set-cookie', cookies);
  res.setHeader('rip-worker-id', WORKER_ID);

  const body = response.body;
  if (req.method === 'HEAD' || status === 204 || status === 304) {
    // A HEAD or 304 answer may say how long the body would be.
    if (declared !== null && status !== 204) res.setHeader('content-length', declared);
    if (body) body.cancel().catch(() => {});
    res.end();
    return;
  }
  if (!body) {
    res.setHeader('content-length', 0);
    res.end();
    return;
  }

  const reader = body.getReader();
  const onClose = () => {
    if (!res.writableFinished) reader.cancel().catch(() => {});
  };
  res.on('close', onClose);
  try {
    // Fast path: a body already in memory goes out whole, with its real length.
    let next = reader.read();
    let r = await readSoon(next);
    if (r !== PENDING && !r.done) {
      const first = r.value;
      next = reader.read();
      r = await readSoon(next);
      if (r !== PENDING && r.done) {
        if (declared !== null && declared !== first.byteLength) lengthMismatch(req, declared, first.byteLength);
        res.setHeader('content-length', first.byteLength);
        res.end(first);
        return;
      }
      if (declared !== null) res.setHeader('content-length', declared);
      if (!(await writeLimited(req, res, first, declared))) return;
    } else if (r !== PENDING && r.done) {
      if (declared !== null && declared !== 0) lengthMismatch(req, declared, 0);
      res.setHeader('content-length', 0);
      res.end();
      return;
    } else if (declared !== null) {
      res.setHeader('content-length', declared);
    }
    if (r === PENDING) {
      if (typeof res.flushHeaders === 'function') res.flushHeaders(); // the server expects headers promptly (SSE, slow streams)
      r = await next;
    }
    // Streaming path: chunk by chunk, honouring backpressure.
    while (!r.done) {
      if (res.destroyed) return;
      if (!(await writeLimited(req, res, r.value, declared))) return;
      if (res.destroyed) return;
      r = await reader.read();
    }
    if (res.destroyed) return;
    if (declared !== null && sentBytes(res) < declared) {
      lengthMismatch(req, declared, sentBytes(res));
      res.destroy(); // the answer cannot be completed: cut it off rather than let the wire desync
      return;
    }
    res.end();
  } finally {
    res.off('close', onClose);
  }
}

const SENT = Symbol('sent');
const sentBytes = (res) => res[SENT] || 0;

// Writes `chunk`, or as much of it as the declared length leaves room for. Returns false once
// the answer is over (the length is reached and the rest of the app's body dropped).
async function writeLimited(req, res, chunk, declared) {
  let piece = chunk;
  if (declared !== null) {
    const room = declared - sentBytes(res);
    if (piece.byteLength > room) {
      lengthMismatch(req, declared, sentBytes(res) + piece.byteLength, 'more than');
      piece = piece.subarray(0, Math.max(room, 0));
      res[SENT] = sentBytes(res) + piece.byteLength;
      res.end(piece);
      return false;
    }
  }
  res[SENT] = sentBytes(res) + piece.byteLength;
  if (!res.write(piece)) await waitWritable(res);
  return true;
}

function lengthMismatch(req, declared, actual, how = '') {
  const what = how ? `${how} ${actual}` : `${actual}`;
  logErr(
    `${ENTRY} answered ${req.method} ${pathOf(req)} with Content-Length ${declared} but a body of ${what} bytes; ` +
      'the loader sends the real length (or cuts the answer off); fix the Content-Length the app sets',
  );
}

async function serveApp(req, res) {
  const ac = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) ac.abort();
  });
  const body = { finishBody: () => {} };
  try {
    while (loading || reloadPending) {
      if (!loading && !draining) reload();
      if (loading) await loading;
      else break;
    }
    let request;
    try {
      request = toRequest(req, ac.signal, body);
    } catch (e) {
      plain(res, 400, 'Bad Request');
      return;
    }
    let response;
    try {
      response = await handler(request);
      if (!(response instanceof Response)) {
        throw new TypeError(`handler returned ${response === null ? 'null' : typeof response}, not a Response`);
      }
    } catch (e) {
      logErr(`error in ${ENTRY} handling ${req.method} ${pathOf(req)}: ${errText(e)}`);
      plain(res, 500, 'Internal Server Error');
      return;
    }
    try {
      await sendResponse(req, res, response);
    } catch (e) {
      if (!res.destroyed) {
        logErr(`error in ${ENTRY} streaming ${req.method} ${pathOf(req)}: ${errText(e)}`);
        plain(res, 500, 'Internal Server Error'); // destroys the connection if headers went out
      }
    }
  } finally {
    await waitDone(res);
    body.finishBody();
    inflight = false;
    if (draining) finishDrain();
    else maybeReloadWhenIdle();
  }
}

// Path only: query strings may carry tokens and stay out of the log.
const pathOf = (req) => req.url.split('?')[0];

function onRequest(req, res) {
  const probe = req.headers['rip-probe'] === '1' && pathOf(req) === '/ready';
  if (probe) {
    if (draining) return plain(res, 503, 'draining', { 'rip-worker-draining': '1' });
    return handler ? plain(res, 200, 'ready') : plain(res, 503, 'loading');
  }
  if (draining) return plain(res, 503, 'draining', { 'rip-worker-draining': '1' });
  if (inflight) return plain(res, 503, 'busy', { 'rip-worker-busy': '1' });
  inflight = true;
  serveApp(req, res).catch((e) => {
    logErr(`rip-loader: internal error: ${errText(e)}`);
    inflight = false;
    try { plain(res, 500, 'Internal Server Error'); } catch {}
  });
}

// ---------------------------------------------------------------- control socket

function control(payload, timeoutMs = 1000) {
  return new Promise((resolve) => {
    if (!CONTROL) return resolve();
    const body = JSON.stringify(payload);
    let done = false;
    const finish = () => {
      if (!done) {
        done = true;
        resolve();
      }
    };
    try {
      const r = http.request(
        {
          socketPath: CONTROL,
          method: 'POST',
          path: '/worker',
          agent: false,
          timeout: timeoutMs,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (resp) => {
          resp.resume();
          resp.on('end', finish);
          resp.on('error', finish);
        },
      );
      r.on('timeout', () => r.destroy());
      r.on('error', finish);
      r.on('close', finish);
      r.end(body);
    } catch {
      finish();
    }
  });
}

// ---------------------------------------------------------------- server, signals, lifecycle

function unlinkSocket() {
  try { fs.unlinkSync(SOCKET); } catch {}
}

const server = http.createServer({
  keepAliveTimeout: 0, // the server holds one connection per worker for its whole life
  requestTimeout: 0, // long uploads and streams
  headersTimeout: 60_000,
  maxHeaderSize: 128 * 1024, // above the server's own head limit plus the headers it adds
}, onRequest);
server.keepAliveTimeout = 0;
server.requestTimeout = 0;
server.timeout = 0;

let drainFinishing = false;
async function finishDrain() {
  if (inflight || drainFinishing) return;
  drainFinishing = true;
  await control({ op: 'quit', workerId: WORKER_NUM, pid: process.pid, version: VERSION }, 500);
  try { server.close(); } catch {}
  if (typeof server.closeAllConnections === 'function') server.closeAllConnections();
  unlinkSocket();
  process.exit(0);
}

function onStop() {
  if (draining) {
    unlinkSocket();
    process.exit(0);
  }
  draining = true;
  finishDrain();
}
process.on('SIGTERM', onStop);
process.on('SIGINT', onStop);
process.on('SIGHUP', () => {
  if (RELOAD !== 'module' || draining) return;
  reloadPending = true;
  maybeReloadWhenIdle();
});

// Orphan guard: exit if the server that started us goes away.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) {
    unlinkSocket();
    process.exit(0);
  }
}, 1000).unref();

server.on('error', (e) => {
  logErr(`rip-loader: cannot listen on ${SOCKET}: ${errShort(e)}`);
  process.exit(1);
});

unlinkSocket(); // stale socket from an earlier worker
server.listen(SOCKET, () => {
  // Listening before the app is loaded: the probe answers 503 `loading` until then.
  loading = loadHandler(ENTRY_URL).then(
    (h) => {
      handler = h;
      loading = null;
      control({ op: 'join', workerId: WORKER_NUM, socket: SOCKET, pid: process.pid, version: VERSION });
      maybeReloadWhenIdle();
    },
    (e) => {
      const what = String(e && e.message).includes(NO_HANDLER) ? e.message : `cannot load ${ENTRY}: ${errText(e)}`;
      logErr(`rip-loader: ${what}`);
      unlinkSocket();
      process.exit(1);
    },
  );
});
