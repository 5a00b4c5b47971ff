#!/usr/bin/env python3
"""The soak driver for benches/soak.sh: faults under load, and what they cost.

For DURATION seconds, against a running rip-server (its port, control socket,
PID and JSON log are given):
  - load: CONNECTIONS keep-alive connections, each sending GET /ping back to
    back; every answer other than `200 pong` is a failure, recorded with its
    time and kind (status, reset, timeout);
  - a rolling restart every ROLL_EVERY seconds (POST /reload on the control
    socket; its answer says whether the roll succeeded);
  - a random live worker SIGKILLed every KILL_EVERY seconds (picked from
    /status; its id and pid are recorded);
  - SLOW slow clients: half upload a large body one byte a second, half open a
    connection and never speak; each is recorded with how long the server kept
    it and what it answered;
  - every SAMPLE_EVERY seconds: rip-server's resident memory and open fds.
At the end the server's access log attributes failures: a 5xx that the log
shows came from a worker this script killed is "held by a killed worker"
(expected: the worker died holding that request); any other failure is
unexplained. The verdict passes when no failure is unexplained, every roll
succeeded, and memory and fds stay flat (second half's peak within 25% +
4 MiB of the first half's, fds within 16).

Stdlib only; traffic stays on 127.0.0.1 and the control socket; it stops by
itself after DURATION (+ a few seconds to finish in-flight requests).
"""

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time

REQUEST = b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n"
ANSWER_TIMEOUT = 10.0


class Tally:
    def __init__(self):
        self.ok = 0
        self.failures = []  # (t, kind)
        self.rolls = []  # (t, ok, detail)
        self.kills = []  # (t, worker_id, pid)
        self.slow = []  # (t, kind, held_s, outcome)
        self.samples = []  # (t, rss_kib, fds, workers)


async def read_answer(reader):
    """One HTTP/1.1 answer with a Content-Length body: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    body = await reader.readexactly(length) if length else b""
    return status, body


async def load_connection(args, tally, start, stop_at):
    writer = None
    while time.monotonic() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            writer.write(REQUEST)
            status, body = await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT)
            if status == 200 and body == b"pong":
                tally.ok += 1
                continue
            tally.failures.append((time.monotonic() - start, f"status {status}"))
            writer.close()
            writer = None
        except asyncio.TimeoutError:
            tally.failures.append((time.monotonic() - start, "timeout"))
            writer.close()
            writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            tally.failures.append((time.monotonic() - start, f"{type(e).__name__}"))
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def control(args, method, path):
    """An HTTP/1.0 exchange on the control socket: (status, JSON body)."""
    reader, writer = await asyncio.open_unix_connection(args.ctl)
    writer.write(f"{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n".encode())
    raw = await asyncio.wait_for(reader.read(), 120)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body or b"null")


async def every(seconds, stop_at, action):
    while True:
        await asyncio.sleep(seconds)
        if time.monotonic() >= stop_at:
            return
        await action()


async def roll(args, tally, start):
    try:
        status, body = await control(args, "POST", "/reload")
        tally.rolls.append((time.monotonic() - start, status == 200, json.dumps(body)[:200]))
    except (OSError, ValueError, IndexError, asyncio.TimeoutError) as e:
        tally.rolls.append((time.monotonic() - start, False, repr(e)))


async def kill_one(args, tally, start, rng):
    try:
        _, status = await control(args, "GET", "/status")
    except (OSError, ValueError, IndexError, asyncio.TimeoutError):
        return
    live = [w for w in status.get("workers", []) if w.get("state") not in ("stopping", "exited")]
    if not live:
        return
    victim = rng.choice(live)
    try:
        os.kill(victim["pid"], signal.SIGKILL)
        tally.kills.append((time.monotonic() - start, victim["id"], victim["pid"]))
    except ProcessLookupError:
        pass


async def slow_client(args, tally, start, stop_at, uploads):
    """Loops: one slow connection, held as long as the server allows."""
    while time.monotonic() < stop_at:
        opened = time.monotonic()
        kind = "slow-upload" if uploads else "silent"
        outcome = "held to the end of the soak"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
            if uploads:
                writer.write(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n")
            got = asyncio.ensure_future(reader.read(4096))
            while not got.done() and time.monotonic() < stop_at:
                if uploads:
                    writer.write(b"x")
                await asyncio.wait([got], timeout=1.0)
            if got.done():
                data = got.result() if not got.exception() else b""
                first = data.split(b"\r\n", 1)[0].decode("latin-1")
                outcome = first or "closed without an answer"
            else:
                got.cancel()
            writer.close()
        except OSError as e:
            outcome = type(e).__name__
        tally.slow.append((opened - start, kind, time.monotonic() - opened, outcome))


def proc_sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def sample(args, tally, start):
    try:
        rss, fds = proc_sample(args.rip_pid)
    except OSError:
        return
    try:
        _, status = await control(args, "GET", "/status")
        workers = len(status.get("workers", []))
    except (OSError, ValueError, IndexError, asyncio.TimeoutError):
        workers = -1
    tally.samples.append((time.monotonic() - start, rss, fds, workers))


def held_by_killed(log_path, killed_ids):
    """Access-log 5xx answers whose worker this script killed."""
    held = 0
    with open(log_path, errors="replace") as f:
        for line in f:
            if '"access"' not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("target") == "access" and rec.get("status", 0) >= 500 and rec.get("worker") in killed_ids:
                held += 1
    return held


def flat(values, slack):
    half = len(values) // 2
    if half == 0:
        return True
    return max(values[half:]) <= max(values[:half]) * 1.25 + slack


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ctl", required=True)
    p.add_argument("--rip-pid", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--roll-every", type=float, default=20)
    p.add_argument("--kill-every", type=float, default=7)
    p.add_argument("--slow", type=int, default=2)
    p.add_argument("--sample-every", type=float, default=10)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()

    tally = Tally()
    rng = random.Random(args.seed)
    start = time.monotonic()
    stop_at = start + args.duration
    await sample(args, tally, start)
    tasks = [load_connection(args, tally, start, stop_at) for _ in range(args.connections)]
    tasks += [slow_client(args, tally, start, stop_at, uploads=i % 2 == 0) for i in range(args.slow)]
    tasks.append(every(args.roll_every, stop_at, lambda: roll(args, tally, start)))
    tasks.append(every(args.kill_every, stop_at, lambda: kill_one(args, tally, start, rng)))
    tasks.append(every(args.sample_every, stop_at, lambda: sample(args, tally, start)))
    await asyncio.gather(*tasks)
    await sample(args, tally, start)
    report(args, tally)


def report(args, tally):
    killed_ids = {k[1] for k in tally.kills}
    held = held_by_killed(args.log, killed_ids)
    failures = len(tally.failures)
    unexplained = max(failures - held, 0)
    rolls_ok = sum(1 for r in tally.rolls if r[1])
    print(f"# soak: {args.duration:.0f}s, {args.connections} connections, roll every {args.roll_every:g}s, "
          f"SIGKILL a worker every {args.kill_every:g}s, {args.slow} slow clients")
    print(f"requests: {tally.ok + failures} ({tally.ok / max(args.duration, 1):.0f}/s), ok {tally.ok}, failed {failures}")
    print(f"rolls: {len(tally.rolls)}, succeeded {rolls_ok}")
    for t, ok, detail in tally.rolls:
        if not ok:
            print(f"  roll at {t:.1f}s failed: {detail}")
    print(f"workers killed: {len(tally.kills)}; requests they held (access log, 5xx from a killed worker): {held}")
    for t, wid, pid in tally.kills:
        print(f"  {t:7.1f}s  worker {wid} (pid {pid})")
    print(f"failures not explained by a kill: {unexplained}")
    for t, kind in tally.failures[:50]:
        print(f"  {t:7.1f}s  {kind}")
    if failures > 50:
        print(f"  ... and {failures - 50} more")
    closed = [s for s in tally.slow if s[3] != "held to the end of the soak"]
    print(f"slow clients: {len(tally.slow)} connections, {len(closed)} cut off by the server")
    for kind in ("slow-upload", "silent"):
        mine = [s for s in closed if s[1] == kind]
        if mine:
            outcomes = sorted({s[3] for s in mine})
            print(f"  {kind}: held {min(s[2] for s in mine):.1f}-{max(s[2] for s in mine):.1f}s, answered: {'; '.join(outcomes)}")
    print("time_s  rss_mib  fds  workers")
    for t, rss, fds, workers in tally.samples:
        print(f"{t:6.0f}  {rss / 1024:7.1f}  {fds:3d}  {workers:7d}")
    rss = [s[1] for s in tally.samples]
    fds = [s[2] for s in tally.samples]
    rss_flat = flat(rss, 4096)
    fds_flat = not fds or max(fds[len(fds) // 2:]) <= max(fds[: max(len(fds) // 2, 1)]) + 16
    problems = []
    if unexplained:
        problems.append(f"{unexplained} failures not explained by a kill")
    if rolls_ok != len(tally.rolls):
        problems.append(f"{len(tally.rolls) - rolls_ok} rolls failed")
    if not tally.rolls:
        problems.append("no roll happened")
    if not tally.kills:
        problems.append("no worker was killed")
    if not rss_flat:
        problems.append("rip-server's memory grew")
    if not fds_flat:
        problems.append("rip-server's open fds grew")
    if tally.ok == 0:
        problems.append("no request succeeded")
    verdict = "pass" if not problems else "FAIL (" + "; ".join(problems) + ")"
    print(f"SOAK verdict={verdict.split(' ')[0].lower()} requests={tally.ok + failures} failed={failures} "
          f"held_by_killed={held} unexplained={unexplained} rolls={len(tally.rolls)} kills={len(tally.kills)}")
    print(f"verdict: {verdict}")
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    asyncio.run(main())
