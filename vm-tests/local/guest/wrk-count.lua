-- wrk script for the VM scenarios. wrk alone lets 3xx through as success and, after a clean
-- close, silently sends a new request instead of the one that got no answer. So this counts,
-- per thread: every request sent and every answer outside 200-299, and prints one summary line
-- for guest/lib.sh (load_wait), which flags requests sent but never answered.
-- Script argument (after --): a delay in ms before each request on a connection (0: none),
-- so that 16 connections need not saturate two workers on a slow (TCG) guest.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  sent = 0
  delay_ms = tonumber(args[1] or "0") or 0
end

function delay()
  return delay_ms
end

function request()
  sent = sent + 1
  return wrk.format()
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
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
