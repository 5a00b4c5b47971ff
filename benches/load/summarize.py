#!/usr/bin/env python3
"""Turns load-generator output into table rows for benches/load.sh.

  summarize.py row NAME CONCURRENCY FILE...   one TSV row; several files
                                              (parallel runs) are combined
  summarize.py detail FILE...                 status codes and errors, for logs
  summarize.py table RESULTS.tsv              the Markdown tables and the ratios
                                              (RESULTS.tsv: rows, each with the other-CPU
                                              busy % and the round that load.sh appends)
  summarize.py tlstable RESULTS.tsv           the same for benches/tls.sh (each row led by
                                              its test: h1-16, h2, hs-full, ...)
  summarize.py rolls STEADY.json ROLLS.json SAVES.tsv BEFORE.json AFTER.json TIMELINE.tsv
                                              benches/rolls.sh's table and figures (oha JSON
                                              of both phases, benches/load/rolls.py's output,
                                              /status before and after phase B, its /metrics
                                              timeline)

FILE is oha's JSON (`--output-format json`) or, for the wrk fallback, wrk's
output with the `JSON {...}` line printed by benches/load/wrk-report.lua.
requests/s counts 2xx answers only. Combining parallel runs: requests/s are summed; p50 and p99 are the worst of
the runs (percentiles cannot be merged exactly without the raw samples).
"""

import json
import os
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
    # oha cannot let HTTP/2 requests in flight at the deadline finish (-w applies to
    # HTTP/1 only): benches/tls.sh sets this to the h2 row's streams in flight, and
    # up to that many "aborted due to deadline" are then not counted as errors.
    allowed = int(os.environ.get("DEADLINE_ABORTS_ALLOWED", "0"))
    for r in runs:
        cut = r["errors"].get("aborted due to deadline", 0)
        if cut and cut <= allowed:
            del r["errors"]["aborted due to deadline"]
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
    """load.sh's results: one row per run, each with its round last. Rows are
    summarised by their median over the rounds, and each ratio is taken
    within a round (both runs minutes apart at most) before its median."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                name, conc, rps, p50, p99, non2xx, errors, busy, rnd = line.rstrip("\n").split("\t")
                rows.append({"name": name, "conc": conc, "rps": float(rps), "p50": float(p50),
                             "p99": float(p99), "non2xx": int(non2xx), "errors": int(errors),
                             "busy": busy, "round": int(rnd)})
    groups = {}
    for r in rows:
        groups.setdefault((r["name"], r["conc"]), []).append(r)
    rounds = max(r["round"] for r in rows) if rows else 0
    print(f"Medians over {rounds} round(s); each row's runs are listed under the ratios.")
    print()
    print("| run | concurrency | requests/s | p50 ms | p99 ms | non-2xx | errors | other CPU % (max) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, conc), runs in groups.items():
        busy = max((int(r["busy"]) for r in runs if r["busy"].isdigit()), default="?")
        print(f"| {name} | {conc} | {median([r['rps'] for r in runs]):,.0f} | "
              f"{median([r['p50'] for r in runs]):.2f} | {median([r['p99'] for r in runs]):.2f} | "
              f"{sum(r['non2xx'] for r in runs)} | {sum(r['errors'] for r in runs)} | {busy} |")

    by_round = {(r["name"], r["conc"], r["round"]): r for r in rows}
    limit = groups.get(next((k for k in groups if k[0] == "limit"), None))
    peers = list(dict.fromkeys(r["name"] for r in rows if r["name"].startswith("haproxy")))
    builds = list(dict.fromkeys(r["name"] for r in rows if r["name"].startswith("rip-") and r["name"] != "rip-server"))
    print()
    print("| concurrency | rip-server against | req/s ratio | p99 ratio |")
    print("|---:|---|---:|---:|")
    for name, conc in groups:
        if name != "rip-server":
            continue
        found = [p for p in peers if (p, conc) in groups]
        columns = [(p, lambda rnd, p=p: by_round.get((p, conc, rnd))) for p in builds + found]
        if len(found) > 1:
            def best(rnd, found=found):
                runs = [by_round[(p, conc, rnd)] for p in found if (p, conc, rnd) in by_round]
                if not runs:
                    return None
                return {"rps": max(r["rps"] for r in runs), "p99": min(r["p99"] for r in runs)}
            columns.append(("best HAProxy", best))
        for label, peer_in in columns:
            rps_ratios, p99_ratios = [], []
            for rip in groups[(name, conc)]:
                peer = peer_in(rip["round"])
                if peer and peer["rps"] and peer["p99"]:
                    rps_ratios.append(rip["rps"] / peer["rps"])
                    p99_ratios.append(rip["p99"] / peer["p99"])
            mark = "**" if label == "best HAProxy" or len(found) == 1 else ""
            print(f"| {conc} | {label} | {mark}{spread(rps_ratios)}{mark} | {mark}{spread(p99_ratios)}{mark} |")
        if limit:
            limit_rps = median([r["rps"] for r in limit])
            rip_rps = median([r["rps"] for r in groups[(name, conc)]])
            print(f"| {conc} | limit ({limit[0]['conc']}) | {ratio(rip_rps, limit_rps)} | — |")
    print()
    print("req/s ratio above 1: rip-server serves more; p99 ratio below 1: rip-server's tail is shorter.")
    print("Each ratio: the median of the per-round ratios, (lowest–highest) when there are several rounds.")
    print("(no p99 ratio against the limit: it runs one request per worker, with no queue).")
    if len(peers) > 1:
        print("best HAProxy: in each round, the highest req/s and, separately, the lowest p99 of the HAProxy rows.")
    print()
    print("| round | run | concurrency | requests/s | p50 ms | p99 ms | other CPU % |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["round"]):
        print(f"| {r['round']} | {r['name']} | {r['conc']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['busy']} |")


def spread(values):
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def tlstable(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(line.rstrip("\n").split("\t"))
    print("| test | run | connections | requests/s | p50 ms | p99 ms | non-2xx | errors | other CPU % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for test, name, conc, rps, p50, p99, non2xx, errors, *busy in rows:
        busy = busy[0] if busy else "?"
        print(f"| {test} | {name} | {conc} | {float(rps):,.0f} | {float(p50):.2f} | {float(p99):.2f} | {non2xx} | {errors} | {busy} |")
    print()
    print("| test | rip-server against | req/s ratio | p99 ratio |")
    print("|---|---|---:|---:|")
    tests = list(dict.fromkeys(r[0] for r in rows))
    for test in tests:
        group = [r for r in rows if r[0] == test]
        rip = next((r for r in group if r[1] == "rip-server"), None)
        if not rip:
            continue
        rps, p99 = float(rip[3]), float(rip[5])
        for family in ("haproxy", "nginx"):
            peers = [r for r in group if r[1].startswith(family)]
            for peer in peers:
                print(f"| {test} | {peer[1]} | {ratio(rps, float(peer[3]))} | {ratio(p99, float(peer[5]))} |")
            if len(peers) > 1:
                best_rps = max(float(p[3]) for p in peers)
                best_p99 = min(float(p[5]) for p in peers)
                print(f"| {test} | best {family} | **{ratio(rps, best_rps)}** | **{ratio(p99, best_p99)}** |")
    print()
    print("requests/s counts 2xx answers only. req/s ratio above 1: rip-server serves more; p99 ratio below 1:")
    print("rip-server's tail is shorter. best X: the highest req/s and, separately, the lowest p99 of X's rows.")
    print("A p99 ratio against a peer that answered non-2xx compares different work (an error is fast).")


def rolls(steady_path, rolls_path, saves_path, before_path, after_path, timeline_path):
    steady, during = load(steady_path), load(rolls_path)
    print("| phase | requests/s | p50 ms | p99 ms | non-2xx | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("steady", steady), ("during rolls", during)):
        non2xx = sum(v for k, v in r["statuses"].items() if not 200 <= k < 300)
        errors = sum(r["errors"].values())
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {non2xx} | {errors} |")
    print()
    print(f"p99 during rolls / p99 steady: **{ratio(during['p99_ms'], steady['p99_ms'])}** (target: at most 2)")
    print(f"p50 during rolls / p50 steady: {ratio(during['p50_ms'], steady['p50_ms'])}")
    print(f"requests/s during rolls / steady: {ratio(during['rps'], steady['rps'])}")
    for name, r in (("steady", steady), ("during rolls", during)):
        if any(not 200 <= k < 300 for k in r["statuses"]) or r["errors"]:
            print(f"{name}: status codes {json.dumps(r['statuses'])}, errors {json.dumps(r['errors'])}")
    with open(saves_path, encoding="utf-8") as f:
        saves = [line.split("\t") for line in f.read().splitlines()[1:] if line.strip()]
    done = sorted(float(s[3]) for s in saves if s[3] != "timeout")
    print()
    print(f"save to new version answering, {len(saves)} saves ({len(saves) - len(done)} timed out):")
    if done:
        print(f"median **{median(done):.0f} ms**, min {done[0]:.0f} ms, max {done[-1]:.0f} ms (target: under 1000 ms)")
    rolls_ms = sorted(float(s[4]) for s in saves if s[4].replace(".", "", 1).isdigit())
    if rolls_ms:
        print(f"rip-server's own roll duration (last_roll.duration_ms after each save): median {median(rolls_ms):.0f} ms, "
              f"min {rolls_ms[0]:.0f}, max {rolls_ms[-1]:.0f}")
    with open(before_path, encoding="utf-8") as f:
        before = json.load(f)
    with open(after_path, encoding="utf-8") as f:
        after = json.load(f)
    rb, ra = before.get("rolls") or {}, after.get("rolls") or {}
    delta = {k: (ra.get(k) or 0) - (rb.get(k) or 0) for k in ("started", "succeeded", "failed")}
    last = after.get("last_roll") or {}
    print(
        f"rolls during phase B (/status): started {delta['started']}, succeeded {delta['succeeded']}, "
        f"failed {delta['failed']}; generation {before.get('generation')} -> {after.get('generation')}; "
        f"last_roll ok {last.get('ok')}; restarts {before.get('restarts')} -> {after.get('restarts')}"
    )
    timeline(timeline_path, [float(s[1]) for s in saves])


def timeline(path, save_at):
    """Responses per second from rip-server's /metrics (sampled every 100 ms),
    by time since the last save; and busy retries and queue depth."""
    with open(path, encoding="utf-8") as f:
        rows = [[float(x) for x in line.split("\t")] for line in f.read().splitlines()[1:] if line.strip()]
    if len(rows) < 2 or not save_at:
        return
    width = 0.25
    bins = {}
    for (t0, n0, *_), (t1, n1, *_) in zip(rows, rows[1:]):
        mid = (t0 + t1) / 2
        before = [a for a in save_at if a <= mid]
        key = "before the first save" if not before else int((mid - before[-1]) / width)
        spent, done = bins.get(key, (0.0, 0.0))
        bins[key] = (spent + t1 - t0, done + n1 - n0)
    print()
    print("responses/s from rip-server's /metrics (every 100 ms), by time since the last save:")
    print()
    print("| since the last save | responses/s | sampled s |")
    print("|---|---:|---:|")
    for key in ["before the first save"] + sorted(k for k in bins if k != "before the first save"):
        if key in bins and bins[key][0] >= 0.5:  # leave out slivers (the load may have ended)
            spent, done = bins[key]
            label = key if isinstance(key, str) else f"{key * width:.2f}-{(key + 1) * width:.2f} s"
            print(f"| {label} | {done / spent:,.0f} | {spent:.1f} |")
    retries = rows[-1][2] - rows[0][2]
    print()
    print(f"busy retries during the timeline: {retries:.0f}; largest queue depth sampled: {max(r[3] for r in rows):.0f}")


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def main(argv):
    if len(argv) >= 4 and argv[1] == "row":
        row(argv[2], argv[3], argv[4:])
    elif len(argv) >= 3 and argv[1] == "detail":
        detail(argv[2:])
    elif len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    elif len(argv) == 3 and argv[1] == "tlstable":
        tlstable(argv[2])
    elif len(argv) == 8 and argv[1] == "rolls":
        rolls(*argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
