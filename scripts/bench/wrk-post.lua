-- wrk script of scripts/bench.sh's wrk cell (our field measurement): every request is a
-- Command — POST with a ~200-byte JSON body whose user id is only in the body (last key),
-- so ringgate reads and parses every body to route it. At the end it prints one line the
-- script reads: requests, duration (µs), errors (connect read write status timeout) and
-- latency p50 / p99 / p99.9 (µs).

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","timeInForce":"GTC",'
    .. '"quantity":"0.01000000","price":"50000.00","newClientOrderId":"c-0000000001",'
    .. '"recvWindow":5000,"timestamp":1700000000000,"user_id":"u42"}'

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("ringgate-bench-wrk %d %d %d %d %d %d %d %.0f %.0f %.0f\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
