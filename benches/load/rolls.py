#!/usr/bin/env python3
"""The save loop of benches/rolls.sh: saves a new version of the app every
INTERVAL seconds and times how long each takes to answer.

  rolls.py APP_DIR PORT CONTROL_SOCKET SAVES INTERVAL TIMEOUT TIMELINE [save|reload] > saves.tsv

Save i (1..SAVES) writes version v(FIRST_SAVE + i - 1) (FIRST_SAVE from the
environment, default 1, so rounds of benches/rolls.sh keep counting up) and is
due at i*INTERVAL seconds after start, or as soon as the
previous save's version answers if that is later. A save writes
APP_DIR/version.mjs (`export const version = 'vN';`, written in place, as an
editor that does not rename would), then polls `GET /v` on 127.0.0.1:PORT every
10 ms over its own keep-alive connection (this client is not part of the
measured load) until the body is the new version, or TIMEOUT seconds pass.
Then it reads the roll from the control socket's /status.

With `reload` (a control run) nothing is written: each "save" is a POST /reload
to the control socket instead (rip-server's own trigger, no file watcher), and
the new version is the next generation number in the JSON of `GET /` (which the
bundled app and rip-example-worker both answer; APP_DIR is not used).

One TSV line per save, after a header:
  save  at_s  version  ms  roll_ms  generation  polls  poll_failures  went_back
at_s: when the save was made, seconds from the start of this script; ms: from the end of the write to the first answer with the new version ("timeout"
if none); roll_ms: /status last_roll.duration_ms; poll_failures: polls that got
no answer, or not 200; went_back: after the new version answered, the old one
answered again (10 more polls are made to check; must be 0).

Meanwhile a thread reads the control socket's /metrics every 100 ms and writes
TIMELINE (TSV: at_s, responses sent, busy retries, queue depth, workers
booting, generation), from 1 s before the first save to 1 s after the last
save answered.
"""

import http.client
import json
import os
import socket
import sys
import threading
import time


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def status(control):
    conn = UnixHTTPConnection(control)
    try:
        conn.request("GET", "/status")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class Poller:
    def __init__(self, port):
        self.port = port
        self.conn = None

    def get(self, path):
        """The body of GET path, or None on any failure (connection, status)."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            self.conn.request("GET", path)
            response = self.conn.getresponse()
            body = response.read().decode()
            if response.status != 200:
                return None
            return body
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None


def metrics(control):
    conn = UnixHTTPConnection(control)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        values[name] = values.get(name, 0) + float(value)
    return values


def sample(control, start, path, stop):
    with open(path, "w", encoding="utf-8") as out:
        out.write("at_s\tresponses\tbusy_retries\tqueue_depth\tbooting\tgeneration\n")
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                m = metrics(control)
                out.write(
                    f"{time.monotonic() - start:.3f}\t{m.get('rip_requests_total', 0):.0f}\t"
                    f"{m.get('rip_busy_retries_total', 0):.0f}\t{m.get('rip_queue_depth', 0):.0f}\t"
                    f"{m.get('rip_workers_booting', 0):.0f}\t{m.get('rip_generation', 0):.0f}\n"
                )
            except (OSError, ValueError, http.client.HTTPException):
                pass
            next_at += 0.1
            time.sleep(max(0.0, next_at - time.monotonic()))


def write_version(app, version):
    with open(os.path.join(app, "version.mjs"), "w", encoding="utf-8") as f:
        f.write(f"export const version = '{version}';\n")
        f.flush()
        os.fsync(f.fileno())


def reload(control, outcome):
    conn = UnixHTTPConnection(control, timeout=60)
    try:
        conn.request("POST", "/reload")
        outcome.append(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as e:
        outcome.append(str(e))
    finally:
        conn.close()


def generation_of(body):
    try:
        return str(json.loads(body).get("version"))
    except (ValueError, AttributeError):
        return None


def main(argv):
    if len(argv) not in (8, 9) or (len(argv) == 9 and argv[8] not in ("save", "reload")):
        sys.exit(__doc__)
    app, port, control = argv[1], int(argv[2]), argv[3]
    saves, interval, timeout = int(argv[4]), float(argv[5]), float(argv[6])
    mode = argv[8] if len(argv) == 9 else "save"
    first = int(os.environ.get("FIRST_SAVE", "1"))
    poller = Poller(port)
    if mode == "save":
        path, seen = "/v", lambda body: body
    else:
        path, seen = "/", generation_of
        g0 = int(status(control)["generation"])
    reloads = []
    print("save\tat_s\tversion\tms\troll_ms\tgeneration\tpolls\tpoll_failures\twent_back", flush=True)
    start = time.monotonic()
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(control, start, argv[7], stop), daemon=True)
    # the timeline shares this clock; it begins 1 s before the first save
    time.sleep(max(0.0, interval - 1))
    sampler.start()
    for i in range(1, saves + 1):
        due = start + i * interval
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        if mode == "save":
            version = f"v{first + i - 1}"
            write_version(app, version)
        else:
            version = str(g0 + i)
            threading.Thread(target=reload, args=(control, reloads), daemon=True).start()
        saved = time.monotonic()
        at = saved - start
        polls = failures = 0
        took = None
        while time.monotonic() - saved < timeout:
            polls += 1
            body = poller.get(path)
            if body is None:
                failures += 1
            elif seen(body) == version:
                took = (time.monotonic() - saved) * 1000
                break
            time.sleep(0.01)
        went_back = 0
        if took is not None:
            for _ in range(10):
                body = poller.get(path)
                if body is None:
                    failures += 1
                elif seen(body) != version:
                    went_back += 1
                time.sleep(0.01)
        try:
            s = status(control)
            roll_ms = (s.get("last_roll") or {}).get("duration_ms", "?")
            generation = s.get("generation", "?")
        except (OSError, ValueError, http.client.HTTPException):
            roll_ms = generation = "?"
        ms = f"{took:.0f}" if took is not None else "timeout"
        print(f"{i}\t{at:.3f}\t{version}\t{ms}\t{roll_ms}\t{generation}\t{polls}\t{failures}\t{went_back}", flush=True)
    time.sleep(1)
    stop.set()
    sampler.join()
    if any(r != 200 for r in reloads):
        print(f"POST /reload answers: {reloads}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
