//! Who may come in. A [`Gate`] holds a server's credentials, the roles it serves and (on a
//! coordinator) its shard's identity, and decides for every hello whether the connector is
//! admitted: a pure decision ([`Gate::admit`]) over the hello and what TLS proved.
//!
//! In plain mode (no secrets) every role the server serves is admitted, from the same cluster
//! (and, for peers, the same shard). With secrets, coordinators and routers must present a
//! certificate signed by the cluster CA and their role's token; workers, clients and
//! operator tools their role's token. A refusal says what is missing; it is counted
//! (`dtc_auth_failures_total{role}`) and logged through the listener's [`Noise`], at most
//! once a minute per remote address. The accept loop asks the gate; nothing else does.

use super::noise::{Noise, Refused};
use dtc_proto::WireError;
use dtc_proto::credentials::Credentials;
use dtc_proto::message::{Hello, Role, ShardId, Welcome};
use dtc_proto::tls::Tls;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Why a server cannot use its credentials.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// TLS is configured but this node has no certificate to serve it with.
    #[error(
        "this {node} needs the cluster's node certificate and key to serve TLS (node.pem and node.key in --secrets DIR, or --tls-cert and --tls-key)"
    )]
    NoCertificate {
        /// What kind of node.
        node: &'static str,
    },
    /// A non-loopback address without secrets.
    #[error(
        "refusing to serve {what} on {addr} without secrets: anyone who reaches it could act as any role. Make credentials with `dtc secrets init DIR` and start every process with --secrets DIR, or pass --insecure to accept the risk"
    )]
    Exposed {
        /// What would be served.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
}

/// Whether a server may listen on `addr` with `credentials`: a loopback address always,
/// any other only with TLS, or when the operator accepted the risk (`insecure`, which is
/// then logged as a warning).
pub fn check_exposure(
    what: &'static str,
    addr: SocketAddr,
    credentials: &Credentials,
    insecure: bool,
) -> Result<(), GateError> {
    if addr.ip().is_loopback() || credentials.is_secure() {
        return Ok(());
    }
    if insecure {
        tracing::warn!(%addr, what, "serving without secrets on a non-loopback address (--insecure): anyone who reaches it can act as any role");
        return Ok(());
    }
    Err(GateError::Exposed { what, addr })
}

/// A server's admission rule.
pub struct Gate {
    credentials: Arc<Credentials>,
    /// Whether credentials are checked (the node serves TLS).
    secure: bool,
    node: &'static str,
    roles: &'static [Role],
    shard: Option<ShardId>,
    /// Where refusals of this node's listener are counted and logged.
    noise: Noise,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("node", &self.node)
            .field("secure", &self.secure)
            .field("roles", &self.roles)
            .field("shard", &self.shard)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// The gate of a `node` (`"coordinator"`, `"router"`) serving `roles`; a coordinator
    /// names its `shard`, whose replicas alone it admits as peers.
    pub fn new(
        credentials: Arc<Credentials>,
        node: &'static str,
        roles: &'static [Role],
        shard: Option<ShardId>,
    ) -> Result<Self, GateError> {
        if credentials.tls.as_ref().is_some_and(|t| !t.is_member()) {
            return Err(GateError::NoCertificate { node });
        }
        Ok(Self {
            secure: credentials.is_secure(),
            credentials,
            node,
            roles,
            shard,
            noise: Noise::new(node),
        })
    }

    /// A plain gate admitting every role of the default cluster, for tests and tools.
    pub fn plain(node: &'static str, roles: &'static [Role]) -> Self {
        Self {
            credentials: Arc::new(Credentials::plain()),
            secure: false,
            node,
            roles,
            shard: None,
            noise: Noise::new(node),
        }
    }

    /// Where the listener counts and logs the connections it refuses.
    pub fn noise(&self) -> &Noise {
        &self.noise
    }

    /// What this node answers an admitted hello with: its name, cluster and shard.
    pub fn welcome(&self, node: &str) -> Welcome {
        Welcome::new(node, self.credentials.cluster.clone(), self.shard)
    }

    /// The node's TLS, when it serves TLS.
    pub fn tls(&self) -> Option<&Tls> {
        self.credentials.tls.as_ref()
    }

    /// Whether `hello` is admitted; `member` says whether the connection presented a
    /// certificate signed by the cluster CA. The refusal says what is missing.
    pub fn admit(&self, hello: &Hello, member: bool) -> Result<(), WireError> {
        let refuse = |reason: String| Err(WireError::Auth { reason });
        let role = hello.role;
        if !self.roles.contains(&role) {
            let served: Vec<&str> = self.roles.iter().map(|r| r.name()).collect();
            return refuse(format!(
                "role not served here: a {} serves {}, not {role}s",
                self.node,
                served.join(", ")
            ));
        }
        if hello.cluster != self.credentials.cluster {
            return refuse(format!(
                "wrong cluster: this {} does not serve cluster {:?} (--cluster)",
                self.node, hello.cluster
            ));
        }
        if role == Role::Peer && hello.shard != self.shard {
            let theirs = hello
                .shard
                .map_or_else(|| "none".to_owned(), |s| s.to_string());
            return refuse(format!(
                "wrong shard: this replica is not of shard {theirs}; a coordinator of another shard is not a peer"
            ));
        }
        if !self.secure {
            return Ok(());
        }
        if matches!(role, Role::Peer | Role::Router) && !member {
            return refuse(format!(
                "authentication required: the {role} role needs a certificate signed by the cluster CA (--secrets DIR, or --tls-cert and --tls-key)"
            ));
        }
        let Some(presented) = &hello.token else {
            return refuse(format!(
                "authentication required: the {role} role needs its token (--secrets DIR, or --token-file FILE)"
            ));
        };
        match self.credentials.tokens.get(role) {
            Some(expected) if expected.matches(presented) => Ok(()),
            Some(_) => refuse(format!("role not allowed for this credential ({role})")),
            None => refuse(format!(
                "role not allowed for this credential: this {} has no {role} token configured",
                self.node
            )),
        }
    }

    /// Records a connection refused for its credentials: counts it by role, and logs it
    /// through the listener's throttle.
    pub fn refused(&self, remote: IpAddr, role: Option<Role>, reason: &str) {
        let label = role.map_or("unknown", Role::name);
        metrics::counter!("dtc_auth_failures_total", "role" => label).increment(1);
        self.noise.refused(remote, Refused::Auth, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtc_proto::token::{RoleTokens, Token};

    const ALL: &[Role] = &Role::ALL;

    fn tokens() -> RoleTokens {
        RoleTokens {
            peer: Some(Token::new("p")),
            router: Some(Token::new("r")),
            worker: Some(Token::new("w")),
            client: Some(Token::new("c")),
            admin: None,
        }
    }

    /// A gate that checks credentials as a TLS server's does: the decision needs no TLS
    /// material, `member` stands for what the TLS handshake proved.
    fn secure_gate(shard: ShardId) -> Gate {
        let credentials = Credentials {
            cluster: "prod".into(),
            tls: None,
            tokens: tokens(),
        };
        Gate {
            credentials: Arc::new(credentials),
            secure: true,
            node: "coordinator",
            roles: ALL,
            shard: Some(shard),
            noise: Noise::new("coordinator"),
        }
    }

    fn hello(role: Role, cluster: &str, token: Option<&str>) -> Hello {
        let mut h = Hello::new(role, "t");
        h.cluster = cluster.into();
        h.token = token.map(Token::new);
        h
    }

    fn reason(r: Result<(), WireError>) -> String {
        match r {
            Ok(()) => "admitted".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_mode_admits_the_served_roles_of_its_cluster_and_shard() {
        let gate = Gate::plain("router", &[Role::Client, Role::Admin]);
        assert!(gate.admit(&Hello::new(Role::Client, "c"), false).is_ok());
        assert!(reason(gate.admit(&Hello::new(Role::Worker, "w"), false)).contains("not served"));
        assert!(reason(gate.admit(&hello(Role::Client, "other", None), false)).contains("cluster"));
        let coordinator = Gate {
            shard: Some(ShardId(7)),
            ..Gate::plain("coordinator", ALL)
        };
        let peer = Hello::new(Role::Peer, "p").of_shard(ShardId(7));
        assert!(coordinator.admit(&peer, false).is_ok());
        let stranger = Hello::new(Role::Peer, "p").of_shard(ShardId(8));
        assert!(reason(coordinator.admit(&stranger, false)).contains("another shard"));
    }

    #[test]
    fn secure_mode_wants_each_roles_own_credential() {
        let shard = ShardId(1);
        let gate = secure_gate(shard);
        let secure = |g: &Gate, h: &Hello, member: bool| reason(g.admit(h, member));
        assert_eq!(
            secure(&gate, &hello(Role::Worker, "prod", Some("w")), false),
            "admitted"
        );
        assert!(
            secure(&gate, &hello(Role::Worker, "prod", None), false)
                .starts_with("authentication required")
        );
        assert!(
            secure(&gate, &hello(Role::Worker, "prod", Some("c")), false)
                .starts_with("role not allowed for this credential")
        );
        assert!(
            secure(&gate, &hello(Role::Client, "prod", Some("w")), false)
                .starts_with("role not allowed for this credential")
        );
        let peer = |token| hello(Role::Peer, "prod", token).of_shard(shard);
        assert!(secure(&gate, &peer(Some("p")), false).contains("certificate"));
        assert_eq!(secure(&gate, &peer(Some("p")), true), "admitted");
        assert!(secure(&gate, &peer(Some("w")), true).starts_with("role not allowed"));
        assert!(
            secure(&gate, &hello(Role::Router, "prod", Some("r")), false).contains("certificate")
        );
        assert_eq!(
            secure(&gate, &hello(Role::Router, "prod", Some("r")), true),
            "admitted"
        );
        assert!(
            secure(&gate, &hello(Role::Admin, "prod", Some("a")), false)
                .contains("no admin token configured")
        );
        assert!(
            secure(&gate, &hello(Role::Client, "dev", Some("c")), false).contains("wrong cluster")
        );
    }
}
