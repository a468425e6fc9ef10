-- wrk script of scripts/bench.sh's wrk and TLS cells (our field measurement): every request
-- is a Command — POST with a ~200-byte JSON body whose user id is only in the body (last
-- key), so ringgate reads and parses every body to route it. The body is order.json beside
-- this script (ab's handshake cell sends the same file). At the end it prints one line the
-- script reads: requests, duration (µs), errors (connect read write status timeout) and
-- latency p50 / p99 / p99.9 (µs).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local file = assert(io.open(here .. "order.json", "rb"))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("ringgate-bench-wrk %d %d %d %d %d %d %d %.0f %.0f %.0f\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
