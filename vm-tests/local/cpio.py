#!/usr/bin/env python3
"""Write a newc ("SVR4 with no CRC") cpio archive, the format the Linux kernel unpacks as an
initramfs, from a tar archive or from a directory. No root needed: owners, modes and device
numbers come from the tar headers (for a tar) or are forced to root (for a directory).

    cpio.py from-tar ROOT.tar OUT.cpio [--list FILES.txt]
    cpio.py from-dir DIR OUT.cpio

--list writes every path of the archive (one per line, '/'-rooted, symlinks as 'path -> target')
so the runner can check, without unpacking, that a path a unit names exists in the guest.
The kernel accepts several archives concatenated; a later entry replaces an earlier one, which
is how the per-run overlay lands on top of the cached root.
"""
import os
import stat
import sys
import tarfile

TRAILER = "TRAILER!!!"


class Writer:
    def __init__(self, out):
        self.out = out
        self.ino = 1
        self.pos = 0

    def _pad(self):
        pad = (-self.pos) % 4
        if pad:
            self.out.write(b"\0" * pad)
            self.pos += pad

    def entry(self, name, mode, uid=0, gid=0, mtime=0, data=b"", rdev=(0, 0), nlink=1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(
            "%08X" % v
            for v in (
                self.ino, mode, uid, gid, nlink, int(mtime) & 0xFFFFFFFF, len(data),
                0, 0, rdev[0], rdev[1], len(name_b), 0,
            )
        )
        self.ino += 1
        self.out.write(hdr.encode())
        self.out.write(name_b)
        self.pos += len(hdr) + len(name_b)
        self._pad()
        if data:
            self.out.write(data)
            self.pos += len(data)
            self._pad()

    def close(self):
        self.entry(TRAILER, 0)
        pad = (-self.pos) % 512
        self.out.write(b"\0" * pad)


def from_tar(tar_path, out_path, list_path=None):
    listing = []
    with tarfile.open(tar_path) as tar, open(out_path, "wb") as out:
        w = Writer(out)
        members = {}
        for m in tar:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/")
            if not name or name == ".":
                continue
            perm = m.mode & 0o7777
            if m.isdir():
                w.entry(name, stat.S_IFDIR | perm, m.uid, m.gid, m.mtime, nlink=2)
            elif m.issym():
                w.entry(name, stat.S_IFLNK | 0o777, m.uid, m.gid, m.mtime, m.linkname.encode())
                listing.append("/%s -> %s" % (name, m.linkname))
                continue
            elif m.islnk():
                # A hard link: write the target's content again (the kernel does not need the
                # link, and a copy keeps the archive free of nlink bookkeeping).
                target = members.get(m.linkname.lstrip("./").rstrip("/"))
                if target is None:
                    raise SystemExit("cpio.py: hard link %s -> %s: target not seen" % (name, m.linkname))
                data = tar.extractfile(target).read()
                w.entry(name, stat.S_IFREG | (target.mode & 0o7777), target.uid, target.gid, target.mtime, data)
            elif m.isreg():
                members[name] = m
                data = tar.extractfile(m).read()
                w.entry(name, stat.S_IFREG | perm, m.uid, m.gid, m.mtime, data)
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                w.entry(name, kind | perm, m.uid, m.gid, m.mtime, rdev=(m.devmajor, m.devminor))
            elif m.isfifo():
                w.entry(name, stat.S_IFIFO | perm, m.uid, m.gid, m.mtime)
            else:
                raise SystemExit("cpio.py: %s: unsupported tar member type %r" % (name, m.type))
            listing.append("/" + name)
        w.close()
    if list_path:
        with open(list_path, "w") as f:
            f.write("\n".join(sorted(listing)) + "\n")


def from_dir(root, out_path):
    with open(out_path, "wb") as out:
        w = Writer(out)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            entries = [] if rel_dir == "." else [(rel_dir, dirpath)]
            entries += [(os.path.normpath(os.path.join(rel_dir, f)), os.path.join(dirpath, f)) for f in sorted(filenames)]
            # symlinks to directories show up in dirnames and are not walked: add them as links
            entries += [
                (os.path.normpath(os.path.join(rel_dir, d)), os.path.join(dirpath, d))
                for d in dirnames if os.path.islink(os.path.join(dirpath, d))
            ]
            for rel, full in entries:
                st = os.lstat(full)
                perm = stat.S_IMODE(st.st_mode)
                if stat.S_ISLNK(st.st_mode):
                    w.entry(rel, stat.S_IFLNK | 0o777, data=os.readlink(full).encode())
                elif stat.S_ISDIR(st.st_mode):
                    w.entry(rel, stat.S_IFDIR | perm, nlink=2)
                elif stat.S_ISREG(st.st_mode):
                    with open(full, "rb") as f:
                        w.entry(rel, stat.S_IFREG | perm, data=f.read())
                else:
                    raise SystemExit("cpio.py: %s: only files, directories and symlinks belong in an overlay" % full)
        w.close()


def main(argv):
    if len(argv) >= 3 and argv[0] == "from-tar":
        list_path = None
        if len(argv) == 5 and argv[3] == "--list":
            list_path = argv[4]
        elif len(argv) != 3:
            raise SystemExit(__doc__)
        from_tar(argv[1], argv[2], list_path)
    elif len(argv) == 3 and argv[0] == "from-dir":
        from_dir(argv[1], argv[2])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
