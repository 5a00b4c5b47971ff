-- wrk script: counts every answer outside 200-299 (wrk's own counter lets 3xx through) and
-- prints one machine-readable summary line for guest/lib.sh's load_wait.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "RIPWRK requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d status=%d duration_us=%d p99_us=%d\n",
    summary.requests, bad, e.connect, e.read, e.write, e.timeout, e.status, summary.duration,
    latency:percentile(99)))
end
