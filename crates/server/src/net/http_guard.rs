//! Who may do what over HTTP (the router's API and dashboard, `/metrics`): a pure decision
//! per request ([`HttpGuard::judge`]) and the middleware that applies it before any handler
//! reads a body.
//!
//! - **Host**: a plain (no secrets) listener on loopback answers only requests addressed to
//!   a loopback name, so that a web page cannot reach it by rebinding its own DNS name to
//!   127.0.0.1.
//! - **Origin**: a request that changes something (anything but GET and HEAD) from a
//!   browser must come from the API's own origin: another site's page cannot submit or
//!   cancel tasks through the user's browser.
//! - **Content-Type**: a POST must say `application/json` (a plain HTML form cannot).
//! - **Tokens**, with secrets: `Authorization: Bearer <token>`: the client token for the
//!   task endpoints, the admin token (read-only) for lookups, the cluster's status and
//!   `/metrics`. The dashboard page itself needs none; it asks for a token.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dtc_proto::credentials::Credentials;
use dtc_proto::message::Role;
use dtc_proto::token::Token;
use std::sync::Arc;

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Nothing: the dashboard page.
    Nothing,
    /// Reading tasks: the client or the admin token.
    Read,
    /// Submitting or cancelling tasks: the client token.
    Write,
    /// The cluster's status or metrics: the admin token.
    Admin,
    /// Changing a schedule: the cluster's member certificate, which HTTP does not carry
    /// (refused when secrets are on).
    Member,
}

/// Why a request is refused: its status, an error code and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short code for programs.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

/// The rules of one HTTP listener.
#[derive(Clone, Debug)]
pub struct HttpGuard {
    credentials: Arc<Credentials>,
    /// Tokens are checked (the listener serves TLS).
    secure: bool,
    /// Only requests addressed to a loopback host name are answered.
    loopback_host_only: bool,
}

impl HttpGuard {
    /// The rules for a listener with `credentials`; `loopback` says whether it listens on a
    /// loopback address.
    pub fn new(credentials: Arc<Credentials>, loopback: bool) -> Self {
        let secure = credentials.is_secure();
        Self {
            credentials,
            secure,
            loopback_host_only: loopback && !secure,
        }
    }

    /// Whether the request may go on to its handler.
    pub fn judge(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let refuse = |status, code, message: String| {
            Err(Refusal {
                status,
                code,
                message,
            })
        };
        let host = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if self.loopback_host_only && !is_loopback_host(host) {
            return refuse(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "this API answers requests for 127.0.0.1, [::1] or localhost, not {host:?} (a page cannot reach it by rebinding its DNS name)"
                ),
            );
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        if changes
            && let Some(origin) = headers.get(ORIGIN)
            && authority_of(origin.to_str().unwrap_or("")) != Some(host)
        {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross_origin",
                format!(
                    "cross-origin requests are refused: a page from {origin:?} cannot change tasks here"
                ),
            );
        }
        if *method == Method::POST {
            let json = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
                });
            if !json {
                return refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as JSON with Content-Type: application/json".into(),
                );
            }
        }
        if !self.secure {
            return Ok(());
        }
        let need = need(method, path);
        if need == Need::Nothing {
            return Ok(());
        }
        if need == Need::Member {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "changing a schedule needs the cluster's member certificate, which HTTP does not carry: use dtc schedule … --secrets DIR on a member's machine".into(),
            );
        }
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| Token::new(t.trim()));
        let Some(presented) = presented else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication required: send Authorization: Bearer <token> (the client token for tasks, the admin token for the cluster's status)".into(),
            );
        };
        let is = |role| {
            self.credentials
                .tokens
                .get(role)
                .is_some_and(|t| t.matches(&presented))
        };
        let role = if is(Role::Client) {
            Role::Client
        } else if is(Role::Admin) {
            Role::Admin
        } else {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication failed: the token is not this cluster's client or admin token"
                    .into(),
            );
        };
        let allowed = match need {
            Need::Nothing => true,
            Need::Read => true,
            Need::Write => role == Role::Client,
            Need::Admin => role == Role::Admin,
            Need::Member => false,
        };
        if allowed {
            Ok(())
        } else {
            refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "role not allowed for this credential: the {role} token cannot {}",
                    match need {
                        Need::Write => "submit or cancel tasks (use the client token)",
                        _ => "read the cluster's status or metrics (use the admin token)",
                    }
                ),
            )
        }
    }
}

fn need(method: &Method, path: &str) -> Need {
    match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => Need::Nothing,
        (_, "/v1/cluster" | "/v1/queues" | "/metrics") => Need::Admin,
        (&Method::GET | &Method::HEAD, "/v1/schedules") => Need::Admin,
        (_, p) if p.starts_with("/v1/schedules") => Need::Member,
        (&Method::GET | &Method::HEAD, _) => Need::Read,
        _ => Need::Write,
    }
}

/// `host[:port]` of an origin such as `https://example.com:8080`.
fn authority_of(origin: &str) -> Option<&str> {
    origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
}

/// Whether a Host header names this machine's loopback: `localhost`, `127.x.y.z` or
/// `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: refuses what the guard refuses, as `{"error":{"code","message"}}`.
pub async fn guard(State(guard): State<HttpGuard>, req: Request, next: Next) -> Response {
    match guard.judge(req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
            let body = serde_json::json!({
                "error": { "code": refusal.code, "message": refusal.message }
            });
            let mut response = (refusal.status, axum::Json(body)).into_response();
            if unauthorized {
                response
                    .headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtc_proto::token::RoleTokens;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(*k, v);
            }
        }
        h
    }

    fn status(r: Result<(), Refusal>) -> u16 {
        r.map_or_else(|e| e.status.as_u16(), |()| 200)
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn a_plain_loopback_api_answers_loopback_names_same_origin_json_only() {
        let g = HttpGuard::new(Arc::new(Credentials::plain()), true);
        let post = Method::POST;
        let ok = headers(&[("host", "127.0.0.1:8080"), JSON]);
        assert_eq!(status(g.judge(&post, "/v1/tasks", &ok)), 200);
        for host in ["localhost:8080", "[::1]:8080", "127.0.0.1"] {
            let h = headers(&[("host", host), JSON]);
            assert_eq!(status(g.judge(&post, "/v1/tasks", &h)), 200, "{host}");
        }
        let rebound = headers(&[("host", "evil.example:8080"), JSON]);
        assert_eq!(status(g.judge(&Method::GET, "/v1/cluster", &rebound)), 403);
        let form = headers(&[
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/x-www-form-urlencoded"),
        ]);
        assert_eq!(status(g.judge(&post, "/v1/tasks", &form)), 415);
        let none = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(status(g.judge(&post, "/v1/tasks", &none)), 415);
        let cross = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
            JSON,
        ]);
        assert_eq!(status(g.judge(&post, "/v1/tasks", &cross)), 403);
        assert_eq!(status(g.judge(&Method::DELETE, "/v1/tasks/x", &cross)), 403);
        let same = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            JSON,
        ]);
        assert_eq!(status(g.judge(&post, "/v1/tasks", &same)), 200);
        // A cross-origin read is the browser's business (no CORS headers are sent).
        assert_eq!(status(g.judge(&Method::GET, "/v1/cluster", &cross)), 200);
    }

    #[test]
    fn with_secrets_each_endpoint_wants_its_token() {
        let tokens = RoleTokens {
            client: Some(Token::new("client-t")),
            admin: Some(Token::new("admin-t")),
            worker: Some(Token::new("worker-t")),
            ..RoleTokens::default()
        };
        let mut credentials = Credentials::plain();
        credentials.tokens = tokens;
        // As a listener with secrets judges: the token rules need no TLS material.
        let g = HttpGuard {
            credentials: Arc::new(credentials),
            secure: true,
            loopback_host_only: false,
        };
        let judge = |m: &Method, path: &str, h: &HeaderMap| status(g.judge(m, path, h));
        let with = |token: &str| {
            headers(&[
                ("host", "10.1.2.3:8080"),
                ("authorization", &format!("Bearer {token}")),
                JSON,
            ])
        };
        let anonymous = headers(&[("host", "10.1.2.3:8080"), JSON]);
        assert_eq!(judge(&Method::GET, "/", &anonymous), 200);
        assert_eq!(judge(&Method::POST, "/v1/tasks", &anonymous), 401);
        assert_eq!(judge(&Method::POST, "/v1/tasks", &with("worker-t")), 401);
        assert_eq!(judge(&Method::POST, "/v1/tasks", &with("client-t")), 200);
        assert_eq!(judge(&Method::POST, "/v1/tasks", &with("admin-t")), 403);
        assert_eq!(judge(&Method::GET, "/v1/tasks/x", &with("admin-t")), 200);
        assert_eq!(judge(&Method::DELETE, "/v1/tasks/x", &with("admin-t")), 403);
        assert_eq!(judge(&Method::GET, "/v1/cluster", &with("admin-t")), 200);
        assert_eq!(judge(&Method::GET, "/v1/cluster", &with("client-t")), 403);
        assert_eq!(judge(&Method::GET, "/metrics", &with("client-t")), 403);
        assert_eq!(judge(&Method::GET, "/metrics", &with("admin-t")), 200);
    }
}
