//! The cluster's credentials from the command line: `dtc secrets init` makes them (a CA, the
//! members' certificate, one token per role), and every subcommand's [`SecurityArgs`] load
//! them into the [`Credentials`] its components use.

use crate::cli::{SecretsInitArgs, SecurityArgs};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dtc_proto::credentials::{
    CA_CERT, CA_KEY, CLIENT_TOKEN_FILE, CredentialSources, Credentials, NODE_CERT, NODE_KEY,
    SECRETS_FILE, WORKER_TOKEN_FILE,
};
use dtc_proto::message::Role;
use dtc_proto::token::{RoleTokens, Token};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How long the certificates made by `dtc secrets init` are valid.
const VALID_DAYS: i64 = 3650;

impl SecurityArgs {
    /// The credentials these flags name (plain mode when they name none).
    pub fn credentials(&self) -> anyhow::Result<Arc<Credentials>> {
        let sources = CredentialSources {
            secrets: self.secrets.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            token_file: self.token_file.clone(),
            cluster: self.cluster.clone(),
            server_name: self.tls_server_name.clone(),
            member_names: self.tls_member_names.clone(),
        };
        let credentials = Credentials::load(&sources).context("loading the credentials")?;
        Ok(Arc::new(credentials))
    }

    /// Flags naming a secrets directory.
    pub fn from_dir(dir: &Path) -> Self {
        Self {
            secrets: Some(dir.to_path_buf()),
            ..Self::default()
        }
    }
}

/// What `dtc secrets init` wrote.
#[derive(Debug)]
pub struct Made {
    /// The directory.
    pub dir: PathBuf,
    /// The hosts the members' certificate is valid for.
    pub hosts: Vec<String>,
}

/// The files `dtc secrets init` writes.
const MADE_FILES: [&str; 7] = [
    CA_CERT,
    CA_KEY,
    NODE_CERT,
    NODE_KEY,
    SECRETS_FILE,
    WORKER_TOKEN_FILE,
    CLIENT_TOKEN_FILE,
];

/// Makes a cluster's credentials in `args.dir`: refuses to overwrite any of them without
/// `--force`.
pub fn init(args: &SecretsInitArgs) -> anyhow::Result<Made> {
    let dir = &args.dir;
    if !args.force
        && let Some(existing) = MADE_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists())
    {
        anyhow::bail!(
            "{} exists; pass --force to make new credentials (every process then needs them)",
            existing.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let hosts = if args.hosts.is_empty() {
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()]
    } else {
        args.hosts.clone()
    };
    let now = time_now();
    let until = now + time::Duration::days(VALID_DAYS);

    let ca_key = KeyPair::generate().context("making the CA's key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("dtc cluster {} CA", args.cluster),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now;
    ca.not_after = until;
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca, &ca_key);

    let node_key = KeyPair::generate().context("making the members' key")?;
    let mut node = CertificateParams::new(hosts.clone())
        .with_context(|| format!("the hosts {hosts:?} (names or IP addresses)"))?;
    node.distinguished_name.push(
        DnType::CommonName,
        format!("dtc cluster {} member", args.cluster),
    );
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node.not_before = now;
    node.not_after = until;
    let node_cert = node
        .signed_by(&node_key, &issuer)
        .context("signing the members' certificate")?;

    let token = |_: Role| Some(Token::new(random_token()));
    let tokens = RoleTokens {
        peer: token(Role::Peer),
        router: token(Role::Router),
        worker: token(Role::Worker),
        client: token(Role::Client),
        admin: token(Role::Admin),
    };
    let secrets = secrets_toml(&args.cluster, &tokens, &Role::ALL);

    write_private(&dir.join(CA_CERT), &ca_cert.pem())?;
    write_private(&dir.join(CA_KEY), &ca_key.serialize_pem())?;
    write_private(&dir.join(NODE_CERT), &node_cert.pem())?;
    write_private(&dir.join(NODE_KEY), &node_key.serialize_pem())?;
    write_private(&dir.join(SECRETS_FILE), &secrets)?;
    for (file, role) in [
        (WORKER_TOKEN_FILE, Role::Worker),
        (CLIENT_TOKEN_FILE, Role::Client),
    ] {
        write_private(
            &dir.join(file),
            &secrets_toml(&args.cluster, &tokens, &[role]),
        )?;
    }
    Ok(Made {
        dir: dir.clone(),
        hosts,
    })
}

/// A secrets file: the cluster's name and the tokens of `roles` (`secrets.toml` holds every
/// role's; `worker.toml` and `client.toml` one each, for `--token-file`).
fn secrets_toml(cluster: &str, tokens: &RoleTokens, roles: &[Role]) -> String {
    let mut out = String::from(
        "# dtc credentials: the cluster's name and the tokens of the roles a process plays.\n\
         # Give each process only its own (a worker: worker.toml; a client program: client.toml).\n",
    );
    out.push_str(&format!("cluster = {}\n\n[tokens]\n", toml_string(cluster)));
    for &role in roles {
        if let Some(t) = tokens.get(role) {
            out.push_str(&format!("{} = {}\n", role.name(), toml_string(t.expose())));
        }
    }
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// 32 random bytes, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() - time::Duration::hours(1)
}

/// Writes `text` to `path`, readable and writable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_private_files_that_load_and_refuses_to_overwrite() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dtc-secrets-test-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let args = SecretsInitArgs {
            dir: dir.clone(),
            hosts: vec![],
            cluster: "test".into(),
            force: false,
        };
        let made = init(&args)?;
        assert_eq!(made.hosts, ["127.0.0.1", "localhost"]);
        #[cfg(unix)]
        for f in MADE_FILES {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(f))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let creds = SecurityArgs::from_dir(&dir).credentials()?;
        assert!(creds.is_secure());
        assert!(creds.tls.as_ref().is_some_and(|t| t.is_member()));
        assert_eq!(creds.cluster, "test");
        for role in Role::ALL {
            assert!(creds.tokens.get(role).is_some(), "{role}");
        }
        assert_ne!(creds.tokens.worker, creds.tokens.client);
        // A worker's machine gets the CA's certificate and worker.toml: the cluster and its
        // token alone.
        let worker = SecurityArgs {
            tls_ca: Some(dir.join(CA_CERT)),
            token_file: Some(dir.join(WORKER_TOKEN_FILE)),
            ..SecurityArgs::default()
        }
        .credentials()?;
        assert_eq!(worker.cluster, "test");
        assert!(worker.tls.as_ref().is_some_and(|t| !t.is_member()));
        let only: Vec<Role> = Role::ALL
            .into_iter()
            .filter(|r| worker.tokens.get(*r).is_some())
            .collect();
        assert_eq!(only, [Role::Worker]);
        assert_eq!(worker.tokens.worker, creds.tokens.worker);
        let again = init(&args);
        assert!(
            again
                .err()
                .is_some_and(|e| e.to_string().contains("--force"))
        );
        init(&SecretsInitArgs {
            force: true,
            ..args
        })?;
        let renewed = SecurityArgs::from_dir(&dir).credentials()?;
        assert_ne!(renewed.tokens.worker, creds.tokens.worker);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
