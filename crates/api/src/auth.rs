//! Bearer-token auth with upstream's 401 bodies.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hypedeck_secrets::Sensitive;
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The token the API accepts. `Debug` never prints it.
#[derive(Debug, Clone)]
pub struct ApiToken(Arc<Sensitive<String>>);

impl ApiToken {
    /// Wraps a token.
    pub fn new(token: Sensitive<String>) -> Self {
        ApiToken(Arc::new(token))
    }

    /// The token, for handing to a trusted local client (the desktop UI, `hypedeck token`).
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    fn matches(&self, presented: &str) -> bool {
        let expected = self.0.expose().as_bytes();
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
