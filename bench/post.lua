-- wrk script: POST a ~1 KB OpenAI chat-completions request; print one machine-readable summary line.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000000000000000000000000000"
wrk.headers["User-Agent"] = "openai-python/1.51.0"
wrk.body = '{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,"stream":false,"messages":['
    .. '{"role":"system","content":"You are a concise assistant for a logistics company. Answer in plain English, '
    .. 'cite the relevant policy section when you can, and never invent tracking numbers or delivery dates."},'
    .. '{"role":"user","content":"A customer in Lyon ordered three pallets of ceramic tiles on Monday. The carrier '
    .. 'scanned the shipment at the Paris hub on Tuesday evening but there has been no scan since. The customer '
    .. 'asks whether the shipment is lost, whether they can cancel and get a refund, and whether the tiles could '
    .. 'be delivered to a different address on Friday instead. Our policy says a shipment counts as delayed after '
    .. '48 hours without a scan and lost after 7 days; redirection is possible until the shipment leaves the last '
    .. 'hub. Draft a short, friendly reply that explains the status, the options and the next steps, and list the '
    .. 'information we still need from the customer."}]}'

done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d mean_us=%.1f max_us=%d\n",
        summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
        latency.mean, latency.max))
end
