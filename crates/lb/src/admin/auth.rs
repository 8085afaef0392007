//! Bearer-token access to the admin API.
//!
//! Without a token the API binds loopback only and relies on the web-page checks of
//! [`switchyard_transport::local_http`]. With a token (`switchyard lb
//! --admin-token-file FILE`) it may bind any address, and every request except the
//! dashboard's static assets must carry `Authorization: Bearer <token>`: a missing or
//! wrong token is 401. A web page on another site cannot send that header without a
//! CORS preflight, which the API never grants, so the `Host` check (DNS rebinding) is not
//! needed in that mode; requests with an `Origin` header other than the API's own
//! (`http://` and the `Host`: the dashboard it served) are still refused.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use switchyard_transport::local_http::{self, RequestHeaders};

/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin API's bearer token. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The file cannot be read.
    #[error("cannot read the admin token file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// Shorter than [`MIN_TOKEN_LEN`] after trimming.
    #[error(
        "the admin token is {len} bytes; at least {MIN_TOKEN_LEN} are needed (e.g. `switchyard gen-secret --out FILE` writes 64 hex digits)"
    )]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Holds a character that cannot travel in an HTTP header token.
    #[error(
        "the admin token may hold only visible ASCII characters (letters, digits, - . _ ~ + / =)"
    )]
    BadCharacter,
}

impl AdminToken {
    /// A token from its text (surrounding whitespace is ignored).
    pub fn new(text: &str) -> Result<Self, TokenError> {
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: token.len() });
        }
        // RFC 6750's b64token characters.
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        {
            return Err(TokenError::BadCharacter);
        }
        Ok(Self(Arc::from(token)))
    }

    /// Reads the token from `path` (the whole file, whitespace trimmed).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::new(&text)
    }

    /// The token's text, for clients that send it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token (`Bearer <token>`, the
    /// scheme in any case). Compares in time independent of where the values differ.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, presented)) = value
            .iter()
            .position(|b| *b == b' ')
            .map(|i| (&value[..i], &value[i + 1..]))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let presented = presented.trim_ascii();
        let expected = self.0.as_bytes();
        if presented.len() != expected.len() {
            return false;
        }
        presented
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Paths served without a token: the dashboard's page, script and style sheet, which
/// hold no data (the page asks for the token and sends it with every API request).
pub(super) fn is_public_asset(path: &str) -> bool {
    matches!(
        path,
        "/" | "/dashboard" | "/dashboard/" | "/dashboard/dashboard.js" | "/dashboard/dashboard.css"
    )
}

/// The token mode's request rules: an `Origin` header other than the API's own (its
/// dashboard) is refused (403), a state-changing request needs the JSON content type
/// (415), and every path but the dashboard's assets needs the token (401).
pub(super) fn check(
    token: &AdminToken,
    request: &axum::extract::Request,
) -> Result<(), (StatusCode, String)> {
    let headers = request.headers();
    let method = request.method().as_str();
    let rules = RequestHeaders {
        // The Host check guards the tokenless loopback mode against DNS rebinding; a
        // rebinding page cannot present the token.
        host: None,
        // The dashboard's own requests (acts are POSTs, which browsers send with an
        // `Origin`) still need the token.
        origin: headers
            .get(header::ORIGIN)
            .map(|v| v.as_bytes())
            .filter(|origin| {
                let host = headers.get(header::HOST).map_or(&b""[..], |v| v.as_bytes());
                !local_http::is_own_origin(origin, host)
            }),
        content_type: headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
    };
    local_http::check(method, rules).map_err(|refusal| {
        (
            StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN),
            refusal.message,
        )
    })?;
    if is_public_asset(request.uri().path()) && matches!(method, "GET" | "HEAD") {
        return Ok(());
    }
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if token.accepts(authorization) {
        return Ok(());
    }
    let message = if authorization.is_none() {
        "this admin API needs Authorization: Bearer <token> (the unit's --admin-token-file); with ctl: --token-file FILE"
    } else {
        "the bearer token is not this unit's admin token"
    };
    Err((StatusCode::UNAUTHORIZED, message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_only_the_exact_bearer_token() {
        let token = AdminToken::new(&format!("  {TOKEN}\n")).expect("valid token");
        assert!(token.accepts(Some(format!("Bearer {TOKEN}").as_bytes())));
        assert!(token.accepts(Some(format!("bearer {TOKEN}").as_bytes())));
        assert!(!token.accepts(None));
        assert!(!token.accepts(Some(TOKEN.as_bytes())));
        assert!(!token.accepts(Some(b"Bearer ")));
        assert!(!token.accepts(Some(format!("Basic {TOKEN}").as_bytes())));
        assert!(!token.accepts(Some(format!("Bearer {TOKEN}0").as_bytes())));
        let mut wrong = TOKEN.to_owned();
        wrong.replace_range(31.., "0");
        assert!(!token.accepts(Some(format!("Bearer {wrong}").as_bytes())));
    }

    #[test]
    fn refuses_short_or_odd_tokens_and_never_prints_one() {
        assert_eq!(
            AdminToken::new("short"),
            Err(TokenError::TooShort { len: 5 })
        );
        assert_eq!(
            AdminToken::new("0123456789abcdef 123"),
            Err(TokenError::BadCharacter)
        );
        let token = AdminToken::new(TOKEN).expect("valid token");
        assert!(!format!("{token:?}").contains(TOKEN));
    }

    #[test]
    fn reads_a_token_file() {
        let dir = std::env::temp_dir().join(format!("sy-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join("token");
        std::fs::write(&path, format!("{TOKEN}\n")).expect("write the token");
        let token = AdminToken::from_file(&path).expect("read the token");
        assert_eq!(token.as_str(), TOKEN);
        let missing = AdminToken::from_file(&dir.join("missing"));
        assert!(matches!(missing, Err(TokenError::Unreadable { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
