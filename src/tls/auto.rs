//! Automatic certificates for `--auto-tls` (the default without
//! `--cert`/`--key`): `mkcert` when it is installed (its local CA is trusted
//! by browsers once installed), otherwise a self-signed certificate made with
//! rcgen. `RIP_MKCERT` overrides the lookup: `off` never uses mkcert, a path
//! uses that program (an error if it cannot run), unset or empty looks for
//! `mkcert` on `PATH`. Either certificate is cached in the state directory (`$STATE_DIRECTORY`, else
//! `~/.rip`, under `certs/`, key mode 0600) and reused while it is valid for
//! at least another day and covers every name needed; otherwise it is made
//! anew.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::material::{self, Material, TlsError};

/// Names every automatic certificate covers.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// How long a self-signed certificate is valid.
const VALID_DAYS: i64 = 365;
/// A cached certificate expiring sooner than this is replaced.
const RENEW_MARGIN_SECS: i64 = 86_400;

/// Where automatic certificates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    Mkcert,
    SelfSigned,
}

/// An automatic certificate and where it lives.
pub struct AutoCert {
    pub material: Material,
    pub issuer: Issuer,
    pub cert_path: PathBuf,
    /// Whether it was made now (false: reused from the cache).
    pub fresh: bool,
}

/// The state directory: `$STATE_DIRECTORY` (systemd), else `~/.rip`.
pub fn state_dir() -> PathBuf {
    crate::config::state_dir(&crate::config::ProcessEnv)
}

/// A cached certificate for `names`, or a new one.
pub fn ensure(state_dir: &Path, names: &[String]) -> Result<AutoCert, TlsError> {
    let dir = state_dir.join("certs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| TlsError::StateDir {
            path: dir.clone(),
            message: format!("cannot create it: {e}"),
        })?;
    let mkcert = mkcert_program(std::env::var_os(MKCERT_VAR))?;
    let issuer = if mkcert.is_some() {
        Issuer::Mkcert
    } else {
        Issuer::SelfSigned
    };
    let stem = match issuer {
        Issuer::Mkcert => "mkcert",
        Issuer::SelfSigned => "self-signed",
    };
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    if let Ok(cached) = material::load(&cert_path, &key_path) {
        let covers = names.iter().all(|n| cached.info.covers(n));
        if covers && cached.info.valid_for(RENEW_MARGIN_SECS) {
            return Ok(AutoCert {
                material: cached,
                issuer,
                cert_path,
                fresh: false,
            });
        }
        tracing::info!(
            cert = %cert_path.display(),
            "cached certificate expired or does not cover every name; making a new one"
        );
    }
    match &mkcert {
        Some(program) => run_mkcert(program, &cert_path, &key_path, names)?,
        None => self_signed(&cert_path, &key_path, names)?,
    }
    let material = material::load(&cert_path, &key_path)?;
    Ok(AutoCert {
        material,
        issuer,
        cert_path,
        fresh: true,
    })
}

/// The environment variable that overrides the mkcert lookup.
pub const MKCERT_VAR: &str = "RIP_MKCERT";

/// The mkcert program to use, if any, given `RIP_MKCERT`: `off` means none;
/// a path means that program, which must run; unset or empty means `mkcert`
/// on `PATH` when it is installed.
fn mkcert_program(setting: Option<std::ffi::OsString>) -> Result<Option<PathBuf>, TlsError> {
    let setting = setting.filter(|s| !s.is_empty());
    match setting {
        Some(value) if value == "off" => Ok(None),
        Some(path) => {
            let program = PathBuf::from(path);
            match Command::new(&program).arg("-help").output() {
                Ok(_) => Ok(Some(program)),
                Err(e) => Err(TlsError::Generate(format!(
                    "{MKCERT_VAR}={}: cannot run it: {e} (use {MKCERT_VAR}=off for a self-signed certificate)",
                    program.display()
                ))),
            }
        }
        None => {
            let program = PathBuf::from("mkcert");
            let installed = Command::new(&program).arg("-help").output().is_ok();
            Ok(installed.then_some(program))
        }
    }
}

/// Whether to let mkcert install its local CA into the trust stores.
///
/// A developer running the server as themselves wants browsers to trust the
/// certificate at once, so the CA is installed for them. Run as root (a
/// service, a container), `mkcert -install` would change the whole machine's
/// trust store behind the operator's back: that is theirs to do, by hand.
fn installs_ca(euid_is_root: bool) -> bool {
    !euid_is_root
}

fn run_mkcert(program: &Path, cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    if installs_ca(nix::unistd::geteuid().is_root()) {
        install_ca(program);
    } else {
        tracing::info!(
            "running as root: mkcert's CA was not installed into the system trust store; \
             run `mkcert -install` yourself if clients on this machine should trust it"
        );
    }
    let out = Command::new(program)
        .arg("-cert-file")
        .arg(cert)
        .arg("-key-file")
        .arg(key)
        .args(names)
        .output()
        .map_err(|e| TlsError::Generate(format!("cannot run mkcert: {e}")))?;
    if !out.status.success() {
        return Err(TlsError::Generate(format!(
            "mkcert failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    restrict(key)
}

/// Installs mkcert's local CA into the user's trust stores if needed.
fn install_ca(program: &Path) {
    let install = Command::new(program).arg("-install").output();
    if let Ok(out) = &install {
        if !out.status.success() {
            tracing::warn!(
                output = %String::from_utf8_lossy(&out.stderr).trim(),
                "mkcert -install failed; the certificate will work once its CA is trusted"
            );
        }
    }
}

fn self_signed(cert: &Path, key: &Path, names: &[String]) -> Result<(), TlsError> {
    let fail =
        |e: rcgen::Error| TlsError::Generate(format!("cannot make a self-signed certificate: {e}"));
    let key_pair = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(fail)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "rip-server self-signed");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
    let certificate = params.self_signed(&key_pair).map_err(fail)?;
    write_private(key, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(cert, certificate.pem())
        .map_err(|e| TlsError::Generate(format!("cannot write '{}': {e}", cert.display())))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TlsError::Generate(format!("cannot write '{}': {e}", path.display())))?;
    file.write_all(bytes)
        .map_err(|e| TlsError::Generate(format!("cannot write '{}': {e}", path.display())))
}

fn restrict(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| TlsError::Generate(format!("cannot make '{}' private: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkcert_installs_its_ca_only_for_an_unprivileged_user() {
        assert!(installs_ca(false));
        assert!(!installs_ca(true));
    }

    #[test]
    fn rip_mkcert_turns_the_lookup_off_or_names_the_program() {
        assert_eq!(mkcert_program(Some("off".into())).unwrap(), None);
        let err = mkcert_program(Some("/nonexistent/mkcert".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RIP_MKCERT=/nonexistent/mkcert: cannot run it"),
            "{err}"
        );
        // `true` runs (and ignores -help): a path that runs is used as given.
        let runs = PathBuf::from("/bin/true");
        assert_eq!(
            mkcert_program(Some(runs.clone().into_os_string())).unwrap(),
            Some(runs)
        );
    }
}
