#!/usr/bin/env python3
"""Turns load-generator output into table rows for benches/load.sh.

  summarize.py row NAME CONCURRENCY FILE...   one TSV row; several files
                                              (parallel runs) are combined
  summarize.py detail FILE...                 status codes and errors, for logs
  summarize.py table RESULTS.tsv              the Markdown table and the ratios
                                              (RESULTS.tsv: rows, each with the other-CPU
                                              busy % that load.sh appends)

FILE is oha's JSON (`--output-format json`) or, for the wrk fallback, wrk's
output with the `JSON {...}` line printed by benches/load/wrk-report.lua.
requests/s counts 2xx answers only. Combining parallel runs: requests/s are summed; p50 and p99 are the worst of
the runs (percentiles cannot be merged exactly without the raw samples).
"""

import json
import sys


def load(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("JSON "):
            return from_wrk(json.loads(line[5:]))
    return from_oha(json.loads(text))


def from_oha(doc):
    statuses = {int(k): v for k, v in doc.get("statusCodeDistribution", {}).items()}
    errors = doc.get("errorDistribution", {})
    pct = doc.get("latencyPercentiles", {})
    summary = doc["summary"]
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    return {
        # 2xx answers per second of the run: an error page is not served work
        "rps": ok / summary["total"] if summary.get("total") else 0.0,
        "p50_ms": (pct.get("p50") or 0.0) * 1000.0,
        "p99_ms": (pct.get("p99") or 0.0) * 1000.0,
        "statuses": statuses,
        "errors": errors,
    }


def from_wrk(doc):
    seconds = doc["duration_us"] / 1e6
    non2xx = doc["errors"].pop("status", 0)
    return {
        "rps": (doc["requests"] - non2xx) / seconds,
        "p50_ms": doc["p50_us"] / 1000.0,
        "p99_ms": doc["p99_us"] / 1000.0,
        # wrk only counts non-2xx/3xx responses, without their codes
        "statuses": {0: non2xx} if non2xx else {},
        "errors": {k: v for k, v in doc["errors"].items() if v},
    }


def row(name, concurrency, paths):
    runs = [load(p) for p in paths]
    non2xx = sum(v for r in runs for k, v in r["statuses"].items() if not 200 <= k < 300)
    errors = sum(v for r in runs for v in r["errors"].values())
    print(
        "\t".join(
            [
                name,
                concurrency,
                f"{sum(r['rps'] for r in runs):.0f}",
                f"{max(r['p50_ms'] for r in runs):.3f}",
                f"{max(r['p99_ms'] for r in runs):.3f}",
                str(non2xx),
                str(errors),
            ]
        )
    )


def detail(paths):
    for path in paths:
        r = load(path)
        print(f"{path}: status codes {json.dumps(r['statuses'])}, errors {json.dumps(r['errors'])}")


def table(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(line.rstrip("\n").split("\t"))
    print("| run | concurrency | requests/s | p50 ms | p99 ms | non-2xx | errors | other CPU % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, conc, rps, p50, p99, non2xx, errors, *busy in rows:
        busy = busy[0] if busy else "?"
        print(f"| {name} | {conc} | {float(rps):,.0f} | {float(p50):.2f} | {float(p99):.2f} | {non2xx} | {errors} | {busy} |")

    limit = next((r for r in rows if r[0] == "limit"), None)
    peers = list(dict.fromkeys(r[0] for r in rows if r[0].startswith("haproxy")))
    by = {(r[0], r[1]): r for r in rows}
    print()
    print("| concurrency | rip-server against | req/s ratio | p99 ratio |")
    print("|---:|---|---:|---:|")
    for (name, conc), r in by.items():
        if name != "rip-server":
            continue
        rps, p99 = float(r[2]), float(r[4])
        found = [by[(p, conc)] for p in peers if (p, conc) in by]
        for peer in found:
            print(f"| {conc} | {peer[0]} | {ratio(rps, float(peer[2]))} | {ratio(p99, float(peer[4]))} |")
        if len(found) > 1:
            best_rps = max(float(p[2]) for p in found)
            best_p99 = min(float(p[4]) for p in found)
            print(f"| {conc} | best HAProxy | **{ratio(rps, best_rps)}** | **{ratio(p99, best_p99)}** |")
        if limit:
            print(f"| {conc} | limit ({limit[1]}) | {ratio(rps, float(limit[2]))} | — |")
    print()
    print("req/s ratio above 1: rip-server serves more; p99 ratio below 1: rip-server's tail is shorter")
    print("(no p99 ratio against the limit: it runs one request per worker, with no queue).")
    if len(peers) > 1:
        print("best HAProxy: the highest req/s and, separately, the lowest p99 of the HAProxy rows at that concurrency.")


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def main(argv):
    if len(argv) >= 4 and argv[1] == "row":
        row(argv[2], argv[3], argv[4:])
    elif len(argv) >= 3 and argv[1] == "detail":
        detail(argv[2:])
    elif len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
