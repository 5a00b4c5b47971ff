#!/usr/bin/env python3
"""Turn what eval-module.sh printed (JSON) into files for the guest, and decide a switch.

  materialise.py stage --eval EVAL.json --config NAME --overlay DIR --unit UNIT
                       --binary TARGET/release/rip-server --root-files ROOT.files
      Writes every store path the evaluation names into DIR/nix/store:
        * files{} entries (config files, scripts) with their text; TOML that the stub left as
          JSON (pkgs.formats.toml is not rendered offline) is rendered as TOML here;
        * the module's package (options.package, else the store path of .../bin/rip-server in
          ExecStart): bin/rip-server is the release binary built from this checkout;
        * any other package (a stub: coreutils, bash, nodejs, ...): bin, sbin, lib, libexec,
          share -> the Debian system's /usr, etc -> /etc;
      and checks that every path a unit or file names exists in the guest (overlay or root
      image), failing with the path and what to do otherwise. The units, their target links,
      /etc entries, users and tmpfiles rules go to DIR/rip-vm/configs/NAME/ for
      guest/activate.sh, which installs them (at image time for the boot configuration, in the
      guest for a switch).

  materialise.py plan --old OLD.json --new NEW.json --unit UNIT
      Prints (shell assignments) what NixOS' switch-to-configuration would do to go from the
      old units to the new ones: the same unit comparison (a change of X-Reload-Triggers
      alone means reload; Description and friends are ignored; anything else restarts) and
      the same handling of a changed service (X-ReloadIfChanged, X-RestartIfChanged,
      X-StopIfChanged, socket activation). Every old unit is taken as active, as it is when
      the driver switches. Ported from nixpkgs' switch-to-configuration-ng (compare_units,
      handle_modified_unit).
"""
import argparse
import json
import os
import re
import shutil
import sys

STORE_RE = re.compile(r"(/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+)((?:/[A-Za-z0-9+._?=@%,-]+)*)")
STUB_LINKS = {"bin": "/usr/bin", "sbin": "/usr/sbin", "lib": "/usr/lib", "libexec": "/usr/libexec",
              "share": "/usr/share", "etc": "/etc"}


def die(msg):
    sys.stderr.write("materialise.py: error: %s\n" % msg)
    sys.exit(1)


# ---------------------------------------------------------------------------------------------
# TOML (the stub writes formats.toml files as the JSON of the value)

def toml_key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def toml_value(v, where):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x, where) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (toml_key(k), toml_value(x, where)) for k, x in v.items()) + " }"
    die("%s: a null has no TOML form" % where)


def to_toml(obj, prefix=()):
    out = []
    scalars = [(k, v) for k, v in obj.items() if not isinstance(v, dict)
               and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))]
    tables = [(k, v) for k, v in obj.items() if isinstance(v, dict)]
    arrays = [(k, v) for k, v in obj.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    for k, v in scalars:
        out.append("%s = %s" % (toml_key(k), toml_value(v, ".".join(prefix + (k,)))))
    for k, v in tables:
        path = prefix + (k,)
        out.append("")
        out.append("[%s]" % ".".join(toml_key(p) for p in path))
        out.append(to_toml(v, path))
    for k, items in arrays:
        path = prefix + (k,)
        for item in items:
            out.append("")
            out.append("[[%s]]" % ".".join(toml_key(p) for p in path))
            out.append(to_toml(item, path))
    return "\n".join(x for x in out if x is not None).strip("\n") + ("\n" if not prefix else "")


# ---------------------------------------------------------------------------------------------
# stage

class Stager:
    def __init__(self, args):
        self.args = args
        self.overlay = args.overlay
        with open(args.eval) as f:
            self.ev = json.load(f)
        self.unit = args.unit
        self.written = set()   # guest paths this run writes
        self.referenced = {}   # full guest path -> where it was named
        with open(args.root_files) as f:
            self.root_paths = set(line.split(" -> ")[0] for line in f.read().splitlines())

    def host(self, guest_path):
        return os.path.join(self.overlay, guest_path.lstrip("/"))

    def write(self, guest_path, data, mode):
        p = self.host(guest_path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.unlink(p)
        with open(p, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(p, mode)
        self.written.add(guest_path)

    def symlink(self, guest_path, target):
        p = self.host(guest_path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            if os.path.islink(p) and os.readlink(p) == target:
                return
            die("%s exists already and is not the link to %s" % (guest_path, target))
        os.symlink(target, p)
        self.written.add(guest_path)

    def scan(self, text, where):
        for m in STORE_RE.finditer(text or ""):
            self.referenced.setdefault(m.group(1) + m.group(2), where)

    def units(self):
        ev, u = self.ev, self.unit
        if ev.get("failedAssertions"):
            die("the evaluation has failed assertions: %s" % "; ".join(ev["failedAssertions"]))
        if not ev.get("service"):
            die("the evaluation has no systemd.services.%s (is services.%s.enable set?)" % (u, u))
        if any(ev.get("timers") or {}):
            die("the evaluation defines timers (%s); the runner cannot install timer units yet"
                % ", ".join(ev["timers"]))
        units = [(u + ".service", ev["service"])]
        if ev.get("socket"):
            units.append((u + ".socket", ev["socket"]))
        for name, s in sorted((ev.get("otherServices") or {}).items()):
            units.append((name + ".service", s))
        for name, s in sorted((ev.get("otherSockets") or {}).items()):
            units.append((name + ".socket", s))
        return units

    def package_path(self):
        pkg = (self.ev.get("options") or {}).get("package")
        if isinstance(pkg, str) and pkg.startswith("/nix/store/"):
            return pkg
        m = re.search(r"(/nix/store/[0-9a-z]{32}-[^/\"' ]+)/bin/rip-server\b", self.ev["service"].get("ExecStart") or "")
        if m:
            return m.group(1)
        die("cannot tell the rip-server package's store path: no options.package and no "
            ".../bin/rip-server in ExecStart")

    def file_output(self, path, f):
        """Writes one files{} entry; returns the guest paths it provides."""
        kind, name, text = f.get("kind", ""), f.get("name", ""), f.get("text", "")
        if kind.startswith("formats.toml"):
            try:
                value = json.loads(text)
            except ValueError:
                die("%s (%s): expected the JSON the stub writes for formats.toml" % (path, name))
            self.write(path, to_toml(value), 0o444)
        elif kind in ("writeShellScript", "writeScript"):
            self.write(path, text, 0o555)
        elif kind in ("writeScriptBin", "writeShellScriptBin", "writeShellApplication"):
            self.write("%s/bin/%s" % (path, name), text, 0o555)
        elif kind.startswith("writeTextFile("):
            self.write(path + kind[len("writeTextFile("):-1], text, 0o444)
        elif kind.startswith("writeTextDir("):
            self.write(path + "/" + kind[len("writeTextDir("):-1].lstrip("/"), text, 0o444)
        elif kind in ("writeText", "writeTextFile", "formats.json", "formats.yaml (as JSON)",
                      "formats.ini", "formats.keyValue"):
            self.write(path, text, 0o444)
        else:
            die("%s (%s): files{} kind %r cannot be materialised (only written text files, "
                "scripts and pkgs.formats outputs can); extend materialise.py" % (path, name, kind))

    def stage(self):
        a, ev = self.args, self.ev
        cfgdir = "/rip-vm/configs/" + a.config
        units = self.units()
        files = ev.get("files") or {}
        package = self.package_path()

        for name, u in units:
            self.scan(u.get("unitText"), "unit " + name)
        for path, f in files.items():
            self.scan(f.get("text"), "file %s (%s)" % (path, f.get("name")))
        for target, e in (ev.get("etc") or {}).items():
            self.scan(e.get("source"), "environment.etc.%s" % target)
        for rule in (ev.get("tmpfiles") or {}).get("rules") or []:
            self.scan(rule, "tmpfiles rule")
        self.scan(json.dumps(ev.get("options")), "options")

        roots = {}
        for full in self.referenced:
            m = STORE_RE.match(full)
            roots.setdefault(m.group(1), []).append(full)
        for path in files:
            roots.setdefault(path, [])
        for root in sorted(roots):
            if root in files:
                self.file_output(root, files[root])
            elif root == package:
                bindir = os.path.dirname(os.path.abspath(a.binary))
                wanted = {"/bin/rip-server"} | {p[len(root):] for p in roots[root] if p != root}
                for sub in sorted(wanted):
                    src = os.path.join(bindir, os.path.basename(sub)) if sub.startswith("/bin/") else None
                    if not src or not os.path.isfile(src):
                        die("%s names %s%s, which this checkout's build does not provide "
                            "(only %s/bin/* from %s)" % (self.referenced.get(root + sub, "the evaluation"),
                                                         root, sub, root, bindir))
                    with open(src, "rb") as f:
                        self.write(root + sub, f.read(), 0o555)
            else:
                for d, target in STUB_LINKS.items():
                    self.symlink("%s/%s" % (root, d), target)

        # every named path must exist in the guest
        missing = []
        for full, where in sorted(self.referenced.items()):
            guest = full
            root = STORE_RE.match(full).group(1)
            if root not in files and root != package:
                sub = full[len(root):].lstrip("/")
                if not sub:
                    continue
                top, _, rest = sub.partition("/")
                guest = STUB_LINKS[top] + ("/" + rest if rest else "") if top in STUB_LINKS else None
                if guest is None:
                    missing.append("%s (named by %s): a stub package's /%s has no Debian counterpart"
                                   % (full, where, top))
                    continue
            if guest in self.written or self.exists_in_root(guest):
                continue
            if any(w.startswith(guest + "/") for w in self.written):
                continue
            missing.append("%s (named by %s) -> %s is not in the guest: add the Debian package "
                           "that provides it to IMAGE_PACKAGES in vm-tests/local/image.sh"
                           % (full, where, guest))
        if missing:
            die("paths the evaluation names are missing in the guest:\n  " + "\n  ".join(missing))

        # the configuration: units, links, /etc, users, tmpfiles
        for name, u in units:
            self.write("%s/units/%s" % (cfgdir, name), u["unitText"], 0o444)
        links = []
        for name, u in units:
            for t in u.get("wantedBy") or []:
                links.append("wants %s %s" % (t, name))
            for t in u.get("requiredBy") or []:
                links.append("requires %s %s" % (t, name))
        self.write(cfgdir + "/links", "".join(l + "\n" for l in links), 0o444)
        etc = []
        for key, e in sorted((ev.get("etc") or {}).items()):
            target, source = e.get("target") or key, e.get("source")
            if not source or source == "<undefined>":
                die("environment.etc.%s has no source the runner can place" % key)
            if e.get("mode", "symlink") == "symlink":
                etc.append("symlink %s %s" % (target, source))
            else:
                etc.append("copy %s %s %s %s %s" % (target, source, e["mode"], e.get("user", "+0"), e.get("group", "+0")))
        self.write(cfgdir + "/etc", "".join(l + "\n" for l in etc), 0o444)
        self.write(cfgdir + "/sysusers.conf", self.sysusers(), 0o444)
        self.write(cfgdir + "/tmpfiles.conf", self.tmpfiles(), 0o444)
        shutil.copyfile(a.eval, self.host(cfgdir + "/eval.json"))
        svc = ev["service"]
        sc = svc.get("serviceConfig") or {}
        self.write(cfgdir + "/info",
                   "type=%s\nexec_start=%s\npackage=%s\n" % (sc.get("Type", "simple"), svc.get("ExecStart"), package),
                   0o444)

    def exists_in_root(self, path):
        # merged /usr: /bin, /sbin, /lib* are links into /usr in the root image
        for alias in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
            if path.startswith(alias):
                path = "/usr" + path
                break
        return path in self.root_paths

    def sysusers(self):
        lines = []
        for name, g in sorted((self.ev.get("groups") or {}).items()):
            lines.append("g %s %s" % (name, g.get("gid") or "-"))
        for name, u in sorted((self.ev.get("users") or {}).items()):
            uid = u.get("uid")
            group = u.get("group") or name
            idspec = ("%s:%s" % (uid, group)) if uid else ("-:%s" % group)
            home = u.get("home") or "/var/empty"
            lines.append('u %s %s "%s" %s' % (name, idspec, (u.get("description") or name).replace('"', ""), home))
        return "".join(l + "\n" for l in lines)

    def tmpfiles(self):
        tf = self.ev.get("tmpfiles") or {}
        lines = list(tf.get("rules") or [])
        for _, entries in sorted((tf.get("settings") or {}).items()):
            for path, types in sorted(entries.items()):
                for typ, o in sorted(types.items()):
                    lines.append(" ".join(str(x) if x not in (None, "") else "-" for x in (
                        typ, path, o.get("mode"), o.get("user"), o.get("group"), o.get("age"), o.get("argument"))))
        return "".join(l + "\n" for l in lines)


# ---------------------------------------------------------------------------------------------
# plan (switch-to-configuration's decision)

UNIT_SECTION_IGNORES = {"X-Reload-Triggers", "Description", "Documentation", "OnFailure", "OnSuccess",
                        "OnFailureJobMode", "IgnoreOnIsolate", "StopWhenUnneeded", "RefuseManualStart",
                        "RefuseManualStop", "AllowIsolate", "CollectMode", "SourcePath"}


def parse_unit(text):
    data, section = {}, None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section is None or section == "Install" or "=" not in line:
            continue
        key, val = (x.strip() for x in line.split("=", 1))
        sec = data.setdefault(section, {})
        if val == "":
            sec[key] = []
        else:
            sec.setdefault(key, []).append(val)
    return data


def compare_units(cur, new):
    """'equal', 'reload' or 'restart', as switch-to-configuration-ng's compare_units."""
    ret = "equal"
    new_sections = set(new)
    for sname, sval in cur.items():
        if sname not in new_sections:
            if sname == "Unit" and all(k in UNIT_SECTION_IGNORES for k in sval):
                continue
            return "restart"
        new_sections.discard(sname)
        new_keys = set(new[sname])
        for key, cval in sval.items():
            new_keys.discard(key)
            if key not in new[sname]:
                if sname == "Unit" and key in UNIT_SECTION_IGNORES:
                    continue
                return "restart"
            if cval != new[sname][key]:
                if sname == "Unit":
                    if key == "X-Reload-Triggers":
                        ret = "reload"
                        continue
                    if key in UNIT_SECTION_IGNORES:
                        continue
                if sname == "Mount" and key == "Options":
                    ret = "reload"
                    continue
                return "restart"
        if new_keys:
            if sname != "Unit":
                return "restart"
            for key in new_keys:
                if key == "X-Reload-Triggers":
                    ret = "reload"
                elif key not in UNIT_SECTION_IGNORES:
                    return "restart"
    if new_sections:
        if new_sections == {"Unit"}:
            for key in new["Unit"]:
                if key not in UNIT_SECTION_IGNORES:
                    return "restart"
                if key == "X-Reload-Triggers":
                    ret = "reload"
        else:
            return "restart"
    return ret


def unit_texts(ev, unit):
    out = {}
    if ev.get("service"):
        out[unit + ".service"] = ev["service"]["unitText"]
    if ev.get("socket"):
        out[unit + ".socket"] = ev["socket"]["unitText"]
    for n, s in (ev.get("otherServices") or {}).items():
        out[n + ".service"] = s["unitText"]
    for n, s in (ev.get("otherSockets") or {}).items():
        out[n + ".socket"] = s["unitText"]
    return out


def sbool(info, section, key, default):
    vals = (info.get(section) or {}).get(key)
    if not vals:
        return default
    return vals[-1] in ("1", "yes", "true", "on")


def plan(args):
    with open(args.old) as f:
        old = unit_texts(json.load(f), args.unit)
    with open(args.new) as f:
        new = unit_texts(json.load(f), args.unit)
    active = set(old)  # every unit of the old configuration is active when the driver switches
    stop, start, reload, restart, skip, decisions = [], [], [], [], [], []

    def add(lst, u):
        if u not in lst:
            lst.append(u)

    for u in sorted(old):
        if u not in new:
            add(stop, u)  # X-StopOnRemoval defaults to true
            decisions.append("%s=removed" % u)
            continue
        cur_i, new_i = parse_unit(old[u]), parse_unit(new[u])
        cmp = compare_units(cur_i, new_i)
        decisions.append("%s=%s" % (u, cmp))
        if cmp == "reload":
            if u not in restart:
                add(reload, u)
        elif cmp == "restart":
            if u.endswith(".socket"):
                continue  # switch-to-configuration leaves changed sockets alone (nixpkgs#74899)
            if sbool(new_i, "Service", "X-ReloadIfChanged", False) and u not in restart and u not in stop:
                add(reload, u)
            elif (not sbool(new_i, "Service", "X-RestartIfChanged", True)
                  or sbool(new_i, "Unit", "RefuseManualStop", False)
                  or sbool(new_i, "Unit", "X-OnlyManualStart", False)):
                add(skip, u)
            elif not sbool(new_i, "Service", "X-StopIfChanged", True) or not u.endswith(".service"):
                add(restart, u)
                if u in reload:
                    reload.remove(u)
            else:
                base = u[: -len(".service")]
                sockets = " ".join((new_i.get("Service") or {}).get("Sockets") or []).split() or [base + ".socket"]
                socket_activated = False
                for s in sockets:
                    if s in active:
                        add(stop, s)
                        if s in new:
                            add(start, s)
                            socket_activated = True
                        if u in reload:
                            reload.remove(u)
                if sbool(new_i, "Service", "X-NotSocketActivated", False):
                    socket_activated = False
                if not socket_activated:
                    add(start, u)
                add(stop, u)
                if u in reload:
                    reload.remove(u)
    for u in sorted(new):
        if u not in old:
            decisions.append("%s=new" % u)
    # switch-to-configuration starts every active target afterwards, which starts new units
    targets = ["multi-user.target"] + (["sockets.target"] if any(u.endswith(".socket") for u in new) else [])
    for t in targets:
        add(start, t)

    def arr(name, xs):
        return "%s=(%s)" % (name, " ".join(xs))

    print(arr("PLAN_STOP", stop))
    print(arr("PLAN_RELOAD", reload))
    print(arr("PLAN_RESTART", restart))
    print(arr("PLAN_START", start))
    print(arr("PLAN_SKIP", skip))
    print('PLAN_DECISIONS="%s"' % " ".join(decisions))
    main_unit = args.unit + ".service"
    action = ("restart" if main_unit in restart or main_unit in stop else
              "reload" if main_unit in reload else "skip" if main_unit in skip else "none")
    print("PLAN_ACTION=%s" % action)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--eval", required=True)
    s.add_argument("--config", required=True)
    s.add_argument("--overlay", required=True)
    s.add_argument("--unit", required=True)
    s.add_argument("--binary", required=True)
    s.add_argument("--root-files", required=True)
    q = sub.add_parser("plan")
    q.add_argument("--old", required=True)
    q.add_argument("--new", required=True)
    q.add_argument("--unit", required=True)
    t = sub.add_parser("toml")
    t.add_argument("json")
    args = p.parse_args()
    if args.cmd == "stage":
        Stager(args).stage()
    elif args.cmd == "plan":
        plan(args)
    else:
        with open(args.json) as f:
            sys.stdout.write(to_toml(json.load(f)))


if __name__ == "__main__":
    main()
