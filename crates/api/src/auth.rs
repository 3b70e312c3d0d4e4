//! Bearer-token auth with upstream's 401 bodies.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hypedeck_secrets::Sensitive;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Stores a new token where the next start will find it (the keychain); `Err` is a sentence.
pub type PersistToken = Arc<dyn Fn(&Sensitive<String>) -> Result<(), String> + Send + Sync>;

/// The token the API accepts, shared by every clone; [`ApiToken::rotate`] replaces it for all
/// of them at once. `Debug` never prints it.
#[derive(Clone)]
pub struct ApiToken {
    current: Arc<ArcSwap<Sensitive<String>>>,
    persist: Option<PersistToken>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("token", &"<redacted>")
            .field("persisted", &self.persist.is_some())
            .finish()
    }
}

impl ApiToken {
    /// Wraps a token (rotations are not persisted; see [`ApiToken::persisted_with`]).
    pub fn new(token: Sensitive<String>) -> Self {
        ApiToken {
            current: Arc::new(ArcSwap::from_pointee(token)),
            persist: None,
        }
    }

    /// Rotations are stored with `persist` before they take effect.
    pub fn persisted_with(mut self, persist: PersistToken) -> Self {
        self.persist = Some(persist);
        self
    }

    /// The token, for handing to a trusted local client (the desktop UI, `hypedeck token`).
    pub fn expose(&self) -> String {
        self.current.load().expose().clone()
    }

    /// Replaces the token with a fresh one: stored first (a failure changes nothing), then in
    /// effect for every request that arrives after this returns. Returns the new token.
    pub fn rotate(&self) -> Result<Sensitive<String>, String> {
        let fresh = generate_token().map_err(|_| "the OS random source failed".to_string())?;
        if let Some(persist) = &self.persist {
            persist(&fresh)?;
        }
        self.current.store(Arc::new(fresh.clone()));
        Ok(fresh)
    }

    fn matches(&self, presented: &str) -> bool {
        let current = self.current.load();
        let expected = current.expose().as_bytes();
        expected.len() == presented.len() && bool::from(expected.ct_eq(presented.as_bytes()))
    }
}

/// A fresh random token: `hdk_` and 64 hex digits (256 bits).
pub fn generate_token() -> Result<Sensitive<String>, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let mut token = String::from("hdk_");
    for b in bytes {
        token.push_str(&format!("{b:02x}"));
    }
    Ok(Sensitive::new(token))
}

/// The WebSocket subprotocol prefix that carries the token for clients that cannot set
/// headers (browsers): `Sec-WebSocket-Protocol: bearer.<token>` (Hypedeck extension).
pub const WS_TOKEN_PROTOCOL: &str = "bearer.";

/// Whether a WebSocket upgrade offers the token as a subprotocol.
fn offers_token(request: &Request, token: &ApiToken) -> bool {
    request
        .headers()
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix(WS_TOKEN_PROTOCOL))
        .any(|presented| token.matches(presented))
}

/// Rejects requests without the right `Authorization: Bearer <token>` (or, for a WebSocket
/// upgrade, the token offered as the `bearer.<token>` subprotocol).
pub async fn require_token(
    State(token): State<ApiToken>,
    request: Request,
    next: Next,
) -> Response {
    let failure = |reason: &str| {
        ApiError::unauthorized(format!("security requirements failed: {reason}")).into_response()
    };
    let Some(header) = request.headers().get(AUTHORIZATION) else {
        if offers_token(&request, &token) {
            return next.run(request).await;
        }
        return failure("authorization header required");
    };
    let Ok(header) = header.to_str() else {
        return failure("invalid authorization header format");
    };
    let Some((scheme, presented)) = header.split_once(' ') else {
        return failure("invalid authorization header format");
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return failure("invalid authorization header format");
    }
    if !token.matches(presented) {
        return failure("invalid token");
    }
    next.run(request).await
}
