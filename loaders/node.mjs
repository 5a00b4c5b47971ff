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
//
// How it serves: under Node, HTTP/1.1 over `net` with a parser of its own, a Request built
// only as far as the app looks at it (see "the wire" below), and a global Response that keeps
// simple answers to write them itself (see "the web Response, lazily"); under Bun, Bun.serve.
// Both answer GET /ping several times faster than the node:http bridge they replace
// (benches/js.sh, docs/benchmarks.md).

import http from 'node:http';
import net from 'node:net';
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

// Bun serves with Bun.serve (see "Bun" below); everything else runs on Node.
const BUN = typeof Bun !== 'undefined' && typeof Bun.serve === 'function';

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

// ---------------------------------------------------------------- the wire: HTTP/1.1 over net
//
// The loader speaks HTTP/1.1 on its socket itself, over `net`, rather than through
// `node:http`: rip-server is the only client, and it always sends well-formed framing (an
// origin-form target, one Host, lower-case header names, a body framed by Content-Length or
// chunked; docs/worker-protocol.md §3), so a small parser suffices, and skipping node:http's
// IncomingMessage/ServerResponse machinery more than pays for the WHATWG Request and Response
// every app needs. Anything the parser does not understand gets a 400 and the connection closed.

const MAX_HEAD = 128 * 1024; // above the server's own head limit plus the headers it adds
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade']);
const STATUS_TEXT = http.STATUS_CODES;
const CRLF2 = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
// fetch() forbids these methods in a Request; the server never forwards them anyway.
const FORBIDDEN_METHOD = /^(connect|trace|track)$/i;
// fetch() upper-cases these methods whatever their case.
const NORMALIZED_METHOD = { delete: 'DELETE', get: 'GET', head: 'HEAD', options: 'OPTIONS', post: 'POST', put: 'PUT' };

const sockets = new Set(); // open connections, closed on drain

// One connection from the server: parses request heads and bodies in order, and holds the
// next head back while a response on this connection is still being written.
class Conn {
  constructor(socket) {
    this.socket = socket;
    this.pending = EMPTY; // bytes received and not yet parsed
    this.body = null; // the body being read: { left } (length) or { chunk, left } (chunked)
    this.sink = null; // where body bytes go: a BodySink, or null to discard them
    this.responding = false; // a response is being written: hold back the next head
    this.closing = false; // close after the current response
    this.onAbort = null; // called when the connection goes away mid-response
    this.parsing = false; // parse() is running (an answer written inside it must not re-enter)
  }

  onData(chunk) {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.parse();
  }

  parse() {
    if (this.parsing) return; // the running loop goes on by itself
    this.parsing = true;
    try {
      this.parseLoop();
    } finally {
      this.parsing = false;
    }
  }

  parseLoop() {
    while (this.pending.length && !this.socket.destroyed) {
      if (this.body) {
        if (!this.readBody()) return;
        continue;
      }
      if (this.responding || this.closing) return;
      const end = this.pending.indexOf(CRLF2);
      if (end < 0) {
        if (this.pending.length > MAX_HEAD) this.reject(431, 'Request Header Fields Too Large');
        return;
      }
      if (end > MAX_HEAD) return this.reject(431, 'Request Header Fields Too Large');
      const head = this.pending.latin1Slice(0, end);
      this.pending = this.pending.subarray(end + 4);
      const req = parseHead(head);
      if (!req) return this.reject(400, 'Bad Request');
      this.startBody(req);
      if (this.body === false) return this.reject(400, 'Bad Request');
      dispatch(this, req);
    }
  }

  // Sets up the body framing of `req`: `this.body` is null (none), a state object, or false
  // (framing the loader cannot follow).
  startBody(req) {
    const te = req.transferEncoding;
    if (te !== undefined) {
      this.body = /(^|,)\s*chunked\s*$/i.test(te) ? { chunked: true, left: -1 } : false;
    } else if (req.contentLength !== undefined) {
      const n = /^\d{1,15}$/.test(req.contentLength) ? Number(req.contentLength) : -1;
      this.body = n < 0 ? false : n === 0 ? null : { chunked: false, left: n };
    } else {
      this.body = null;
    }
    req.hasBody = !!this.body;
    this.sink = null;
  }

  // Consumes body bytes from `pending`; false when more are needed.
  readBody() {
    const b = this.body;
    if (!b.chunked) {
      const n = Math.min(b.left, this.pending.length);
      this.deliver(this.pending.subarray(0, n));
      this.pending = this.pending.subarray(n);
      b.left -= n;
      if (b.left === 0) this.endBody();
      return true;
    }
    if (b.left > 0) { // inside a chunk's data
      const n = Math.min(b.left, this.pending.length);
      this.deliver(this.pending.subarray(0, n));
      this.pending = this.pending.subarray(n);
      b.left -= n;
      if (b.left === 0) b.left = -2; // the CRLF after the data
      return true;
    }
    const eol = this.pending.indexOf('\r\n');
    if (eol < 0) {
      if (this.pending.length > 4096) this.reject(400, 'Bad Request');
      return false;
    }
    const line = this.pending.latin1Slice(0, eol);
    this.pending = this.pending.subarray(eol + 2);
    if (b.left === -2) { // after a chunk's data
      if (line !== '') return this.reject(400, 'Bad Request'), false;
      b.left = -1;
    } else if (b.left === -3) { // trailers, up to an empty line
      if (line === '') this.endBody();
    } else { // a chunk-size line (extensions ignored)
      const m = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
      if (!m) return this.reject(400, 'Bad Request'), false;
      const size = parseInt(m[1], 16);
      b.left = size === 0 ? -3 : size;
    }
    return true;
  }

  deliver(bytes) {
    if (this.sink && bytes.length) this.sink.push(bytes);
  }

  endBody() {
    this.body = null;
    const sink = this.sink;
    this.sink = null;
    if (sink) sink.end();
  }

  // The body still arriving goes nowhere from now on (the answer is out, or never needed it).
  discardBody() {
    if (this.sink) this.sink.discard();
    this.sink = null;
    if (this.socket.isPaused()) this.socket.resume();
  }

  // A framing error: answer it and close, since the stream can no longer be followed.
  reject(status, text) {
    this.body = null;
    this.pending = EMPTY;
    this.closing = true;
    if (this.sink) this.sink.error(new Error('malformed request body'));
    this.sink = null;
    if (!this.responding) writePlain(this, status, text);
    else this.socket.destroy();
  }

  // Called once a response is completely written.
  responded() {
    this.responding = false;
    this.onAbort = null;
    if (this.closing) {
      this.socket.end();
      return;
    }
    if (this.pending.length) this.parse();
  }

  write(data, encoding) {
    return this.socket.write(data, encoding);
  }
}

// Parses a request head (latin1, without the final CRLF CRLF); null if malformed.
function parseHead(head) {
  let eol = head.indexOf('\r\n');
  const line = eol < 0 ? head : head.slice(0, eol);
  const sp1 = line.indexOf(' ');
  const sp2 = line.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0) return null;
  const version = line.slice(sp2 + 1);
  if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') return null;
  let method = line.slice(0, sp1);
  method = NORMALIZED_METHOD[method.toLowerCase()] || method;
  const req = {
    method,
    target: line.slice(sp1 + 1, sp2),
    http10: version === 'HTTP/1.0',
    raw: [], // [name, value, name, value, ...] as sent
    host: undefined,
    proto: undefined,
    probe: false,
    connection: undefined,
    contentLength: undefined,
    transferEncoding: undefined,
    hasBody: false,
  };
  while (eol >= 0) {
    const start = eol + 2;
    eol = head.indexOf('\r\n', start);
    const h = eol < 0 ? head.slice(start) : head.slice(start, eol);
    const colon = h.indexOf(':');
    if (colon <= 0) return null;
    const name = h.slice(0, colon).toLowerCase();
    const value = h.slice(colon + 1).trim();
    req.raw.push(name, value);
    switch (name) {
      case 'host': req.host = value; break;
      case 'x-forwarded-proto': if (req.proto === undefined) req.proto = value; break;
      case 'rip-probe': req.probe = value === '1'; break;
      case 'connection': req.connection = value; break;
      case 'content-length':
        if (req.contentLength !== undefined && req.contentLength !== value) return null;
        req.contentLength = value;
        break;
      case 'transfer-encoding':
        req.transferEncoding = req.transferEncoding === undefined ? value : `${req.transferEncoding}, ${value}`;
        break;
    }
  }
  return req;
}

// Whether the connection stays open after answering `req`.
function keepAlive(req) {
  const c = req.connection && req.connection.toLowerCase();
  if (req.http10) return !!c && /(^|,)\s*keep-alive\s*(,|$)/.test(c);
  return !c || !/(^|,)\s*close\s*(,|$)/.test(c);
}

// Path only: query strings may carry tokens and stay out of the log.
const pathOf = (req) => req.target.split('?')[0];

// ---------------------------------------------------------------- request bodies

// The request body as a web stream, fed by the connection's parser. Whatever the app leaves
// unread is discarded once the response is done: the server keeps one keep-alive connection
// per worker, and unread body bytes would stall it.
class BodySink {
  constructor(conn) {
    this.conn = conn;
    this.controller = null;
    this.done = false;
    this.stream = new ReadableStream(
      {
        start: (c) => { this.controller = c; },
        pull: () => { if (conn.socket.isPaused()) conn.socket.resume(); },
        cancel: () => { conn.discardBody(); },
      },
      { highWaterMark: 64 * 1024, size: (chunk) => chunk.byteLength },
    );
  }

  push(bytes) {
    if (this.done) return;
    // A copy: `bytes` is a view into the connection's read buffer.
    this.controller.enqueue(new Uint8Array(bytes));
    if (this.controller.desiredSize <= 0) this.conn.socket.pause();
  }

  end() {
    if (this.done) return;
    this.done = true;
    try { this.controller.close(); } catch {}
  }

  error(e) {
    if (this.done) return;
    this.done = true;
    try { this.controller.error(e); } catch {}
  }

  discard() {
    this.error(new Error('request finished'));
  }
}

// ---------------------------------------------------------------- the web Request, lazily

// What the handler receives: a Request that is built only when the app needs one. url, method
// and headers are answered from the parsed head (most apps route on those and nothing else);
// anything else (the body, clone(), ...) builds the real Request first and is served by it.
// `instanceof Request` holds, and properties the app sets on it (routers set `params`) stick.
function lazyRequest(conn, req, url) {
  let headers = null;
  let controller = null;
  let real = null;
  let body = null;
  const state = {
    signal() {
      if (!controller) controller = new AbortController();
      return controller.signal;
    },
    abort() {
      if (controller) controller.abort();
    },
    finish() {
      if (body && !body.done) conn.discardBody();
    },
  };
  if (req.hasBody) {
    body = new BodySink(conn);
    conn.sink = body;
  }
  const ownHeaders = () => {
    if (!headers) {
      headers = new Headers();
      const raw = req.raw;
      for (let i = 0; i < raw.length; i += 2) {
        try { headers.append(raw[i], raw[i + 1]); } catch {}
      }
    }
    return headers;
  };
  const materialize = () => {
    if (!real) {
      const init = { method: req.method, headers: ownHeaders(), signal: state.signal() };
      if (body) {
        init.body = body.stream;
        init.duplex = 'half';
      }
      real = new Request(url, init);
    }
    return real;
  };
  state.request = new Proxy(Object.create(Request.prototype), {
    get(target, prop) {
      if (Object.prototype.hasOwnProperty.call(target, prop)) return target[prop];
      switch (prop) {
        case 'url': return url;
        case 'method': return req.method;
        case 'headers': return real ? real.headers : ownHeaders();
        case 'signal': return real ? real.signal : state.signal();
        case 'body': if (!body) return null; break;
        case 'bodyUsed': if (!body) return false; break;
        case 'constructor': return Request;
      }
      const r = materialize();
      const value = Reflect.get(r, prop, r);
      return typeof value === 'function' && prop in Request.prototype ? value.bind(r) : value;
    },
  });
  return state;
}

// ---------------------------------------------------------------- the web Response, lazily

// Most answers are a string and a few headers: `new Response('pong', { headers: {...} })`.
// undici builds a web stream, a header list and WebIDL conversions for each one, which cost
// more than everything else the loader does for a request. So under Node the global Response
// is the loader's: built from a string (or no body) and a plain object of headers, it checks
// them as undici's constructor would (a bad status or header throws where the app builds the
// answer, with undici's own error) and keeps them, and sendResponse writes them to the wire
// from there. Anything else the app does with it (reads headers or body, clone(), ...) first
// builds undici's Response from what was kept, which serves from then on. Bodies of other
// kinds (bytes, streams, forms) and headers given as a Headers or a list build undici's
// Response at once. `instanceof Response` holds for both, and the static Response.error and
// Response.redirect are undici's. Under Bun, Bun.serve takes Bun's own Response.
const NativeResponse = globalThis.Response;
const PLAIN = Symbol('rip.plain'); // the kept answer, until undici's Response is built
const REAL = Symbol('rip.real'); // undici's Response, once built

// Fetch's token (a header name) and reason phrase; a header value (a ByteString) without NUL,
// CR or LF, and without the leading or trailing whitespace undici would strip.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;
const FIELD_VALUE = /^(?:[^\0\r\n\t \u0100-\uffff](?:[^\0\r\n\u0100-\uffff]*[^\0\r\n\t \u0100-\uffff])?)?$/;
const NULL_BODY_STATUS = new Set([204, 205, 304]);

// What `new Response(body, init)` is made of when the loader can keep it itself:
// { status, statusText, headers: [name, value, ...] (lower-case names), body: string | null },
// or null when undici must build it (another kind of body or headers, or input it would
// convert or refuse: its constructor then converts or throws).
function plainAnswer(body, init, contentType) {
  if (body === undefined) body = null;
  if (body !== null && typeof body !== 'string') return null;
  if (init === undefined || init === null) init = {};
  else if (!isPlainObject(init)) return null;
  const { status = 200, statusText = '', headers } = init;
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) return null;
  if (typeof statusText !== 'string' || !REASON.test(statusText)) return null;
  if (body !== null && NULL_BODY_STATUS.has(status)) return null;
  const list = [];
  let typed = false;
  if (headers !== undefined) {
    if (!isPlainObject(headers) || Object.getOwnPropertySymbols(headers).length) return null;
    for (const key of Object.keys(headers)) {
      const value = headers[key];
      if (!TOKEN.test(key) || typeof value !== 'string' || !FIELD_VALUE.test(value)) return null;
      const name = key.toLowerCase();
      if (name !== key && Object.prototype.hasOwnProperty.call(headers, name)) return null; // undici joins these
      if (name === 'content-type') typed = true;
      list.push(name, value);
    }
  }
  if (body !== null && !typed) list.push('content-type', contentType);
  return { status, statusText, headers: list, body };
}

function isPlainObject(v) {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

// undici's Response for `response` (built now from what was kept, if it was not yet).
function realResponse(response) {
  let real = response[REAL];
  if (!real) {
    const { status, statusText, headers, body } = response[PLAIN];
    const pairs = [];
    for (let i = 0; i < headers.length; i += 2) pairs.push([headers[i], headers[i + 1]]);
    real = new NativeResponse(body, { status, statusText, headers: pairs });
    response[REAL] = real;
    response[PLAIN] = null;
  }
  return real;
}

class LightResponse {
  constructor(body, init) {
    const plain = plainAnswer(body, init, 'text/plain;charset=UTF-8');
    this[PLAIN] = plain;
    this[REAL] = plain ? null : new NativeResponse(body, init);
  }

  static json(data, init) {
    // undici refuses a null init here (not in the constructor): it is left to throw that.
    const body = init === null ? undefined : JSON.stringify(data);
    const plain = typeof body === 'string' ? plainAnswer(body, init, 'application/json') : null;
    if (!plain) return NativeResponse.json(data, init);
    const response = Object.create(LightResponse.prototype);
    response[PLAIN] = plain;
    response[REAL] = null;
    return response;
  }

  // undici's Responses (from fetch(), Response.redirect, ...) are Responses too.
  static [Symbol.hasInstance](value) {
    return this === LightResponse
      ? value instanceof NativeResponse
      : Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

// Every property and method of a Response, served by undici's.
for (const key of Reflect.ownKeys(NativeResponse.prototype)) {
  if (key === 'constructor' || key === Symbol.toStringTag) continue;
  const d = Object.getOwnPropertyDescriptor(NativeResponse.prototype, key);
  if (d.get) {
    Object.defineProperty(LightResponse.prototype, key, {
      get() { return realResponse(this)[key]; },
      configurable: true,
      enumerable: d.enumerable,
    });
  } else if (typeof d.value === 'function') {
    Object.defineProperty(LightResponse.prototype, key, {
      value(...args) { return d.value.apply(realResponse(this), args); },
      configurable: true,
      enumerable: d.enumerable,
      writable: true,
    });
  }
}
Object.setPrototypeOf(LightResponse.prototype, NativeResponse.prototype);
Object.setPrototypeOf(LightResponse, NativeResponse);
Object.defineProperty(LightResponse, 'name', { value: 'Response' });
if (!BUN) {
  Object.defineProperty(globalThis, 'Response', { value: LightResponse, writable: true, configurable: true });
}

// ---------------------------------------------------------------- responses

// A complete answer of the loader's own (probe, busy, draining, errors).
function writePlain(conn, status, text, extra = '') {
  conn.responding = true;
  const body = Buffer.from(text);
  conn.write(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] || ''}\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${body.length}\r\nrip-worker-id: ${WORKER_ID}\r\n${extra}` +
      `${conn.closing ? 'connection: close\r\n' : ''}\r\n`,
    'latin1',
  );
  conn.write(body);
  conn.responded();
}

// undici keeps what a Response was built from (a string or bytes) in its internal state; a
// body found there goes out whole without reading the web stream. Elsewhere (Bun, a future
// Node) the symbol is missing and the stream is read as for any other body.
const STATE = Object.getOwnPropertySymbols(new NativeResponse('')).find((s) => s.description === 'state');

// The body of `response` if it is already in memory as a string or bytes, else undefined.
function memoryBody(response) {
  const body = STATE && response[STATE] && response[STATE].body;
  if (!body || response.bodyUsed || (body.stream && body.stream.locked)) return undefined;
  const src = body.source;
  if (typeof src === 'string' || src instanceof Uint8Array) return src;
  if (src instanceof ArrayBuffer) return new Uint8Array(src);
  return undefined;
}

// The body length the app declared (a Content-Length value), if it is a valid one.
function validLength(value) {
  if (value === undefined || !/^\d{1,15}$/.test(value.trim())) return null;
  return Number(value.trim());
}

// The status line and the app's headers, without a length or the final CRLF, and the length
// the app declared. One pass over the headers, over undici's own header list when it is there
// (as the body above): the public iterator sorts, and each get() or has() costs a WebIDL
// conversion, a visible share of a small request.
function headOf(response) {
  const plain = response[PLAIN];
  if (plain) return plainHead(plain);
  const status = response.status;
  let head = `HTTP/1.1 ${status} ${response.statusText || STATUS_TEXT[status] || ''}\r\n`;
  let length;
  let cookies = null;
  const state = STATE && response[STATE];
  const list = state && state.headersList;
  const own = list && typeof list[Symbol.iterator] === 'function' && (list.cookies === null || Array.isArray(list.cookies));
  for (const [name, value] of own ? list : response.headers) {
    if (name === 'content-length') length = value;
    else if (name === 'set-cookie') cookies = own ? list.cookies : response.headers.getSetCookie();
    else if (!HOP_BY_HOP.has(name)) head += `${name}: ${value}\r\n`;
  }
  if (cookies) for (const cookie of cookies) head += `set-cookie: ${cookie}\r\n`;
  return { head: `${head}rip-worker-id: ${WORKER_ID}\r\n`, declared: validLength(length) };
}

// headOf for an answer the loader kept itself (see LightResponse).
function plainHead({ status, statusText, headers }) {
  let head = `HTTP/1.1 ${status} ${statusText || STATUS_TEXT[status] || ''}\r\n`;
  let length;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (name === 'content-length') length = headers[i + 1];
    else if (!HOP_BY_HOP.has(name)) head += `${name}: ${headers[i + 1]}\r\n`;
  }
  return { head: `${head}rip-worker-id: ${WORKER_ID}\r\n`, declared: validLength(length) };
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

// Resolves when the socket can take more, or is gone.
function waitWritable(socket) {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

// The wire must never carry a length that does not match the body that follows: the server
// reads exactly what the framing says, and any byte past it would be read as the answer to
// the next request. So the loader, not the app, has the last word on Content-Length:
// - HEAD, 204 and 304 send no body whatever the app returns (204 also no Content-Length);
// - a body already in memory goes out with its real length, in one write with the head;
// - a streamed body the app gave a length is held to it: bytes beyond it are dropped, and a
//   body that ends short has its connection closed, so the client sees a cut-off answer;
// - a streamed body without a length goes out chunked.
// Returns false when the connection was cut off (and must not be reused); a promise of that
// for a streamed body (an answer in memory goes out at once, without a trip through promises).
function sendResponse(conn, req, response) {
  const plain = response[PLAIN];
  const status = plain ? plain.status : response.status;
  const { head: appHead, declared } = headOf(response);
  let head = appHead;
  if (conn.closing) head += 'connection: close\r\n';
  const body = plain ? plain.body : response.body;

  if (req.method === 'HEAD' || status === 204 || status === 304) {
    // A HEAD or 304 answer may say how long the body would be.
    if (declared !== null && status !== 204) head += `content-length: ${declared}\r\n`;
    conn.write(`${head}\r\n`, 'latin1');
    if (body && !plain) body.cancel().catch(() => {});
    return true;
  }
  if (body === null) {
    conn.write(`${head}content-length: 0\r\n\r\n`, 'latin1');
    return true;
  }
  const whole = plain ? body : memoryBody(response);
  if (whole !== undefined) {
    const length = typeof whole === 'string' ? Buffer.byteLength(whole) : whole.byteLength;
    if (declared !== null && declared !== length) lengthMismatch(req, declared, length);
    writeWhole(conn, `${head}content-length: ${length}\r\n\r\n`, whole);
    return true;
  }
  return sendStream(conn, req, head, body, declared);
}

// One write, so one syscall: a head of ASCII (the usual case) and a string body go out as one
// string; anything else as one buffer.
const ASCII = /^[\x00-\x7f]*$/;
function writeWhole(conn, head, body) {
  if (typeof body === 'string' && ASCII.test(head)) {
    conn.write(head + body);
  } else {
    const h = Buffer.from(head, 'latin1');
    const b = typeof body === 'string' ? Buffer.from(body) : body;
    conn.write(b.byteLength ? Buffer.concat([h, b], h.length + b.byteLength) : h);
  }
}

async function sendStream(conn, req, head, body, declared) {
  const socket = conn.socket;
  const reader = body.getReader();
  const abortRequest = conn.onAbort;
  conn.onAbort = () => {
    if (abortRequest) abortRequest();
    reader.cancel().catch(() => {});
  };
  const out = { sent: 0, declared, chunked: declared === null, started: false };
  // Fast path: a body already in memory goes out whole, with its real length.
  let next = reader.read();
  let r = await readSoon(next);
  if (r !== PENDING && !r.done) {
    const first = r.value;
    next = reader.read();
    r = await readSoon(next);
    if (r !== PENDING && r.done) {
      if (declared !== null && declared !== first.byteLength) lengthMismatch(req, declared, first.byteLength);
      writeWhole(conn, `${head}content-length: ${first.byteLength}\r\n\r\n`, first);
      return true;
    }
    if (!(await writeLimited(conn, req, head, out, first))) return !socket.destroyed;
  } else if (r !== PENDING && r.done) {
    if (declared !== null && declared !== 0) lengthMismatch(req, declared, 0);
    conn.write(`${head}content-length: 0\r\n\r\n`, 'latin1');
    return true;
  }
  if (r === PENDING) {
    startHead(conn, head, out); // the server expects headers promptly (SSE, slow streams)
    r = await next;
  }
  // Streaming path: chunk by chunk, honouring backpressure.
  while (!r.done) {
    if (socket.destroyed) return false;
    if (!(await writeLimited(conn, req, head, out, r.value))) return !socket.destroyed;
    if (socket.destroyed) return false;
    r = await reader.read();
  }
  if (socket.destroyed) return false;
  startHead(conn, head, out);
  if (declared !== null && out.sent < declared) {
    lengthMismatch(req, declared, out.sent);
    socket.destroy(); // the answer cannot be completed: cut it off rather than let the wire desync
    return false;
  }
  if (out.chunked) conn.write('0\r\n\r\n', 'latin1');
  return true;
}

// Writes the head of a streamed answer, once.
function startHead(conn, head, out) {
  if (out.started) return;
  out.started = true;
  const framing = out.chunked ? 'transfer-encoding: chunked\r\n' : `content-length: ${out.declared}\r\n`;
  conn.write(`${head}${framing}\r\n`, 'latin1');
}

// Writes `chunk`, or as much of it as the declared length leaves room for. Returns false once
// the answer is over (the length is reached and the rest of the app's body dropped).
async function writeLimited(conn, req, head, out, chunk) {
  startHead(conn, head, out);
  let piece = chunk;
  if (!(piece instanceof Uint8Array)) throw new TypeError('the response body yielded a chunk that is not a Uint8Array');
  if (out.declared !== null) {
    const room = out.declared - out.sent;
    if (piece.byteLength > room) {
      lengthMismatch(req, out.declared, out.sent + piece.byteLength, 'more than');
      piece = piece.subarray(0, Math.max(room, 0));
      out.sent += piece.byteLength;
      if (piece.byteLength) conn.write(piece);
      return false;
    }
  }
  if (!piece.byteLength) return true;
  out.sent += piece.byteLength;
  let ok;
  if (out.chunked) {
    const socket = conn.socket;
    socket.cork();
    socket.write(`${piece.byteLength.toString(16)}\r\n`, 'latin1');
    socket.write(piece);
    ok = socket.write('\r\n', 'latin1');
    socket.uncork();
  } else {
    ok = conn.write(piece);
  }
  if (!ok) await waitWritable(conn.socket);
  return true;
}

function lengthMismatch(req, declared, actual, how = '') {
  const what = how ? `${how} ${actual}` : `${actual}`;
  logErr(
    `${ENTRY} answered ${req.method} ${pathOf(req)} with Content-Length ${declared} but a body of ${what} bytes; ` +
      'the loader sends the real length (or cuts the answer off); fix the Content-Length the app sets',
  );
}

// ---------------------------------------------------------------- serving

// The Request URL: `${X-Forwarded-Proto}://${Host}${target}`, normalized as fetch() would.
function urlOf(req) {
  let proto = String(req.proto || 'http').split(',')[0].trim().toLowerCase();
  if (proto !== 'http' && proto !== 'https') proto = 'http';
  const target = req.target.startsWith('/') ? req.target : '/';
  return new URL(`${proto}://${req.host || 'localhost'}${target}`).href;
}

// An answer of the loader's own to `req`, whose body (if any) is discarded.
function answerPlain(conn, req, status, text, extra) {
  conn.closing = conn.closing || !keepAlive(req);
  writePlain(conn, status, text, extra);
}

function dispatch(conn, req) {
  if (req.probe && pathOf(req) === '/ready') {
    if (draining) return answerPlain(conn, req, 503, 'draining', 'rip-worker-draining: 1\r\n');
    return handler ? answerPlain(conn, req, 200, 'ready') : answerPlain(conn, req, 503, 'loading');
  }
  if (draining) return answerPlain(conn, req, 503, 'draining', 'rip-worker-draining: 1\r\n');
  if (inflight) return answerPlain(conn, req, 503, 'busy', 'rip-worker-busy: 1\r\n');
  if (FORBIDDEN_METHOD.test(req.method)) return answerPlain(conn, req, 400, 'Bad Request');
  let url;
  try {
    url = urlOf(req);
  } catch {
    return answerPlain(conn, req, 400, 'Bad Request');
  }
  inflight = true;
  conn.responding = true;
  conn.closing = !keepAlive(req);
  serveApp(conn, req, url).catch((e) => {
    logErr(`rip-loader: internal error: ${errText(e)}`);
    conn.socket.destroy();
    requestDone(conn);
  });
}

async function serveApp(conn, req, url) {
  const lazy = lazyRequest(conn, req, url);
  conn.onAbort = () => lazy.abort();
  let ok = true;
  try {
    while (loading || reloadPending) {
      if (!loading && !draining) reload();
      if (loading) await loading;
      else break;
    }
    let response;
    try {
      response = handler(lazy.request);
      if (response && typeof response.then === 'function') response = await response;
      if (!(response instanceof Response)) {
        throw new TypeError(`handler returned ${response === null ? 'null' : typeof response}, not a Response`);
      }
    } catch (e) {
      logErr(`error in ${ENTRY} handling ${req.method} ${pathOf(req)}: ${errText(e)}`);
      if (!conn.socket.destroyed) writeError(conn);
      return;
    }
    try {
      ok = sendResponse(conn, req, response);
      if (ok !== true && ok !== false) ok = await ok;
    } catch (e) {
      if (!conn.socket.destroyed) {
        logErr(`error in ${ENTRY} streaming ${req.method} ${pathOf(req)}: ${errText(e)}`);
        conn.socket.destroy(); // the head may be out: the answer cannot be completed
      }
      ok = false;
    }
  } finally {
    lazy.finish();
    if (ok) conn.responded();
    requestDone(conn);
  }
}

// A 500 before any byte of the answer went out.
function writeError(conn) {
  const body = 'Internal Server Error';
  conn.write(
    `HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n` +
      `content-length: ${body.length}\r\nrip-worker-id: ${WORKER_ID}\r\n` +
      `${conn.closing ? 'connection: close\r\n' : ''}\r\n${body}`,
    'latin1',
  );
}

function requestDone(conn) {
  if (!inflight) return;
  inflight = false;
  if (draining) finishDrain();
  else maybeReloadWhenIdle();
}

function onConnection(socket) {
  const conn = new Conn(socket);
  sockets.add(socket);
  socket.on('data', (chunk) => conn.onData(chunk));
  socket.on('error', () => {}); // 'close' follows
  socket.on('close', () => {
    sockets.delete(socket);
    if (conn.sink) conn.sink.error(new Error('connection closed'));
    if (conn.onAbort) conn.onAbort();
  });
}

// ---------------------------------------------------------------- Bun: Bun.serve

// Under Bun the loader serves with Bun.serve({ unix }): on this socket it answers several
// times faster than Bun's node:http, or the parser above running on Bun's node:net
// (benches/js.sh). Bun keeps the framing honest itself (a body in memory goes out with its
// real length, a streamed one chunked, HEAD and 304 answers carry no body); an answer whose
// app set a Content-Length is held to the same rules as under Node (see bunLength).
const plainResponse = (status, text, extra) =>
  new Response(text, {
    status,
    headers: { 'content-type': 'text/plain; charset=utf-8', 'rip-worker-id': WORKER_ID, ...extra },
  });

// The path of a Request URL (`http://host/path?query`), without parsing the whole URL.
function bunPath(url) {
  const start = url.indexOf('/', url.indexOf('//') + 2);
  if (start < 0) return '/';
  const q = url.indexOf('?', start);
  return q < 0 ? url.slice(start) : url.slice(start, q);
}

let bunServer = null;

// Answers without a trip through promises where it can: Bun sends a Response returned at once
// sooner than one it has to await, and most answers (the probe, a handler that answers at
// once) need none.
function bunFetch(req, srv) {
  if (req.headers.get('rip-probe') === '1' && bunPath(req.url) === '/ready') {
    if (draining) return plainResponse(503, 'draining', { 'rip-worker-draining': '1' });
    return handler ? plainResponse(200, 'ready') : plainResponse(503, 'loading');
  }
  if (draining) return plainResponse(503, 'draining', { 'rip-worker-draining': '1' });
  // pendingRequests counts this request and any answer still streaming.
  if (inflight || srv.pendingRequests > 1) return plainResponse(503, 'busy', { 'rip-worker-busy': '1' });
  inflight = true;
  if (loading || reloadPending) return bunAfterLoad(req);
  return bunServe(req);
}

// bunFetch once the handler (re)loading when the request came is done.
async function bunAfterLoad(req) {
  try {
    while (loading || reloadPending) {
      if (!loading && !draining) reload();
      if (loading) await loading;
      else break;
    }
  } catch (e) {
    bunDone();
    throw e;
  }
  return bunServe(req);
}

// Runs the handler on `req` (inflight is set); its answer, or a promise of it.
function bunServe(req) {
  let request = req;
  // Bun builds the URL as http://; the server says how the client came.
  const proto = req.headers.get('x-forwarded-proto');
  if (proto && proto.split(',')[0].trim().toLowerCase() === 'https' && req.url.startsWith('http:')) {
    request = new Request(`https:${req.url.slice(5)}`, req);
  }
  let response;
  try {
    response = handler(request);
  } catch (e) {
    return bunFailed(req, e);
  }
  if (response instanceof Promise) {
    // An async handler that never awaited has settled already: answer from its result at
    // once, as Bun does with a settled promise, not with another promise of the answer.
    switch (Bun.peek.status(response)) {
      case 'fulfilled': return bunAnswer(req, Bun.peek(response));
      case 'rejected': return bunRejected(req, response);
    }
  }
  if (response && typeof response.then === 'function') {
    return response.then((r) => bunAnswer(req, r), (e) => bunFailed(req, e));
  }
  return bunAnswer(req, response);
}

// What the handler returned, checked, held to its length and marked with the worker id.
function bunAnswer(req, response) {
  if (!(response instanceof Response)) {
    return bunFailed(req, new TypeError(`handler returned ${response === null ? 'null' : typeof response}, not a Response`));
  }
  const headers = response.headers;
  if (!headers.has('content-length')) {
    bunDone();
    return withWorkerId(response);
  }
  return bunLength(req, response).then(
    (r) => {
      bunDone();
      return withWorkerId(r);
    },
    (e) => {
      bunDone();
      throw e;
    },
  );
}

// A handler's promise that has settled rejected: its error, handled here (Bun would report
// a rejection nobody handled).
function bunRejected(req, promise) {
  promise.catch(() => {});
  return bunFailed(req, Bun.peek(promise));
}

function bunFailed(req, e) {
  logErr(`error in ${ENTRY} handling ${req.method} ${bunPath(req.url)}: ${errText(e)}`);
  bunDone();
  return plainResponse(500, 'Internal Server Error');
}

function bunDone() {
  inflight = false;
  if (draining) finishDrain();
  else maybeReloadWhenIdle();
}

// An answer whose app declared a length, under the rules sendResponse applies under Node: a
// 204 has neither a length nor a body; a body in memory goes out with its real length; a
// streamed body is held to the declared length (bytes beyond it dropped, a body that ends
// short cut off). Bun would send a stream chunked, whole, whatever it was declared as. One
// difference remains: Bun sends a stream's head at once, so a body that ends short is cut
// off after a 200 went out (under Node the server sees the cut before and answers 502).
async function bunLength(req, response) {
  const status = response.status;
  const declared = validLength(response.headers.get('content-length') ?? undefined);
  const headers = new Headers(response.headers);
  if (declared === null && status !== 204) return response; // not a length: Bun ignores it
  if (status === 204) {
    headers.delete('content-length');
    if (response.body) response.body.cancel().catch(() => {});
    return new Response(null, { status, statusText: response.statusText, headers });
  }
  if (req.method === 'HEAD' || status === 304 || !response.body) return response;
  headers.delete('content-length');
  const init = { status, statusText: response.statusText, headers };
  const reader = response.body.getReader();
  const target = { method: req.method, target: bunPath(req.url) };
  const firstRead = reader.read();
  const first = await readSoon(firstRead);
  if (first === PENDING) return new Response(limited(target, reader, declared, [firstRead]), init);
  if (first.done) {
    if (declared !== 0) lengthMismatch(target, declared, 0);
    return new Response(new Uint8Array(0), init);
  }
  const nextRead = reader.read();
  const next = await readSoon(nextRead);
  if (next !== PENDING && next.done) { // in memory: its real length
    if (declared !== first.value.byteLength) lengthMismatch(target, declared, first.value.byteLength);
    return new Response(first.value, init);
  }
  return new Response(limited(target, reader, declared, [first, nextRead]), init);
}

// The rest of a streamed body, held to `declared` bytes. `held` are reads already taken from
// `reader` (results, or promises of them), in order.
function limited(target, reader, declared, held) {
  let sent = 0;
  return new ReadableStream({
    async pull(controller) {
      const r = held.length ? await held.shift() : await reader.read();
      if (r.done) {
        if (sent < declared) {
          lengthMismatch(target, declared, sent);
          controller.error(new Error('the body ended short of its Content-Length')); // cut off
        } else {
          controller.close();
        }
        return;
      }
      let chunk = r.value;
      if (sent + chunk.byteLength > declared) {
        lengthMismatch(target, declared, sent + chunk.byteLength, 'more than');
        chunk = chunk.subarray(0, declared - sent);
        sent = declared;
        if (chunk.byteLength) controller.enqueue(chunk);
        controller.close();
        reader.cancel().catch(() => {});
        return;
      }
      sent += chunk.byteLength;
      controller.enqueue(chunk);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

// `response` with Rip-Worker-Id (a Response whose headers are immutable, such as
// Response.redirect's, is copied).
function withWorkerId(response) {
  try {
    response.headers.set('rip-worker-id', WORKER_ID);
    return response;
  } catch {
    const headers = new Headers(response.headers);
    headers.set('rip-worker-id', WORKER_ID);
    return new Response(response.body, { status: response.status, statusText: response.statusText, headers });
  }
}

function listenBun(onListening) {
  try {
    bunServer = Bun.serve({
      unix: SOCKET,
      idleTimeout: 0, // the server holds one connection per worker for its whole life
      maxRequestBodySize: Number.MAX_SAFE_INTEGER, // the server enforces its own limit
      development: false,
      fetch: bunFetch,
      error(e) {
        logErr(`error in ${ENTRY}: ${errText(e)}`);
        return plainResponse(500, 'Internal Server Error');
      },
    });
  } catch (e) {
    logErr(`rip-loader: cannot listen on ${SOCKET}: ${errShort(e)}`);
    process.exit(1);
  }
  onListening();
}

// Resolves once no answer is streaming any more (Bun counts them as pending requests).
async function bunIdle() {
  while (bunServer && bunServer.pendingRequests > 0) await new Promise((resolve) => setTimeout(resolve, 10));
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

// No timeouts: the server holds one connection per worker for its whole life, and uploads
// and streams may be long (the server enforces its own limits).
const server = BUN ? null : net.createServer(onConnection);

let drainFinishing = false;
async function finishDrain() {
  if (inflight || drainFinishing) return;
  drainFinishing = true;
  if (BUN) await bunIdle(); // a streamed answer may still be going out
  await control({ op: 'quit', workerId: WORKER_NUM, pid: process.pid, version: VERSION }, 500);
  if (BUN) {
    try { bunServer.stop(true); } catch {}
  } else {
    try { server.close(); } catch {}
    await closeConnections(500);
  }
  unlinkSocket();
  process.exit(0);
}

// Ends every connection once what was written to it has gone out (the last answer must not
// be lost to process.exit), or after `timeoutMs`.
function closeConnections(timeoutMs) {
  const ends = [...sockets].map(
    (socket) =>
      new Promise((resolve) => {
        socket.once('close', resolve);
        socket.end(() => {
          socket.destroy();
          resolve();
        });
      }),
  );
  const timer = new Promise((resolve) => setTimeout(resolve, timeoutMs).unref());
  return Promise.race([Promise.all(ends), timer]);
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

function onListening() {
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
}

unlinkSocket(); // stale socket from an earlier worker
if (BUN) {
  listenBun(onListening);
} else {
  server.on('error', (e) => {
    logErr(`rip-loader: cannot listen on ${SOCKET}: ${errShort(e)}`);
    process.exit(1);
  });
  server.listen(SOCKET, onListening);
}
