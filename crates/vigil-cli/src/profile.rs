//! A profile: where the server is, how to trust it, and the API token; and,
//! for information, the tenant and role the token was issued for.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vigil_proto::v1::Role;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `https://host:port` of the server.
    pub endpoint: String,
    /// CA certificate that signed the server's certificate (PEM file).
    pub ca_file: PathBuf,
    /// Name to verify in the server certificate.
    pub server_name: String,
    /// Bearer API token: the operator's, or one scoped to a tenant.
    pub token: String,
    /// The tenant the token belongs to (informational; empty for the operator).
    #[serde(default)]
    pub tenant: String,
}

/// A profile file as written: a [`Profile`] and, optionally, `role`.
///
/// The role is kept beside `Profile` rather than in it so that code building
/// a `Profile` field by field (`vigil up`) does not change; a file without
/// `role` (every `analyst.toml` written so far) loads as before.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    endpoint: String,
    ca_file: PathBuf,
    server_name: String,
    token: String,
    #[serde(default)]
    tenant: String,
    /// `operator`, `admin`, `analyst`, `auditor` or `read-only` (informational:
    /// the server decides from the token; the command line uses it only to
    /// choose which call to make, as `vigil access list` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
}

/// A loaded profile file: the connection, and the role it names (if any).
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    pub role: Option<Role>,
}

/// Reads a profile file; errors name the file and the field.
pub fn load(path: &Path) -> Result<LoadedProfile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading profile {}", path.display()))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<LoadedProfile> {
    let f: ProfileFile =
        toml::from_str(text).with_context(|| format!("parsing profile {}", path.display()))?;
    if !f.endpoint.starts_with("https://") {
        anyhow::bail!(
            "{}: field `endpoint` must start with https://",
            path.display()
        );
    }
    let role = f
        .role
        .as_deref()
        .map(crate::role::parse)
        .transpose()
        .with_context(|| format!("{}: field `role`", path.display()))?;
    Ok(LoadedProfile {
        profile: Profile {
            endpoint: f.endpoint,
            ca_file: f.ca_file,
            server_name: f.server_name,
            token: f.token,
            tenant: f.tenant,
        },
        role,
    })
}

impl Profile {
    /// Reads a profile file, leaving out its role (see [`load`]).
    pub fn load(path: &Path) -> Result<Profile> {
        Ok(load(path)?.profile)
    }

    /// Writes the profile, naming the token's role (`operator`, `admin`, …)
    /// when given, readable by its owner only: it holds a secret.
    pub fn save_as(&self, path: &Path, role: Option<&str>) -> Result<()> {
        use std::io::Write;
        let text = toml::to_string(&ProfileFile {
            endpoint: self.endpoint.clone(),
            ca_file: self.ca_file.clone(),
            server_name: self.server_name.clone(),
            token: self.token.clone(),
            tenant: self.tenant.clone(),
            role: role.map(str::to_owned),
        })?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(())
    }

    pub async fn channel(&self) -> Result<Channel> {
        let ca = std::fs::read_to_string(&self.ca_file)
            .with_context(|| format!("reading CA certificate {}", self.ca_file.display()))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name(self.server_name.clone());
        Channel::from_shared(self.endpoint.clone())?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANALYST: &str = r#"endpoint = "https://127.0.0.1:4443"
ca_file = "/d/server/ca.pem"
server_name = "localhost"
token = "vgl_secret"
tenant = "local"
"#;

    #[test]
    fn a_profile_without_role_loads_as_before() {
        let p = parse(Path::new("analyst.toml"), ANALYST).unwrap();
        assert_eq!(p.role, None);
        assert_eq!(p.profile.endpoint, "https://127.0.0.1:4443");
        assert_eq!(p.profile.token, "vgl_secret");
        assert_eq!(p.profile.tenant, "local");
    }

    #[test]
    fn a_saved_profile_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("analyst.toml");
        let p = parse(Path::new("x"), ANALYST).unwrap().profile;
        p.save_as(&path, None).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.profile.token, p.token);
        assert_eq!(back.role, None);
        p.save_as(&path, Some("operator")).unwrap();
        assert_eq!(load(&path).unwrap().role, Some(Role::Operator));
    }

    #[test]
    fn the_role_is_read_in_any_documented_spelling() {
        for (written, role) in [
            ("operator", Role::Operator),
            ("admin", Role::Admin),
            ("read-only", Role::ReadOnly),
            ("read_only", Role::ReadOnly),
        ] {
            let text = format!("{ANALYST}role = \"{written}\"\n");
            assert_eq!(parse(Path::new("p.toml"), &text).unwrap().role, Some(role));
        }
    }

    #[test]
    fn a_bad_role_names_file_and_field() {
        let text = format!("{ANALYST}role = \"root\"\n");
        let e = format!("{:#}", parse(Path::new("p.toml"), &text).unwrap_err());
        assert!(e.contains("p.toml: field `role`"), "{e}");
        assert!(e.contains("unknown role `root`"), "{e}");
    }

    #[test]
    fn unknown_fields_are_still_refused() {
        let text = format!("{ANALYST}rol = \"admin\"\n");
        let e = format!("{:#}", parse(Path::new("p.toml"), &text).unwrap_err());
        assert!(e.contains("unknown field `rol`"), "{e}");
    }
}
