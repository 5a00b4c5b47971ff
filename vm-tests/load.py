# Helpers shared by the VM tests' scripts (prepended to each testScript).
import json
import time


def start_load(client, url, seconds, connections=16):
    """Runs oha against url in the background, as the transient unit oha-load."""
    help_text = client.succeed("oha --help")
    json_flag = "--output-format json" if "--output-format" in help_text else "--json"
    client.succeed(
        "systemd-run --unit=oha-load --remain-after-exit sh -c "
        f"'oha -z {seconds}s -c {connections} --no-tui {json_flag} {url} > /tmp/oha.json'"
    )


def assert_still_loading(client):
    """The steps so far happened under load: oha is still running."""
    client.succeed("systemctl show -P SubState oha-load | grep -qx running")


def finish_load(client, min_requests):
    """Waits for oha, then fails on any error or any non-2xx answer."""
    client.wait_until_succeeds("systemctl show -P SubState oha-load | grep -qx exited", timeout=300)
    client.succeed("systemctl show -P Result oha-load | grep -qx success")
    report = json.loads(client.succeed("cat /tmp/oha.json"))
    codes = report.get("statusCodeDistribution") or {}
    errors = report.get("errorDistribution") or {}
    total = sum(codes.values())
    print(f"oha: {total} answers {codes}, errors {errors}")
    assert not errors, f"errors under load: {errors}"
    assert codes and all(str(code).startswith("2") for code in codes), f"non-2xx answers under load: {codes}"
    assert total >= min_requests, f"too little load to prove anything: {total} answers"


def wait_for(what, check, timeout=120):
    """Polls check() until it is true, or fails naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
