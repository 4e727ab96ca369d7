#!/usr/bin/env python3
"""429-storm load generator and report for bench/storm.sh (Python 3 stdlib only).

  storm_load.py load --port P --rate R --duration D --json OUT   one scenario, open loop
  storm_load.py report --meta META.json                          markdown table of every scenario

Open loop: request i is due at start + i/R whatever happened to the earlier ones (a slow answer never delays the
next request, so latency is not hidden by the generator waiting: no coordinated omission). Each request runs on a
thread of its own connection (http.client, which decodes chunked bodies); latency is from the due time to the end
of the body. Bounded: R*D requests, each with a socket timeout, and the whole run is cut at D + the timeout.
"""
import argparse
import concurrent.futures
import http.client
import json
import re
import sys
import threading
import time

USAGE_RE = re.compile(rb'"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+),"total_tokens":(\d+)')


def body(prompt_bytes, max_tokens):
    """A streamed chat request of about prompt_bytes bytes that asks for usage and at most max_tokens."""
    head = '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":%d,' \
           '"messages":[{"role":"user","content":"' % max_tokens
    tail = '"}]}'
    pad = max(0, prompt_bytes - len(head) - len(tail))
    return (head + ("storm " * (pad // 6 + 1))[:pad] + tail).encode()


def one(port, payload, timeout, due, t0):
    rec = {"t": round(due - t0, 4), "status": 0, "tokens": 0, "attempts": None, "error": None, "code": None}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=payload,
                     headers={"Content-Type": "application/json", "Authorization": "Bearer storm-client"})
        resp = conn.getresponse()
        rec["status"] = resp.status
        rec["attempts"] = resp.getheader("X-LLMProxy-Attempts")
        data = resp.read()
        if resp.status == 200:
            m = USAGE_RE.search(data)
            if m:
                rec["tokens"] = int(m.group(3))
            if b"data: [DONE]" not in data:
                rec["error"] = "stream not complete"
        else:
            m = re.search(rb'"code":"([a-z_]+)"', data)
            rec["code"] = m.group(1).decode() if m else None
    except Exception as e:  # a failed request is a result, not a crash of the generator
        rec["error"] = type(e).__name__
    finally:
        conn.close()
    rec["latency_ms"] = round((time.monotonic() - due) * 1000, 2)
    return rec


def load(args):
    payload = body(args.prompt_bytes, args.max_tokens)
    total = int(args.rate * args.duration)
    records = []
    lock = threading.Lock()
    # More workers than requests can be in flight at once (rate x longest answer), so none waits for a thread.
    workers = min(total, max(32, int(args.rate * args.timeout) + 8), 2000)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    t0 = time.monotonic() + 0.2
    futures = []
    for i in range(total):
        due = t0 + i / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(one, args.port, payload, args.timeout, due, t0))
    deadline = t0 + args.duration + args.timeout + 5
    for f in futures:
        try:
            rec = f.result(timeout=max(0.1, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            rec = {"t": None, "status": 0, "tokens": 0, "attempts": None, "error": "unfinished", "code": None, "latency_ms": None}
        with lock:
            records.append(rec)
    pool.shutdown(wait=False, cancel_futures=True)
    out = {"port": args.port, "rate": args.rate, "duration": args.duration, "prompt_bytes": len(payload),
           "max_tokens": args.max_tokens, "records": records}
    with open(args.json, "w") as f:
        json.dump(out, f)
    ok = sum(1 for r in records if r["status"] == 200 and not r["error"])
    print(f"port {args.port}: {len(records)} requests, {ok} complete 200s", file=sys.stderr)


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def fmt_ms(x):
    return "–" if x != x else (f"{x / 1000:.2f} s" if x >= 1000 else f"{x:.0f} ms")


def summarize(scn, data, before, after, keys, tpm, steady_from):
    recs = data["records"]
    d = data["duration"]
    ok = [r for r in recs if r["status"] == 200 and not r["error"]]
    r429 = [r for r in recs if r["status"] == 429]
    other = [r for r in recs if not (r["status"] == 200 and not r["error"]) and r["status"] != 429]
    tokens = sum(r["tokens"] for r in ok)
    steady = [r for r in ok if r["t"] is not None and r["t"] >= steady_from]
    steady_tokens = sum(r["tokens"] for r in steady)
    attempts = [int(r["attempts"]) for r in recs if r["attempts"] and r["attempts"].isdigit()]
    lat_ok = [r["latency_ms"] for r in ok]
    lat_429 = [r["latency_ms"] for r in r429]
    lat_all = [r["latency_ms"] for r in recs if r["latency_ms"] is not None]
    bins = [0] * int((d + 9) // 10)
    for r in ok:
        if r["t"] is not None:
            bins[min(len(bins) - 1, int(r["t"] // 10))] += 1
    codes = {}
    for r in r429:
        codes[r["code"] or "?"] = codes.get(r["code"] or "?", 0) + 1
    return {
        "scenario": scn, "sent": len(recs), "ok": len(ok), "c429": len(r429), "other": len(other),
        "other_kinds": sorted({(r["error"] or str(r["status"])) for r in other}),
        "codes": codes,
        "tokens": tokens, "tpm": tokens / (d / 60.0),
        "steady_tpm": steady_tokens / ((d - steady_from) / 60.0),
        "ceiling_tpm": keys * tpm * (1 + d / 60.0) / (d / 60.0), "steady_ceiling": keys * tpm,
        "p50_ok": pct(lat_ok, 50), "p99_ok": pct(lat_ok, 99), "p50_429": pct(lat_429, 50), "p99_429": pct(lat_429, 99),
        "p50_all": pct(lat_all, 50), "p99_all": pct(lat_all, 99),
        "per_10s": bins,
        "mean_attempts": sum(attempts) / len(attempts) if attempts else float("nan"),
        # The mock counts every request from its start, so the stats request that read "after" counted itself.
        "up_requests": after["requests"] - before["requests"] - 1, "up_429": after["rateLimited"] - before["rateLimited"],
        "up_tokens": after["tokensCharged"] - before["tokensCharged"],
    }


def report(args):
    meta = json.load(open(args.meta))
    rows = []
    for s in meta["scenarios"]:
        data = json.load(open(s["json"]))
        rows.append((s, summarize(s["label"], data, s["mock_before"], s["mock_after"], meta["keys"], meta["tpm"], meta["steady_from"])))
    d = meta["duration"]
    print("| | " + " | ".join(f"**{s['label']}**" for s, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))

    def line(name, f):
        print(f"| {name} | " + " | ".join(f(x) for _, x in rows) + " |")

    line("requests sent (open loop)", lambda x: f"{x['sent']:,}")
    line("**successful** (complete stream)", lambda x: f"{x['ok']:,} ({100 * x['ok'] / max(1, x['sent']):.0f} %)")
    line("**429 at the client**", lambda x: f"{x['c429']:,} ({100 * x['c429'] / max(1, x['sent']):.0f} %)"
         + (" — " + ", ".join(f"{k} {v}" for k, v in sorted(x["codes"].items())) if x["codes"] else ""))
    line("other failures", lambda x: f"{x['other']}" + (f" ({', '.join(x['other_kinds'])})" if x["other"] else ""))
    line(f"**tokens served per minute**, whole run (ceiling {rows[0][1]['ceiling_tpm']:,.0f})",
         lambda x: f"{x['tpm']:,.0f} ({100 * x['tpm'] / x['ceiling_tpm']:.0f} %)")
    line(f"tokens per minute from t = {meta['steady_from']} s (buckets drained; ceiling {rows[0][1]['steady_ceiling']:,})",
         lambda x: f"{x['steady_tpm']:,.0f} ({100 * x['steady_tpm'] / x['steady_ceiling']:.0f} %)")
    line("successes per 10 s of sending", lambda x: " ".join(str(b) for b in x["per_10s"]))
    line("latency of successes p50 / **p99**", lambda x: f"{fmt_ms(x['p50_ok'])} / **{fmt_ms(x['p99_ok'])}**")
    line("latency of 429s p50 / p99", lambda x: f"{fmt_ms(x['p50_429'])} / {fmt_ms(x['p99_429'])}")
    line("latency of all p50 / p99", lambda x: f"{fmt_ms(x['p50_all'])} / {fmt_ms(x['p99_all'])}")
    line("attempts per answered request (mean)", lambda x: f"{x['mean_attempts']:.2f}")
    line("**upstream requests** (mock)", lambda x: f"{x['up_requests']:,}")
    line("**upstream 429s** (mock)", lambda x: f"{x['up_429']:,}")
    line("tokens the mock charged (cross-check)", lambda x: f"{x['up_tokens']:,}")
    print()
    print(f"Ceiling = what the keys can serve: {meta['keys']} keys × {meta['tpm']:,} tokens/min, buckets full at the start "
          f"(one minute's worth each) and refilling continuously, over {d} s. Offered: {meta['rate']} requests/s × {d} s, "
          f"each about {meta['cost']} tokens ({meta['cost'] * meta['rate'] * 60:,.0f} tokens/min offered, "
          f"{meta['cost'] * meta['rate'] * 60 / (meta['keys'] * meta['tpm']):.1f}× the keys' sum).")
    with open(args.json_out, "w") as f:
        json.dump([x for _, x in rows], f, indent=1)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    l = sub.add_parser("load")
    l.add_argument("--port", type=int, required=True)
    l.add_argument("--rate", type=float, required=True)
    l.add_argument("--duration", type=float, required=True)
    l.add_argument("--timeout", type=float, default=30)
    l.add_argument("--prompt-bytes", type=int, default=400)
    l.add_argument("--max-tokens", type=int, default=50)
    l.add_argument("--json", required=True)
    r = sub.add_parser("report")
    r.add_argument("--meta", required=True)
    r.add_argument("--json-out", required=True)
    a = ap.parse_args()
    if a.cmd == "load":
        load(a)
    else:
        report(a)


if __name__ == "__main__":
    main()
