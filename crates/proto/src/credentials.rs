//! A process's credentials: the cluster it belongs to, its TLS material ([`Tls`]) and its
//! role tokens ([`RoleTokens`]) — read from a secrets directory (`dtc secrets init DIR`
//! writes one) or from files given one by one, for users with their own PKI.
//!
//! Without any of them a process runs in plain mode: no TLS, no tokens, and servers that
//! listen on loopback only. Connectors use [`Credentials::hello`] to introduce themselves;
//! servers check hellos against the same credentials.

use crate::message::{DEFAULT_CLUSTER, Hello, Role};
use crate::tls::{Tls, TlsError, TlsFiles};
use crate::token::RoleTokens;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The cluster CA's certificate, in a secrets directory.
pub const CA_CERT: &str = "ca.pem";
/// The cluster CA's private key (needed only to issue certificates; keep it off the nodes).
pub const CA_KEY: &str = "ca.key";
/// The certificate of the cluster's members (coordinators and routers).
pub const NODE_CERT: &str = "node.pem";
/// The members' private key.
pub const NODE_KEY: &str = "node.key";
/// The cluster's name and one token per role.
pub const SECRETS_FILE: &str = "secrets.toml";
/// The cluster's name and the worker token alone: what a worker's machine needs besides
/// the CA's certificate (`--token-file`).
pub const WORKER_TOKEN_FILE: &str = "worker.toml";
/// The cluster's name and the client token alone: what a client program needs besides the
/// CA's certificate.
pub const CLIENT_TOKEN_FILE: &str = "client.toml";

/// Where to find a process's credentials; each file given overrides the secrets directory's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// A directory made by `dtc secrets init`.
    pub secrets: Option<PathBuf>,
    /// The cluster CA's certificate.
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate (members only).
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (members only).
    pub tls_key: Option<PathBuf>,
    /// A TOML file in the format of `secrets.toml`: an optional `cluster = "…"` and a
    /// `[tokens]` table of tokens by role (`worker = "…"`), holding only the roles this
    /// process needs.
    pub token_file: Option<PathBuf>,
    /// The cluster's name (default: the secrets file's, else `dtc`).
    pub cluster: Option<String>,
    /// The name servers' certificates are checked against, instead of the address dialled.
    pub server_name: Option<String>,
    /// The names a member's certificate must be valid for (any one); empty: any
    /// certificate the CA signed proves membership.
    pub member_names: Vec<String>,
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Tokens or certificates without a CA to make TLS with.
    #[error(
        "tokens and certificates are only sent inside TLS: give the cluster's CA too (--secrets DIR or --tls-ca FILE)"
    )]
    NoCa,
}

/// The shape of `secrets.toml` and of a `--token-file`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    cluster: Option<String>,
    #[serde(default)]
    tokens: RoleTokens,
}

/// Warns when a secret file can be read by users other than its owner (group or other
/// permission bits set): anyone on the machine could then take the role it proves. Not
/// refused, since some deployments mount secrets readable by a group on purpose.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = format!("{mode:o}"),
                    "a secret file can be read by other users; restrict it (chmod 600)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// What a process proves itself with, and to which cluster it belongs.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The cluster's name, sent in every hello and checked by every server.
    pub cluster: String,
    /// TLS, when the process has the cluster's CA.
    pub tls: Option<Tls>,
    /// The tokens of the roles this process acts as (or, on a server, admits).
    pub tokens: RoleTokens,
}

impl Default for Credentials {
    fn default() -> Self {
        Self::plain()
    }
}

impl Credentials {
    /// Plain mode: the default cluster, no TLS, no tokens.
    pub fn plain() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER.to_owned(),
            tls: None,
            tokens: RoleTokens::default(),
        }
    }

    /// Reads what `sources` names. Nothing named: plain mode.
    pub fn load(sources: &CredentialSources) -> Result<Self, CredentialsError> {
        let in_dir = |name: &str| sources.secrets.as_ref().map(|d| d.join(name));
        let existing = |p: Option<PathBuf>| p.filter(|p| p.exists());
        let ca = sources.tls_ca.clone().or_else(|| in_dir(CA_CERT));
        let cert = sources
            .tls_cert
            .clone()
            .or_else(|| existing(in_dir(NODE_CERT)));
        let key = sources
            .tls_key
            .clone()
            .or_else(|| existing(in_dir(NODE_KEY)));
        let token_file = sources
            .token_file
            .clone()
            .or_else(|| existing(in_dir(SECRETS_FILE)));
        for secret in [&key, &token_file].into_iter().flatten() {
            warn_if_shared(secret);
        }
        let file = match &token_file {
            Some(path) => read_secrets_file(path)?,
            None => SecretsFile::default(),
        };
        let tokens = file.tokens;
        let tls = match ca {
            Some(ca) => Some(
                Tls::load(&TlsFiles { ca, cert, key }, sources.server_name.as_deref())?
                    .with_member_names(&sources.member_names)?,
            ),
            None if cert.is_some() || key.is_some() || !tokens.is_empty() => {
                return Err(CredentialsError::NoCa);
            }
            None => None,
        };
        let cluster = sources
            .cluster
            .clone()
            .or(file.cluster)
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_owned());
        Ok(Self {
            cluster,
            tls,
            tokens,
        })
    }

    /// Whether connections use TLS (and tokens).
    pub fn is_secure(&self) -> bool {
        self.tls.is_some()
    }

    /// The hello this process opens a connection with, as `role`.
    pub fn hello(&self, role: Role, name: &str) -> Hello {
        let mut hello = Hello::new(role, name);
        hello.cluster.clone_from(&self.cluster);
        if self.is_secure() {
            hello.token = self.tokens.get(role).cloned();
        }
        hello
    }
}

fn read_secrets_file(path: &Path) -> Result<SecretsFile, CredentialsError> {
    let err = |reason: String| CredentialsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(format!("not a tokens file: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_named_is_plain_and_tokens_without_a_ca_are_refused() -> Result<(), String> {
        let plain = Credentials::load(&CredentialSources::default()).map_err(|e| e.to_string())?;
        assert!(!plain.is_secure());
        assert_eq!(plain.hello(Role::Worker, "w").cluster, DEFAULT_CLUSTER);
        assert!(plain.hello(Role::Worker, "w").token.is_none());
        let dir = std::env::temp_dir().join(format!("dtc-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let file = dir.join("tokens.toml");
        std::fs::write(&file, "cluster = \"prod\"\n[tokens]\nworker = \"w\"\n")
            .map_err(|e| e.to_string())?;
        let no_ca = Credentials::load(&CredentialSources {
            token_file: Some(file.clone()),
            ..CredentialSources::default()
        });
        assert!(matches!(no_ca, Err(CredentialsError::NoCa)));
        let parsed = read_secrets_file(&file).map_err(|e| e.to_string())?;
        assert_eq!(parsed.cluster.as_deref(), Some("prod"));
        std::fs::write(&file, "workers = \"w\"\n").map_err(|e| e.to_string())?;
        assert!(
            read_secrets_file(&file).is_err(),
            "unknown keys are refused"
        );
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
        Ok(())
    }
}
