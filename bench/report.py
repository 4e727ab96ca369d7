#!/usr/bin/env python3
"""Turns bench/out/run/results.tsv (written by bench/run.sh) into markdown tables on stdout.

Usage: report.py RESULTS_TSV CLK_TCK CONNECTIONS [DISCARDED_TSV]
Each TSV line: phase, target, round, connections, proxy CPU ticks, upstream CPU ticks, other load %, then wrk's
"key=value" summary (see bench/post.lua).
"""
import statistics
import sys

NAMES = {"direct": "direct (no proxy)", "nginx": "nginx proxy", "llmproxy": "LLMProxy"}
ERROR_KEYS = ("connect", "read", "write", "status", "timeout")


def load(path, clk_tck):
    runs = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            cols = raw.rstrip("\n").split("\t")
            if len(cols) < 8:
                continue
            phase, target, rnd, conns, proxy_ticks, up_ticks, other, summary = cols[:8]
            kv = dict(item.split("=", 1) for item in summary.split())
            req = int(kv["requests"])
            secs = int(kv["duration_us"]) / 1e6
            run = {
                "phase": phase, "target": target, "round": int(rnd), "conns": int(conns),
                "requests": req, "rps": req / secs if secs else 0.0,
                "p50": int(kv["p50_us"]) / 1000, "p90": int(kv["p90_us"]) / 1000, "p99": int(kv["p99_us"]) / 1000,
                "p999": int(kv["p999_us"]) / 1000, "max": int(kv["max_us"]) / 1000,
                "errors": {k: int(kv[k]) for k in ERROR_KEYS},
                # µs of CPU per request: (ticks / CLK_TCK) seconds over the run's requests.
                "cpu": (int(proxy_ticks) / clk_tck * 1e6 / req) if req and target != "direct" else None,
                "up_cpu": (int(up_ticks) / clk_tck * 1e6 / req) if req else None,
                "other": int(other),
                "gc": (int(kv.get("gc0", 0)), int(kv.get("gc1", 0)), int(kv.get("gc2", 0))),
            }
            run["error_total"] = sum(run["errors"].values())
            runs.append(run)
    return runs


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{fmt(med(values))} ({fmt(min(values))}–{fmt(max(values))})"


def f0(v):
    return f"{v:,.0f}"


def f3(v):
    return f"{v:.3f}"


def f1(v):
    return f"{v:.1f}"


def f2(v):
    return f"{v:.2f}"


def signed3(v):
    return f"{v:+.3f}"


def select(runs, phase, target):
    return sorted((r for r in runs if r["phase"] == phase and r["target"] == target), key=lambda r: r["round"])


def paired(runs, phase, key, op):
    """Per-round LLMProxy-vs-nginx values (ratio or difference) for rounds that have both."""
    n = {r["round"]: r for r in select(runs, phase, "nginx")}
    out = []
    for r in select(runs, phase, "llmproxy"):
        if r["round"] in n and r[key] is not None and n[r["round"]][key] not in (None, 0):
            out.append(op(r[key], n[r["round"]][key]))
    return out


def errors_cell(rs):
    parts = []
    for r in rs:
        e = r["errors"]
        if r["error_total"] == 0:
            parts.append("0")
        else:
            parts.append("/".join(f"{k}={e[k]}" for k in ERROR_KEYS if e[k]))
    return ", ".join(parts) if parts else "–"


def main():
    path, clk_tck, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = load(path, clk_tck)
    discarded_path = sys.argv[4] if len(sys.argv) > 4 else None
    try:
        discarded = load(discarded_path, clk_tck) if discarded_path else []
    except FileNotFoundError:
        discarded = []
    hi = f"c{conns}"
    rounds = max((r["round"] for r in runs), default=0)
    print(f"Medians over {rounds} rounds, (min–max) in brackets. CPU/req = utime+stime of the proxy process(es) "
          "(nginx: master + workers) during the run ÷ requests. Errors per run: 0, or wrk's counts "
          "(status = HTTP responses ≥ 400, connect/read/write/timeout = socket errors).")
    print()
    worst = max((r["other"] for r in runs), default=0)
    if worst > 5:
        print(f"**Warning: other processes used up to {worst} % of the machine's CPU during some runs** (column "
              "'other load' below); those runs' absolute numbers are depressed and noisy, ratios less so.")
        print()
    for phase, title in ((hi, f"{conns} connections"), ("c1", "1 connection (idle-proxy latency)")):
        print(f"### {title}")
        print()
        print("| target | req/s | p50 ms | p99 ms | proxy CPU µs/req | upstream CPU µs/req | errors per run |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for t in ("direct", "nginx", "llmproxy"):
            rs = select(runs, phase, t)
            if not rs:
                continue
            print(f"| {NAMES[t]} | {spread([r['rps'] for r in rs], f0)} | {spread([r['p50'] for r in rs], f3)} | "
                  f"{spread([r['p99'] for r in rs], f3)} | {spread([r['cpu'] for r in rs], f1)} | "
                  f"{spread([r['up_cpu'] for r in rs], f1)} | {errors_cell(rs)} |")
        print()

    print(f"### Ratios LLMProxy ÷ nginx proxy ({conns} connections)")
    print()
    print("| metric | ratio of medians | per-round ratios (min–max) | better |")
    print("|---|---:|---:|---|")
    ratios = {}
    for key, label, better in (("rps", "req/s", "higher"), ("p50", "p50 latency", "lower"),
                               ("p99", "p99 latency", "lower"), ("cpu", "CPU per request", "lower")):
        ml = med([r[key] for r in select(runs, hi, "llmproxy")])
        mn = med([r[key] for r in select(runs, hi, "nginx")])
        ratio = ml / mn if ml is not None and mn else None
        ratios[key] = ratio
        per = paired(runs, hi, key, lambda a, b: a / b)
        per_s = f"{min(per):.2f}–{max(per):.2f}" if per else "–"
        print(f"| {label} | {'–' if ratio is None else f'{ratio:.2f}'} | {per_s} | {better} |")
    print()

    print("### Added latency at 1 connection: LLMProxy − nginx proxy")
    print()
    print("| percentile | difference of medians (ms) | per-round differences (ms, min–max) |")
    print("|---|---:|---:|")
    added = {}
    for key in ("p50", "p99"):
        ml = med([r[key] for r in select(runs, "c1", "llmproxy")])
        mn = med([r[key] for r in select(runs, "c1", "nginx")])
        added[key] = (ml - mn) if ml is not None and mn is not None else None
        per = paired(runs, "c1", key, lambda a, b: a - b)
        per_s = f"{min(per):+.3f} – {max(per):+.3f}" if per else "–"
        print(f"| {key} | {'–' if added[key] is None else signed3(added[key])} | {per_s} |")
    print()

    gc_lines = []
    for phase in (hi, "c1"):
        rs = select(runs, phase, "llmproxy")
        req = sum(r["requests"] for r in rs)
        if req:
            g = [sum(r["gc"][i] for r in rs) for i in range(3)]
            gc_lines.append(f"{phase}: gen0 {g[0] * 1000 / req:.2f}, gen1 {g[1] * 1000 / req:.3f}, gen2 {g[2] * 1000 / req:.3f}")
    if gc_lines:
        print("LLMProxy garbage collections per 1,000 requests (from its /metrics): " + "; ".join(gc_lines) + ".")
        print()

    llm_errors = sum(r["error_total"] for r in runs if r["target"] == "llmproxy")
    print("### Against the issue's targets")
    print()

    def verdict(ok):
        return "met" if ok else "NOT met"

    if ratios.get("rps") is not None:
        print(f"- LLMProxy ≥ 0.6× nginx-proxy req/s at {conns} connections with zero errors: "
              f"{ratios['rps']:.2f}×, {llm_errors} errors in all LLMProxy runs → "
              f"{verdict(ratios['rps'] >= 0.6 and llm_errors == 0)}")
    if added.get("p50") is not None:
        print(f"- added p50 at 1 connection ≤ 0.1 ms: {signed3(added['p50'])} ms → {verdict(added['p50'] <= 0.1)}")
    if added.get("p99") is not None:
        print(f"- added p99 at 1 connection ≤ 0.5 ms: {signed3(added['p99'])} ms → {verdict(added['p99'] <= 0.5)}")
    print()

    if discarded:
        print(f"Runs repeated because other processes used more than the allowed share of the CPU during them "
              f"(not in any number above): {len(discarded)} — "
              + ", ".join(f"{r['phase']} {NAMES[r['target']]} round {r['round']} ({r['other']} % other load, "
                          f"{r['rps']:,.0f} req/s)" for r in discarded))
        print()
    print("### Every run")
    print()
    print("| phase | target | round | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | proxy CPU µs/req | LLMProxy GCs gen0/1/2 | errors | other load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in sorted(runs, key=lambda r: (r["phase"] != hi, r["round"])):
        cpu = "–" if r["cpu"] is None else f"{r['cpu']:.1f}"
        print(f"| {r['phase']} | {NAMES[r['target']]} | {r['round']} | {r['requests']:,} | {r['rps']:,.0f} | "
              f"{r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} | {r['max']:.3f} | {cpu} | "
              f"{'/'.join(str(g) for g in r['gc']) if r['target'] == 'llmproxy' else '–'} | "
              f"{errors_cell([r])} | {r['other']} % |")


if __name__ == "__main__":
    main()
