//! Role tokens: the secret a worker, client or operator tool (and, beside its certificate,
//! a router or peer) presents in its [`Hello`](crate::message::Hello), inside TLS.
//!
//! A [`Token`] never prints itself (its `Debug` and `Display` say `Token(…)`), and is
//! compared in constant time. [`RoleTokens`] holds one per role, as `dtc secrets init`
//! writes them into `secrets.toml`; servers keep the tokens of the roles they admit,
//! connectors the tokens of the roles they act as.

use crate::message::Role;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A secret token; never printed, compared in constant time.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl Eq for Token {}

impl Token {
    /// A token with this text.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Whether `other` is this token, compared in constant time (for tokens of one length).
    pub fn matches(&self, other: &Token) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }

    /// The token's text, for writing it to a secrets file or an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// One token per role; a role without one is not configured here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTokens {
    /// Coordinators of one shard, to each other (beside their certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Token>,
    /// Routers, to coordinators (beside their certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<Token>,
    /// Workers, to coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<Token>,
    /// Programs submitting tasks, to routers and coordinators (and the HTTP API's task
    /// endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Token>,
    /// Operator tools, read-only (`dtc status`, `dtc top`, the HTTP API's cluster view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<Token>,
}

impl RoleTokens {
    /// The token of `role`, if configured.
    pub fn get(&self, role: Role) -> Option<&Token> {
        match role {
            Role::Peer => self.peer.as_ref(),
            Role::Router => self.router.as_ref(),
            Role::Worker => self.worker.as_ref(),
            Role::Client => self.client.as_ref(),
            Role::Admin => self.admin.as_ref(),
        }
    }

    /// Whether no role has a token.
    pub fn is_empty(&self) -> bool {
        Role::ALL.iter().all(|r| self.get(*r).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_prints_and_compares_by_value() {
        let t = Token::new("s3cret-value");
        assert_eq!(format!("{t:?} {t}"), "Token(…) Token(…)");
        let tokens = RoleTokens {
            worker: Some(t.clone()),
            ..RoleTokens::default()
        };
        assert!(!format!("{tokens:?}").contains("s3cret"));
        assert!(t.matches(&Token::new(String::from("s3cret-value"))));
        assert!(!t.matches(&Token::new("s3cret-valuf")));
        assert!(!t.matches(&Token::new("s3cret")));
    }

    #[test]
    fn tokens_read_from_toml_by_role() -> Result<(), toml::de::Error> {
        let tokens: RoleTokens = toml::from_str("worker = \"w\"\nadmin = \"a\"\n")?;
        assert!(tokens.get(Role::Worker).is_some_and(|t| t.expose() == "w"));
        assert!(tokens.get(Role::Admin).is_some_and(|t| t.expose() == "a"));
        assert!(tokens.get(Role::Peer).is_none());
        assert!(toml::from_str::<RoleTokens>("wroker = \"w\"").is_err());
        Ok(())
    }
}
