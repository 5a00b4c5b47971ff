-- wrk script for the VM scenarios. wrk alone lets 3xx through as success and, after a clean
-- close, silently sends a new request instead of the one that got no answer. So this counts,
-- per thread: every request sent and every answer outside 200-299, and prints one summary line
-- for guest/lib.sh (load_collect), which flags every request sent but never answered.
-- Script arguments (after --):
--   1. a pause in ms after each answer before the next request on that connection (0: none),
--      so that 16 connections need not saturate two workers on a slow (TCG) guest;
--   2. a drain file: once it exists, no connection sends another request, so the requests in
--      flight finish before wrk is stopped and "sent but never answered" is exact, with no
--      allowance for requests in flight at the end;
--   3. how long (ms) a connection's thread holds still after its last answer once draining
--      (lib.sh passes the drain time + 1 s, so wrk is stopped meanwhile). Holding, rather than
--      only returning an empty request, matters over TLS: wrk writes an empty request as an
--      empty SSL_write, which OpenSSL reports as an error, so every draining connection would
--      reconnect in a tight loop of full handshakes (on a TCG guest, a storm that starves the
--      server of CPU until the requests still in flight miss the drain).
-- The pause is a blocking sleep in response(), so lib.sh runs one thread per connection. It is
-- not wrk's delay(): after a connection closes during a delay() pause wrk arms a second timer
-- and from then on keeps two requests in flight on that connection (HTTP pipelining), which
-- no browser does and which a stopping server may legitimately leave unanswered.
-- How wrk counts (src/wrk.c): a request whose connection fails before its answer is sent again
-- on a new connection through request(), so it adds one to `sent` and nothing to `requests`;
-- a connection the server closed while idle between two requests counts as a read error and
-- costs no request (wrk handles the close, readable first, before it writes the next one).
local ffi = require("ffi")
ffi.cdef("int poll(void *fds, unsigned long nfds, int timeout);")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  sent = 0
  pause_ms = tonumber(args[1] or "0") or 0
  drain_file = args[2]
  hold_ms = tonumber(args[3] or "0") or 0
  draining = false
  held = false
end

local function drained()
  if not draining and drain_file then
    local f = io.open(drain_file, "r")
    if f then
      f:close()
      draining = true
    end
  end
  return draining
end

function request()
  -- An empty request writes nothing: wrk leaves the connection idle.
  if drained() then
    return ""
  end
  sent = sent + 1
  return wrk.format()
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  if drained() then
    if not held and hold_ms > 0 then
      held = true
      ffi.C.poll(nil, 0, hold_ms)
    end
  elseif pause_ms > 0 then
    ffi.C.poll(nil, 0, pause_ms)
  end
end

function done(summary, latency, requests)
  local bad, total_sent = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
    total_sent = total_sent + t:get("sent")
  end
  -- wrk calls request() once more than it sends, to check the script (script_verify_request)
  total_sent = total_sent - 1
  local e = summary.errors
  io.write(string.format(
    "RIPWRK requests=%d sent=%d non2xx=%d connect=%d read=%d write=%d timeout=%d status=%d duration_us=%d p99_us=%d max_us=%d\n",
    summary.requests, total_sent, bad, e.connect, e.read, e.write, e.timeout, e.status,
    summary.duration, latency:percentile(99), latency.max))
end
