#!/usr/bin/env python3
"""Turns load-generator output into table rows for benches/load.sh.

  summarize.py row NAME CONCURRENCY FILE...   one TSV row (name, concurrency, requests/s,
                                              p50 ms, p99 ms, non-2xx, errors, 2xx answers);
                                              several files (parallel runs) are combined
  summarize.py detail FILE...                 status codes and errors, for logs
  summarize.py table RESULTS.tsv              benches/load.sh's tables: each row's median over
                                              the rounds, the ratios (taken within each round,
                                              then their median and range), and every round
                                              (RESULTS.tsv: row's columns, then the other-CPU
                                              busy %, the round, the proxy's CPU seconds and
                                              their kernel part, the machine's busy seconds
                                              and busy %, the workers' CPU seconds)
  summarize.py tlstable RESULTS.tsv           the same for benches/tls.sh (each line led by
                                              its test: h1-16, h2, hs-full, ...)
  summarize.py jstable RESULTS.tsv            benches/js.sh's table (each line led by its runtime):
                                              each row's median, the ratios against the targets
  summarize.py rolls DIR ROUNDS               benches/rolls.sh's tables: per round (DIR/rN/:
                                              oha JSON of both phases, benches/load/rolls.py's
                                              output, /status before and after phase B, the
                                              /metrics timeline, CPU), and the medians over
                                              the rounds

Every figure docs/benchmarks.md quotes is printed here: a page number that this
script does not print is a number nobody can reproduce.

FILE is oha's JSON (`--output-format json`) or, for the wrk fallback, wrk's
output with the `JSON {...}` line printed by benches/load/wrk-report.lua.
requests/s counts 2xx answers only. Combining parallel runs: requests/s are summed; p50 and p99 are the worst of
the runs (percentiles cannot be merged exactly without the raw samples). CPU µs per request: the proxy's
own processes' CPU time (utime + stime from /proc, measured by the shell script around the measured
run) divided by the 2xx answers of that run; "of it kernel %": its stime's share. Machine CPU µs per
request: every CPU's busy time in the run (/proc/stat: all processes and the kernel) per 2xx answer,
with the machine's busy share; the "headroom" lines derive from these what the proxy's own cost bounds.
Workers' CPU µs per request: the app workers' CPU time (rip-server's children, or the standalone
workers behind a peer) per 2xx answer: what the same workers spend answering through each proxy.
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
        "ok": ok,
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
        "ok": doc["requests"] - non2xx,
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
                str(sum(r["ok"] for r in runs)),
            ]
        )
    )


def detail(paths):
    for path in paths:
        r = load(path)
        print(f"{path}: status codes {json.dumps(r['statuses'])}, errors {json.dumps(r['errors'])}")


RESULT_FIELDS = ["name", "conc", "rps", "p50", "p99", "non2xx", "errors", "ok", "busy", "round", "cpu_s", "sys_s",
                 "machine_s", "machine_pct", "workers_s"]


def read_results(path, with_test):
    """The shell script's result lines: [test,] then RESULT_FIELDS."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            test = fields.pop(0) if with_test else ""
            r = dict(zip(RESULT_FIELDS, fields))
            for k in ("rps", "p50", "p99"):
                r[k] = float(r[k])
            for k in ("non2xx", "errors", "ok", "round"):
                r[k] = int(r[k])
            # µs per 2xx answer: of the proxy's CPU (none for the limit row), of it in the
            # kernel, and of the whole machine's busy CPU
            r["cpu_us"] = per_answer(r, "cpu_s")
            r["sys_us"] = per_answer(r, "sys_s")
            r["machine_us"] = per_answer(r, "machine_s")
            r["workers_us"] = per_answer(r, "workers_s")
            r["test"] = test
            rows.append(r)
    return rows


def per_answer(r, field):
    """FIELD's CPU seconds as µs per 2xx answer, or None where the run has none."""
    seconds = r.get(field, "")
    return float(seconds) * 1e6 / r["ok"] if seconds not in ("", "-") and r["ok"] else None


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return median(values) if values else None


def medians_table(rows, with_test):
    """One line per (test, run, concurrency): the median over its rounds."""
    groups = {}
    for r in rows:
        groups.setdefault((r["test"], r["name"], r["conc"]), []).append(r)
    rounds = max((r["round"] for r in rows), default=0)
    print(f"Each row: the median over its {rounds} round(s); every round is listed at the end.")
    print()
    lead = "| test " if with_test else ""
    print(f"{lead}| run | concurrency | requests/s | p50 ms | p99 ms | non-2xx | errors | CPU µs/request | "
          "of it kernel % | workers' CPU µs/request | machine CPU µs/request (busy %) | other CPU % (max) |")
    print(("|---" if with_test else "") + "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (test, name, conc), runs in groups.items():
        busy = max((int(r["busy"]) for r in runs if r["busy"].isdigit()), default="?")
        cell = f"| {test} " if with_test else ""
        print(f"{cell}| {name} | {conc} | {median([r['rps'] for r in runs]):,.0f} | "
              f"{median([r['p50'] for r in runs]):.2f} | {median([r['p99'] for r in runs]):.2f} | "
              f"{sum(r['non2xx'] for r in runs)} | {sum(r['errors'] for r in runs)} | "
              f"{fmt(median_or_none([r['cpu_us'] for r in runs]), '.1f')} | "
              f"{fmt(kernel_share(runs), '.0f')} | {fmt(median_or_none([r['workers_us'] for r in runs]), '.1f')} | "
              f"{machine_cell(runs)} | {busy} |")
    return groups


def kernel_share(runs):
    """The median share (%) of the proxy's CPU that its kernel time was."""
    return median_or_none([100 * r["sys_us"] / r["cpu_us"] for r in runs if r["cpu_us"] and r["sys_us"] is not None])


def machine_cell(runs):
    machine = median_or_none([r["machine_us"] for r in runs])
    busy = median_or_none([float(r["machine_pct"]) for r in runs if r.get("machine_pct", "") not in ("", "-")])
    return "—" if machine is None else f"{machine:.1f} ({fmt(busy, '.0f')})"


def headroom(groups, with_test):
    """What the proxy's own cost bounds: with every other process and the kernel's
    work for them as they were, the machine's CPU per answer less the proxy's is
    what a proxy costing nothing would leave, and less only its user time is
    what one making the same system calls at no cost of its own would leave."""
    lines = []
    for (test, name, conc), runs in groups.items():
        machine = median_or_none([r["machine_us"] for r in runs])
        proxy = median_or_none([r["cpu_us"] for r in runs])
        system = median_or_none([r["sys_us"] for r in runs])
        if name.startswith("self-") or None in (machine, proxy, system) or machine <= proxy:
            continue
        what = f"{test} {name}" if with_test else f"{name} at c={conc}"
        lines.append(f"headroom, {what}: the machine spent {machine:.1f} µs of CPU per answer, {proxy:.1f} "
                     f"in the proxy ({system:.1f} in the kernel for it); with the rest as it was, a proxy "
                     f"costing nothing would serve at most {machine / (machine - proxy):.2f}× these requests/s, "
                     f"one with the same kernel time and no user time {machine / (machine - proxy + system):.2f}×")
    if lines:
        print("\n".join(lines))
        print("(meaningful where the machine was busy near 100 %: then its CPU per answer sets the rate)")
        print()


def family(name):
    for f in ("haproxy", "nginx"):
        if name.startswith(f):
            return f
    return name


FAMILY_LABEL = {"haproxy": "HAProxy", "nginx": "nginx"}


def best_of(by_round, test, conc, members):
    """In a round: the highest req/s and, separately, the lowest p50, p99 and
    CPU per request of the members' rows."""
    def best(rnd):
        runs = [by_round[(test, p, conc, rnd)] for p in members if (test, p, conc, rnd) in by_round]
        if not runs:
            return None
        cpus = [r["cpu_us"] for r in runs if r["cpu_us"] is not None]
        return {"rps": max(r["rps"] for r in runs), "p50": min(r["p50"] for r in runs),
                "p99": min(r["p99"] for r in runs), "cpu_us": min(cpus) if cpus else None}
    return best


def ratios_table(rows, with_test):
    """rip-server against every peer, each ratio taken within a round (both
    runs at most minutes apart), then the median and range over the rounds;
    and against the best of each family (in each round: the highest req/s,
    and separately the lowest p50, p99 and CPU per request, of its rows)."""
    by_round = {(r["test"], r["name"], r["conc"], r["round"]): r for r in rows}
    keys = list(dict.fromkeys((r["test"], r["conc"]) for r in rows if r["name"] == "rip-server"))
    judged = {}  # (test, conc, family) -> median ratios against the bold comparison
    lead = "| test " if with_test else "| concurrency "
    print(f"{lead}| rip-server against | req/s ratio | rounds ahead | p50 ratio | p99 ratio | rounds p99 ≤ 1 | CPU/request ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for test, conc in keys:
        peers = list(dict.fromkeys(r["name"] for r in rows
                                   if (r["test"], r["conc"]) == (test, conc)
                                   and r["name"] not in ("rip-server", "limit") and not r["name"].startswith("self-")))
        # (label, the peer's row in a round, in bold: the comparison a target is judged on)
        columns = []
        for fam in dict.fromkeys(family(p) for p in peers):
            members = [p for p in peers if family(p) == fam]
            for p in members:
                single = fam in FAMILY_LABEL and len(members) == 1
                columns.append((p, (lambda rnd, p=p: by_round.get((test, p, conc, rnd))), single))
            if fam in FAMILY_LABEL and len(members) > 1:
                columns.append((f"best {FAMILY_LABEL[fam]}", best_of(by_round, test, conc, members), True))
        rips = [r for r in rows if (r["test"], r["name"], r["conc"]) == (test, "rip-server", conc)]
        for label, peer_in, bold in columns:
            rps, p50, p99, cpu = [], [], [], []
            for rip in rips:
                peer = peer_in(rip["round"])
                if not peer or not peer["rps"]:
                    continue
                rps.append(rip["rps"] / peer["rps"])
                p50.append(rip["p50"] / peer["p50"] if peer["p50"] else None)
                p99.append(rip["p99"] / peer["p99"] if peer["p99"] else None)
                if rip["cpu_us"] is not None and peer.get("cpu_us"):
                    cpu.append(rip["cpu_us"] / peer["cpu_us"])
            p99_known = [v for v in p99 if v is not None]
            if bold and rps:
                judged[(test, conc, family(label.split()[-1].lower()))] = {
                    "label": label, "rps": median(rps), "p99": median_or_none(p99_known)}
            mark = "**" if bold else ""
            cell = test if with_test else conc
            print(f"| {cell} | {label} | {mark}{spread(rps)}{mark} | {sum(v >= 1 for v in rps)} of {len(rps)} | "
                  f"{spread([v for v in p50 if v is not None])} | {mark}{spread(p99_known)}{mark} | "
                  f"{sum(v <= 1 for v in p99_known)} of {len(p99_known)} | {spread(cpu)} |")
    print()
    print("req/s ratio above 1: rip-server serves more (\"rounds ahead\": rounds where it did); p50/p99 ratio")
    print("below 1: rip-server's latency is shorter; CPU/request ratio below 1: rip-server's own process spends")
    print("less CPU per answer than the peer's. Each ratio: the median of the per-round ratios, (lowest–highest).")
    print("best X: in each round, the highest req/s and, separately, the lowest p50, p99 and CPU/request of X's rows.")
    return judged


def verdict(ok):
    return "met" if ok else "**MISSED**"


def rounds_table(rows, with_test):
    print("| round | " + ("test | " if with_test else "") + "run | concurrency | requests/s | p50 ms | p99 ms | non-2xx | errors | CPU µs/request | other CPU % |")
    print("|---:|" + ("---|" if with_test else "") + "---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["round"]):
        cell = f" {r['test']} |" if with_test else ""
        print(f"| {r['round']} |{cell} {r['name']} | {r['conc']} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{r['non2xx']} | {r['errors']} | {fmt(r['cpu_us'], '.1f')} | {r['busy']} |")


def table(path):
    """benches/load.sh's results."""
    rows = read_results(path, with_test=False)
    groups = medians_table(rows, with_test=False)
    print()
    judged = ratios_table(rows, with_test=False)
    print()
    for (test, conc, fam), j in judged.items():
        if fam != "haproxy":
            continue
        p99 = j["p99"]
        print(f"target, HTTP keep-alive at c={conc}: requests/s at least {j['label']}'s: {verdict(j['rps'] >= 1)} "
              f"({j['rps']:.2f}); p99 no longer: {verdict(p99 is not None and p99 <= 1)} ({fmt(p99, '.2f')})")
    paired_targets(rows)
    print()
    headroom(groups, with_test=False)
    limit = next((runs for (t, name, conc), runs in groups.items() if name == "limit"), None)
    if limit:
        limit_rps = median([r["rps"] for r in limit])
        print()
        for (t, name, conc), runs in groups.items():
            if name == "rip-server":
                print(f"rip-server at c={conc} against the limit ({limit[0]['conc']}, measured once): "
                      f"{ratio(median([r['rps'] for r in runs]), limit_rps)} of its requests/s")
        for (t, name, conc), runs in groups.items():
            if name.startswith("haproxy"):
                print(f"{name} at c={conc} against the limit: {ratio(median([r['rps'] for r in runs]), limit_rps)}")
        print("(no p99 ratio against the limit: it runs one request per worker, with no queue)")
    print()
    rounds_table(rows, with_test=False)


def paired(rows, name, peer):
    """Per concurrency: the per-round ratios of NAME's req/s to PEER's."""
    by_round = {(r["name"], r["conc"], r["round"]): r for r in rows}
    out = {}
    for r in rows:
        if r["name"] != name:
            continue
        other = by_round.get((peer, r["conc"], r["round"]))
        if other and other["rps"]:
            out.setdefault(r["conc"], []).append(r["rps"] / other["rps"])
    return out


def paired_targets(rows):
    """The targets judged between two rows of the same round: the defaults
    against the tuned policy, rip-server's /server against nginx's return 200,
    and this build against a baseline build."""
    lines = [
        ("rip-defaults", "rip-server", "the defaults (r:10000,3600s,10r --reload=process) within 3% of RIP_ARGS",
         lambda v: v >= 0.97),
        ("self-rip", "self-nginx", "GET /server: rip-server's own answer at least nginx's return 200",
         lambda v: v >= 1),
        ("rip-server", "rip-base", "this build against the baseline build: no measurable cost (at least 0.97)",
         lambda v: v >= 0.97),
    ]
    for name, peer, claim, ok in lines:
        for conc, ratios in paired(rows, name, peer).items():
            print(f"target, {claim}, c={conc}: {verdict(ok(median(ratios)))} "
                  f"({name}/{peer} req/s {spread(ratios)} over {len(ratios)} rounds)")


def spread(values):
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def tlstable(path):
    """benches/tls.sh's results."""
    rows = read_results(path, with_test=True)
    groups = medians_table(rows, with_test=True)
    print()
    judged = ratios_table(rows, with_test=True)
    print()
    for (test, conc, fam), j in judged.items():
        if fam == "haproxy" and (test.startswith("h1") or test == "h2"):
            print(f"target, HTTPS keep-alive ({test}): requests/s at least {j['label']}'s: "
                  f"{verdict(j['rps'] >= 1)} ({j['rps']:.2f})")
        if fam == "nginx" and test == "hs-full":
            print(f"target, new TLS handshakes (hs-full): rate at least {j['label']}'s: "
                  f"{verdict(j['rps'] >= 1)} ({j['rps']:.2f})")
    print("requests/s counts 2xx answers only; a p99 ratio against a peer that answered non-2xx compares")
    print("different work (an error is fast).")
    print()
    headroom(groups, with_test=True)
    rounds_table(rows, with_test=True)


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        lines = [line.split("\t") for line in f.read().splitlines() if line.strip()]
    return lines[0], lines[1:]


def rolls(d, rounds):
    """benches/rolls.sh: each round's phases and saves, then the medians over
    the rounds and the targets."""
    per = []
    for n in range(1, int(rounds) + 1):
        r = f"{d}/r{n}"
        steady, during = load(f"{r}/steady.json"), load(f"{r}/rolls.json")
        _, saves = read_tsv(f"{r}/saves.tsv")
        with open(f"{r}/status-before.json", encoding="utf-8") as f:
            before = json.load(f)
        with open(f"{r}/status-after.json", encoding="utf-8") as f:
            after = json.load(f)
        _, cpu = read_tsv(f"{r}/cpu.tsv")
        rb, ra = before.get("rolls") or {}, after.get("rolls") or {}
        per.append({
            "round": n, "steady": steady, "during": during, "saves": saves, "cpu": [int(x) for x in cpu[0]],
            "delta": {k: (ra.get(k) or 0) - (rb.get(k) or 0) for k in ("started", "succeeded", "failed")},
            "generations": (before.get("generation"), after.get("generation")),
            "restarts": (before.get("restarts"), after.get("restarts")),
            "timeline": f"{r}/timeline.tsv",
        })

    def failed(r):
        return (sum(v for k, v in r["statuses"].items() if not 200 <= k < 300), sum(r["errors"].values()))

    def took(p):
        return sorted(float(s[3]) for s in p["saves"] if s[3] != "timeout")

    def roll_ms(p):
        return sorted(float(s[4]) for s in p["saves"] if s[4].replace(".", "", 1).isdigit())

    print("Per round (phase A steady, then phase B with the saves; requests/s, p99 ms in brackets):")
    print()
    print("| round | steady req/s (p99 ms) | rolls req/s (p99 ms) | p99 ratio | p50 ratio | req/s ratio | "
          "save → new version: median (min–max) ms | roll ms, median | rolls ok / failed | non-2xx, errors | "
          "CPU steady: rip-server, workers (% of one CPU) | CPU during rolls | other CPU %: steady, rolls |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in per:
        st, du = p["steady"], p["during"]
        t, rm = took(p), roll_ms(p)
        timeouts = len(p["saves"]) - len(t)
        saves = f"{median(t):.0f} ({t[0]:.0f}–{t[-1]:.0f})" if t else "none"
        if timeouts:
            saves += f", {timeouts} timed out"
        bad = [a + b for a, b in zip(failed(st), failed(du))]
        c = p["cpu"]
        print(f"| {p['round']} | {st['rps']:,.0f} ({st['p99_ms']:.2f}) | {du['rps']:,.0f} ({du['p99_ms']:.2f}) | "
              f"{ratio(du['p99_ms'], st['p99_ms'])} | {ratio(du['p50_ms'], st['p50_ms'])} | {ratio(du['rps'], st['rps'])} | "
              f"{saves} | {fmt(median_or_none(rm), '.0f')} | {p['delta']['succeeded']} / {p['delta']['failed']} | "
              f"{bad[0]}, {bad[1]} | {c[0]} %, {c[1]} % | {c[2]} %, {c[3]} % | {c[4]}, {c[5]} |")
    p99s = [p["during"]["p99_ms"] / p["steady"]["p99_ms"] for p in per if p["steady"]["p99_ms"]]
    p50s = [p["during"]["p50_ms"] / p["steady"]["p50_ms"] for p in per if p["steady"]["p50_ms"]]
    rpss = [p["during"]["rps"] / p["steady"]["rps"] for p in per if p["steady"]["rps"]]
    all_took = sorted(x for p in per for x in took(p))
    all_rolls = sorted(x for p in per for x in roll_ms(p))
    n_saves = sum(len(p["saves"]) for p in per)
    ok = sum(p["delta"]["succeeded"] for p in per)
    bad_rolls = sum(p["delta"]["failed"] for p in per)
    failures = sum(sum(failed(p["steady"])) + sum(failed(p["during"])) for p in per)
    print()
    print(f"Over the {len(per)} rounds:")
    print()
    print(f"- p99 during rolls / p99 steady: median **{spread(p99s)}**")
    print(f"- p50 during rolls / p50 steady: median {spread(p50s)}")
    print(f"- requests/s during rolls / steady: median {spread(rpss)}")
    if all_took:
        print(f"- save to new version answering, all {n_saves} saves ({n_saves - len(all_took)} timed out): "
              f"median **{median(all_took):.0f} ms**, min {all_took[0]:.0f} ms, max {all_took[-1]:.0f} ms")
    if all_rolls:
        print(f"- rip-server's own roll (last_roll.duration_ms after each save): median {median(all_rolls):.0f} ms, "
              f"min {all_rolls[0]:.0f}, max {all_rolls[-1]:.0f}")
    print(f"- rolls during phase B (/status): {ok} succeeded, {bad_rolls} failed; non-2xx and errors in all phases: {failures}; "
          f"generation {per[0]['generations'][0]} -> {per[-1]['generations'][1]}; "
          f"worker restarts {per[0]['restarts'][0]} -> {per[-1]['restarts'][1]}")
    steady_cpu = [p["cpu"][0] for p in per], [p["cpu"][1] for p in per]
    rolls_cpu = [p["cpu"][2] for p in per], [p["cpu"][3] for p in per]
    print(f"- CPU (% of one CPU), median over the rounds: steady rip-server {median(steady_cpu[0]):.0f} %, workers "
          f"{median(steady_cpu[1]):.0f} %; during rolls rip-server {median(rolls_cpu[0]):.0f} %, workers {median(rolls_cpu[1]):.0f} %")
    print()
    if p99s:
        print(f"target, p99 during continuous rolls within 2x of steady state: {verdict(median(p99s) <= 2)} "
              f"(median {median(p99s):.2f}, {sum(v <= 2 for v in p99s)} of {len(p99s)} rounds within)")
    if all_took:
        print(f"target, save to new version under 1 s: {verdict(median(all_took) < 1000)} (median {median(all_took):.0f} ms; "
              f"{sum(v < 1000 for v in all_took)} of {n_saves} saves under 1 s)")
    print(f"target, no failed request during rolls: {verdict(failures == 0 and bad_rolls == 0 and len(all_took) == n_saves)} "
          f"({failures} non-2xx or errors, {bad_rolls} failed rolls, {n_saves - len(all_took)} saves that never answered)")
    timeline([p["timeline"] for p in per], [[float(s[1]) for s in p["saves"]] for p in per])
    print()
    print("Each save, by round: ms from the save to the new version answering (rip-server's roll ms in brackets):")
    print()
    for p in per:
        print(f"- round {p['round']}: " + ", ".join(f"{s[3]} ({s[4]})" for s in p["saves"]))


def timeline(paths, saves_at):
    """Responses per second from rip-server's /metrics (sampled every 100 ms),
    by time since the last save, over every round; and busy retries and the
    largest queue depth."""
    width = 0.25
    bins = {}
    retries, depth = 0.0, 0.0
    for path, save_at in zip(paths, saves_at):
        with open(path, encoding="utf-8") as f:
            rows = [[float(x) for x in line.split("\t")] for line in f.read().splitlines()[1:] if line.strip()]
        if len(rows) < 2 or not save_at:
            continue
        for (t0, n0, *_), (t1, n1, *_) in zip(rows, rows[1:]):
            mid = (t0 + t1) / 2
            before = [a for a in save_at if a <= mid]
            key = "before the first save" if not before else int((mid - before[-1]) / width)
            spent, done = bins.get(key, (0.0, 0.0))
            bins[key] = (spent + t1 - t0, done + n1 - n0)
        retries += rows[-1][2] - rows[0][2]
        depth = max(depth, max(r[3] for r in rows))
    if not bins:
        return
    print()
    print("responses/s from rip-server's /metrics (every 100 ms), by time since the last save, all rounds:")
    print()
    print("| since the last save | responses/s | sampled s |")
    print("|---|---:|---:|")
    for key in ["before the first save"] + sorted(k for k in bins if k != "before the first save"):
        if key in bins and bins[key][0] >= 0.5:  # leave out slivers (the load may have ended)
            spent, done = bins[key]
            label = key if isinstance(key, str) else f"{key * width:.2f}-{(key + 1) * width:.2f} s"
            print(f"| {label} | {done / spent:,.0f} | {spent:.1f} |")
    print()
    print(f"busy retries during the timelines: {retries:.0f}; largest queue depth sampled: {depth:.0f}")


# issue 13's targets for benches/js.sh: the loader against the faster bare server of its
# runtime, and rip-server in front against the loader direct (requests/s ratios)
JS_LOADER_TARGET = 0.8
JS_THROUGH_TARGET = 0.7


def jstable(path):
    """benches/js.sh's results: per runtime, the bare servers, the loader run directly and
    rip-server in front of it; each ratio is taken within a round, then the median (and
    range) over the rounds."""
    rows = read_results(path, with_test=True)
    rounds = max((r["round"] for r in rows), default=0)
    by = {}
    for r in rows:
        by.setdefault((r["test"], r["name"], r["conc"]), {})[r["round"]] = r
    print(f"Each row: the median over its {rounds} round(s). Direct rows: W oha, each -c 1 on one "
          "process's socket (requests/s summed). CPU µs/request: the row's own processes (the "
          "servers; for rip-server, it and its workers).")
    print()
    print("| runtime | row | connections | requests/s | p50 ms | p99 ms | CPU µs/request | "
          "machine CPU µs/request (busy %) | non-2xx | errors | other CPU % (max) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (rt, name, conc), runs in by.items():
        rs = list(runs.values())
        busy = max((int(r["busy"]) for r in rs if r["busy"].isdigit()), default="?")
        print(f"| {rt} | {name} | {conc} | {median([r['rps'] for r in rs]):,.0f} | "
              f"{median([r['p50'] for r in rs]):.2f} | {median([r['p99'] for r in rs]):.2f} | "
              f"{fmt(median_or_none([r['cpu_us'] for r in rs]), '.1f')} | {machine_cell(rs)} | "
              f"{sum(r['non2xx'] for r in rs)} | {sum(r['errors'] for r in rs)} | {busy} |")
    print()
    hop_cost(by)
    print("| runtime | ratio (requests/s) | median (range over rounds) | target | verdict |")
    print("|---|---|---:|---:|---|")
    runtimes = list(dict.fromkeys(r["test"] for r in rows))

    def runs_of(rt, name):
        return next((runs for (t, n, c), runs in by.items() if t == rt and n == name), {})

    for rt in runtimes:
        loader = runs_of(rt, "loader")
        bares = [n for n in ("bare-http", "bare-serve") if runs_of(rt, n)]
        ratios = []
        for rnd, lr in loader.items():
            best = max((runs_of(rt, n)[rnd]["rps"] for n in bares if rnd in runs_of(rt, n)), default=0)
            if best:
                ratios.append(lr["rps"] / best)
        what = "loader / bare-http" if bares == ["bare-http"] else f"loader / faster of {' and '.join(bares)}"
        if len(bares) > 1:
            meds = {n: median([r["rps"] for r in runs_of(rt, n).values()]) for n in bares}
            what += f" (faster: {max(meds, key=meds.get)})"
        print(f"| {rt} | {what} | {spread(ratios)} | ≥ {JS_LOADER_TARGET} | "
              f"{verdict(bool(ratios) and median(ratios) >= JS_LOADER_TARGET)} |")
        for (t, name, conc), runs in by.items():
            if t != rt or name != "rip-server":
                continue
            ratios = [r["rps"] / loader[rnd]["rps"] for rnd, r in runs.items() if rnd in loader and loader[rnd]["rps"]]
            print(f"| {rt} | rip-server c={conc} / loader | {spread(ratios)} | ≥ {JS_THROUGH_TARGET} | "
                  f"{verdict(bool(ratios) and median(ratios) >= JS_THROUGH_TARGET)} |")
    print()
    print("| round | runtime | row | connections | requests/s | p99 ms | CPU µs/request | non-2xx | errors | other CPU % |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: r["round"]):
        print(f"| {r['round']} | {r['test']} | {r['name']} | {r['conc']} | {r['rps']:,.0f} | {r['p99']:.2f} | "
              f"{fmt(r['cpu_us'], '.1f')} | {r['non2xx']} | {r['errors']} | {r['busy']} |")


def hop_cost(by):
    """What rip-server's hop costs the machine per answer (through it, less direct to
    the same loader), against what the JS_THROUGH_TARGET leaves it: at a saturated machine
    the rate is the inverse of the CPU per answer, so through/direct = direct/through."""
    for (rt, name, conc), runs in by.items():
        if name != "rip-server":
            continue
        direct = median_or_none([r["machine_us"] for (t, n, c), rs in by.items()
                                 if t == rt and n == "loader" for r in rs.values()])
        through = median_or_none([r["machine_us"] for r in runs.values()])
        if direct is None or through is None:
            continue
        print(f"hop, {rt} c={conc}: the machine spent {through:.1f} µs of CPU per answer through rip-server, "
              f"{direct:.1f} direct to the loader: the hop costs {through - direct:.1f} µs; {JS_THROUGH_TARGET}× "
              f"the direct rate leaves it at most {direct * (1 / JS_THROUGH_TARGET - 1):.1f} µs")
    print()


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
    elif len(argv) == 3 and argv[1] == "jstable":
        jstable(argv[2])
    elif len(argv) == 4 and argv[1] == "rolls":
        rolls(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
