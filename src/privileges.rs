//! Who the workers run as, and what the server keeps.
//!
//! Started as root with `--user` (and optionally `--group`), the server
//! binds its ports, then runs every worker as that user and group, and keeps
//! for itself only the capabilities it needs to manage them: `CAP_SETUID`
//! and `CAP_SETGID` (to start workers as the user) and `CAP_KILL` (to signal
//! them); everything else is dropped from its effective, permitted,
//! inheritable and bounding sets. The runtime directory is shared through
//! the group: owned by root, group the workers' group, mode 0770; workers
//! run with umask 007, so their sockets are group-writable and the server,
//! which joins that group, can reach them without `CAP_DAC_OVERRIDE`.
//!
//! Started as root without `--user`, the workers run as root: the server
//! says so loudly at start (under systemd, the NixOS module runs everything
//! as a `DynamicUser` instead).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Group, Uid, User};

/// The user and group workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Uid,
    pub gid: Gid,
    /// As given, for messages.
    pub user: String,
    pub group: String,
}

/// Why `--user` / `--group` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--user '{0}': no such user")]
    NoUser(String),
    #[error("--group '{0}': no such group")]
    NoGroup(String),
    #[error("--group needs --user: workers run as the user, in that group")]
    GroupWithoutUser,
    #[error(
        "--user={0} needs rip-server to start as root (it is running as uid {1}); without \
         --user, workers run as the user that starts the server"
    )]
    NotRoot(String, u32),
    #[error(
        "the runtime directory {dir} is not reachable by user {user}: {ancestor} is not \
         searchable by it. Set RUNTIME_DIRECTORY to a directory it can reach, e.g. \
         RUNTIME_DIRECTORY=/run/rip-server"
    )]
    Unreachable {
        dir: std::path::PathBuf,
        ancestor: std::path::PathBuf,
        user: String,
    },
    #[error("cannot {what}: {detail}")]
    System { what: &'static str, detail: String },
}

impl RunAs {
    /// Resolves `--user` and `--group` (names or numeric ids).
    pub fn resolve(
        user: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<RunAs>, PrivilegeError> {
        let Some(user) = user else {
            return match group {
                Some(_) => Err(PrivilegeError::GroupWithoutUser),
                None => Ok(None),
            };
        };
        let found = match user.parse::<u32>() {
            Ok(uid) => User::from_uid(Uid::from_raw(uid)),
            Err(_) => User::from_name(user),
        }
        .ok()
        .flatten()
        .ok_or_else(|| PrivilegeError::NoUser(user.to_string()))?;
        let (gid, group) = match group {
            None => (found.gid, found.gid.to_string()),
            Some(group) => {
                let g = match group.parse::<u32>() {
                    Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
                    Err(_) => Group::from_name(group),
                }
                .ok()
                .flatten()
                .ok_or_else(|| PrivilegeError::NoGroup(group.to_string()))?;
                (g.gid, group.to_string())
            }
        };
        let me = nix::unistd::geteuid();
        if !me.is_root() && me != found.uid {
            return Err(PrivilegeError::NotRoot(user.to_string(), me.as_raw()));
        }
        Ok(Some(RunAs {
            uid: found.uid,
            gid,
            user: user.to_string(),
            group,
        }))
    }

    /// Whether switching to it changes anything (the server is root).
    pub fn switches(&self) -> bool {
        nix::unistd::geteuid().is_root() && !self.uid.is_root()
    }
}

/// Shares the runtime directory with the workers' group (root-owned, group
/// `run_as.gid`, 0770), after checking they can reach it at all.
pub fn share_runtime_dir(dir: &Path, run_as: &RunAs) -> Result<(), PrivilegeError> {
    reachable(dir, run_as)?;
    nix::unistd::chown(dir, None, Some(run_as.gid)).map_err(|e| PrivilegeError::System {
        what: "give the runtime directory to the workers' group",
        detail: e.to_string(),
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o770)).map_err(|e| {
        PrivilegeError::System {
            what: "make the runtime directory group-shared (0770)",
            detail: e.to_string(),
        }
    })
}

/// Every ancestor of `dir` must be searchable by the user (or its group).
fn reachable(dir: &Path, run_as: &RunAs) -> Result<(), PrivilegeError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.mode();
        let searchable = mode & 0o001 != 0
            || (meta.gid() == run_as.gid.as_raw() && mode & 0o010 != 0)
            || (meta.uid() == run_as.uid.as_raw() && mode & 0o100 != 0);
        if !searchable {
            return Err(PrivilegeError::Unreachable {
                dir: dir.to_path_buf(),
                ancestor: ancestor.to_path_buf(),
                user: run_as.user.clone(),
            });
        }
    }
    Ok(())
}

/// The capabilities the server keeps once its ports are bound.
const KEPT: [Capability; 3] = [
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// Joins the workers' group (to reach their sockets) and drops every
/// capability but [`KEPT`].
pub fn drop_server_privileges(run_as: &RunAs) -> Result<(), PrivilegeError> {
    let fail = |what: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::System {
            what,
            detail: e.to_string(),
        }
    };
    nix::unistd::setgroups(&[run_as.gid]).map_err(|e| PrivilegeError::System {
        what: "join the workers' group",
        detail: e.to_string(),
    })?;
    let kept: CapsHashSet = KEPT.into_iter().collect();
    for cap in caps::all() {
        if !kept.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(fail("drop a bounding capability"))?;
        }
    }
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(fail("clear inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(fail("set effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(fail("set permitted capabilities"))?;
    Ok(())
}

/// The start-up word on who runs what.
pub fn announce(run_as: Option<&RunAs>) {
    match run_as {
        Some(run_as) if run_as.switches() => tracing::info!(
            user = %run_as.user,
            group = %run_as.group,
            "workers run as {}:{}; the server keeps only CAP_SETUID, CAP_SETGID and CAP_KILL",
            run_as.user,
            run_as.group
        ),
        Some(_) => {}
        None if nix::unistd::geteuid().is_root() => tracing::warn!(
            "running as root, so the workers run as root too: pass --user=NAME (and --group) to \
             run them as an unprivileged user"
        ),
        None => {}
    }
}
