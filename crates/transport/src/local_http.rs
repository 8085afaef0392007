//! The request rules of the daemons' local HTTP APIs (the agent's API, a unit's admin
//! API). Both are unauthenticated and reachable only on loopback or a Unix socket, so
//! the remaining ways in are a browser on the same machine: a cross-site request (a
//! web page posting to `http://127.0.0.1:…`) or DNS rebinding (a page on a name that
//! the attacker re-points at 127.0.0.1). [`check`] refuses both:
//!
//! - a request carrying an `Origin` header (browsers send it on cross-site and
//!   state-changing requests; command-line clients never do) other than the API's own
//!   origin, `http://` and the request's loopback `Host` (the unit's dashboard acting on
//!   the API that served it): 403;
//! - a `Host` that is not `localhost` or a loopback address, with any port (a
//!   rebinding page's requests carry its own name); absent or empty is allowed, for
//!   clients of the Unix socket: 403;
//! - a state-changing request (POST, PUT, DELETE, PATCH) without
//!   `Content-Type: application/json`, body or not: a browser cannot send that type
//!   cross-site without a preflight the APIs never grant: 415.
//!
//! The checks work on raw header values, so each API applies them in its own
//! framework and error format.

use std::net::IpAddr;

/// Why a request was refused: the HTTP status and a message for the error document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 403 or 415.
    pub status: u16,
    /// What was wrong and what to send instead.
    pub message: String,
}

/// The headers [`check`] looks at, as raw values (`None` when absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHeaders<'a> {
    /// `Host`.
    pub host: Option<&'a [u8]>,
    /// `Origin`.
    pub origin: Option<&'a [u8]>,
    /// `Content-Type`.
    pub content_type: Option<&'a [u8]>,
}

/// Whether `method` changes state (and so needs the JSON content type).
pub fn is_mutating(method: &str) -> bool {
    matches!(method, "POST" | "PUT" | "DELETE" | "PATCH")
}

/// Checks one request against the rules in the [module docs](self).
///
/// ```
/// use switchyard_transport::local_http::{RequestHeaders, check};
///
/// let curl = RequestHeaders {
///     host: Some(b"localhost"),
///     content_type: Some(b"application/json"),
///     ..RequestHeaders::default()
/// };
/// assert!(check("POST", curl).is_ok());
/// let rebound = RequestHeaders { host: Some(b"evil.example:9181"), ..curl };
/// assert_eq!(check("GET", rebound).map_err(|r| r.status), Err(403));
/// ```
pub fn check(method: &str, headers: RequestHeaders<'_>) -> Result<(), Refusal> {
    if let Some(origin) = headers.origin
        && !same_origin(origin, headers.host)
    {
        return Err(Refusal {
            status: 403,
            message: format!(
                "requests from web pages are refused (Origin: {}); this API is for local programs and operators only",
                String::from_utf8_lossy(origin)
            ),
        });
    }
    if let Some(host) = headers.host
        && !host_allowed(host)
    {
        return Err(Refusal {
            status: 403,
            message: format!(
                "Host {:?} is not localhost or a loopback address; send Host: localhost (curl does)",
                String::from_utf8_lossy(host)
            ),
        });
    }
    if is_mutating(method) && !is_json(headers.content_type) {
        let got = headers.content_type.map_or_else(
            || "none".to_owned(),
            |v| String::from_utf8_lossy(v).into_owned(),
        );
        return Err(Refusal {
            status: 415,
            message: format!(
                "{method} requests must send Content-Type: application/json, even without a body (got {got}); with curl: -H 'Content-Type: application/json'"
            ),
        });
    }
    Ok(())
}

/// Whether `origin` is this API's own: `http://` followed by a present, loopback `Host`.
/// (A page of another site, or one on a rebinding name, has another origin.)
fn same_origin(origin: &[u8], host: Option<&[u8]>) -> bool {
    host.is_some_and(|h| !h.is_empty() && host_allowed(h) && is_own_origin(origin, h))
}

/// Whether `origin` is `http://` followed by `host` (the request's `Host`): a page the API
/// served itself, whatever the host's name.
pub fn is_own_origin(origin: &[u8], host: &[u8]) -> bool {
    !host.is_empty()
        && origin
            .strip_prefix(b"http://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

/// Whether a `Host` value names this machine's loopback: empty, `localhost` or a
/// loopback address, each with an optional port.
pub fn host_allowed(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let value = value.trim();
    if value.is_empty() {
        return true;
    }
    let name = if let Some(rest) = value.strip_prefix('[') {
        // [v6] or [v6]:port
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return inner.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    } else {
        match value.rsplit_once(':') {
            Some((name, port)) if !name.contains(':') => {
                if !is_port(port) {
                    return false;
                }
                name
            }
            // A bare IPv6 address (no port possible without brackets).
            Some(_) => value,
            None => value,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(value) = content_type.and_then(|v| std::str::from_utf8(v).ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass_and_names_do_not() {
        for ok in [
            "",
            "localhost",
            "LOCALHOST:9181",
            "127.0.0.1",
            "127.0.0.1:9181",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:9181",
            "::1",
        ] {
            assert!(host_allowed(ok.as_bytes()), "{ok:?} refused");
        }
        for bad in [
            "evil.example",
            "evil.example:9181",
            "localhost.evil.example",
            "10.0.0.1:9181",
            "0.0.0.0",
            "[::2]:80",
            "[::1]x",
            "localhost:port",
            "127.0.0.1:123456",
        ] {
            assert!(!host_allowed(bad.as_bytes()), "{bad:?} allowed");
        }
        assert!(!host_allowed(b"\xff"));
    }

    #[test]
    fn origin_host_and_content_type_are_checked_in_that_order() {
        let good = RequestHeaders {
            host: Some(b"localhost"),
            origin: None,
            content_type: Some(b"application/json; charset=utf-8"),
        };
        assert!(check("POST", good).is_ok());
        assert!(check("GET", RequestHeaders::default()).is_ok());
        let status = |method, h| check(method, h).map_err(|r| r.status);
        let origin = RequestHeaders {
            origin: Some(b"https://evil.example"),
            ..good
        };
        assert_eq!(status("GET", origin), Err(403));
        // The API's own origin (its dashboard) passes; a look-alike does not.
        let own = RequestHeaders {
            host: Some(b"127.0.0.1:9280"),
            origin: Some(b"http://127.0.0.1:9280"),
            ..good
        };
        assert_eq!(status("POST", own), Ok(()));
        for other in [
            &b"http://127.0.0.1:9281"[..],
            b"https://127.0.0.1:9280",
            b"http://127.0.0.1:9280.evil.example",
            b"null",
        ] {
            let h = RequestHeaders {
                origin: Some(other),
                ..own
            };
            assert_eq!(
                status("POST", h),
                Err(403),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        let no_host = RequestHeaders { host: None, ..own };
        assert_eq!(status("POST", no_host), Err(403));
        let host = RequestHeaders {
            host: Some(b"evil.example"),
            ..good
        };
        assert_eq!(status("POST", host), Err(403));
        for content_type in [None, Some(&b"text/plain"[..]), Some(b"application/jsonx")] {
            let h = RequestHeaders {
                content_type,
                ..good
            };
            assert_eq!(status("DELETE", h), Err(415));
            assert_eq!(status("GET", h), Ok(()));
        }
    }
}
