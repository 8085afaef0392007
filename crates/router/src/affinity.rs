//! Session affinity of the request router: the signed affinity cookie and rendezvous
//! hashing. Pure functions over bytes and host lists; no I/O, no clock.
//!
//! The cookie value is `v1.<host id in decimal>.<tag>`, where the tag is the first 16 bytes
//! of HMAC-SHA256(key, `v1.<host id>`) in lower-case hex. It names a stable host id, never
//! an address, so it survives address changes and reloads. A value that does not parse or
//! whose tag is wrong is ignored (the request is balanced afresh and gets a new cookie).
//!
//! Client-IP and header affinity use weighted rendezvous hashing (HRW): each eligible host
//! scores `weight / -ln(u)` where `u` is xxh3 (fixed seed) of the key and the host id mapped
//! into (0, 1); the best score wins. It needs no table, agrees across router instances and
//! moves only the keys of a host that leaves. It is stateless, so it cannot tell a draining
//! host's old clients from new ones: hash affinity only chooses among active hosts, and the
//! configured affinity timeout does not apply to it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Bytes of the HMAC tag kept in the cookie.
const TAG_BYTES: usize = 16;
/// Longest cookie value the decoder looks at.
pub const MAX_COOKIE_VALUE: usize = 64;
/// Seed of the rendezvous hash; fixed so every router agrees.
const HRW_SEED: u64 = 0x5357_5944_5f48_5257; // "SWYD_HRW"

/// The key that signs affinity cookies.
#[derive(Clone)]
pub struct CookieKey([u8; 32]);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A key used as given (32 bytes).
    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// Derives the cookie key from the cluster secret, so every router of the cluster
    /// accepts the cookies of the others.
    pub fn derive(secret: &[u8]) -> Self {
        let mut mac = mac_for(secret);
        mac.update(b"switchyard router affinity cookie v1");
        let mut key = [0u8; 32];
        key.copy_from_slice(&mac.finalize().into_bytes());
        Self(key)
    }

    fn tag(&self, host: u32) -> [u8; TAG_BYTES] {
        let mut mac = mac_for(&self.0);
        mac.update(format!("v1.{host}").as_bytes());
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The cookie value that binds a client to `host`.
    pub fn encode(&self, host: u32) -> String {
        format!("v1.{host}.{}", hex::encode(self.tag(host)))
    }

    /// The host a cookie value names, if it is well formed and correctly signed.
    pub fn decode(&self, value: &[u8]) -> Option<u32> {
        let (host, tag) = parse_cookie(value)?;
        bool::from(self.tag(host).ct_eq(&tag)).then_some(host)
    }
}

fn mac_for(key: &[u8]) -> Hmac<Sha256> {
    // Invariant: HMAC takes keys of every length; only fixed-key MACs reject a length.
    Hmac::<Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
}

/// Splits `v1.<decimal u32>.<32 lower-case hex digits>` into host id and tag; total: any
/// byte string yields a value or `None`.
pub fn parse_cookie(value: &[u8]) -> Option<(u32, [u8; TAG_BYTES])> {
    if value.len() > MAX_COOKIE_VALUE {
        return None;
    }
    let rest = value.strip_prefix(b"v1.")?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (digits, tag_hex) = (&rest[..dot], &rest[dot + 1..]);
    if digits.is_empty() || digits.len() > 10 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut host: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        host = host * 10 + u64::from(d - b'0');
    }
    let host = u32::try_from(host).ok()?;
    if tag_hex.len() != TAG_BYTES * 2 {
        return None;
    }
    let mut tag = [0u8; TAG_BYTES];
    for (i, pair) in tag_hex.chunks_exact(2).enumerate() {
        tag[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some((host, tag))
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The value of cookie `name` in a `Cookie` header value, if present.
pub fn find_cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
    })
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Keys up to this long are hashed from a buffer on the stack (client addresses, most
/// header values); longer ones from the heap.
const STACK_KEY: usize = 60;

/// Weighted rendezvous choice: the position in `hosts` (id, weight; weight 0 never wins)
/// of the one that wins `key`.
pub fn rendezvous(key: &[u8], hosts: impl IntoIterator<Item = (u32, u32)>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    let mut stack = [0u8; STACK_KEY + 4];
    let mut heap = Vec::new();
    let input: &mut [u8] = if key.len() <= STACK_KEY {
        &mut stack[..key.len() + 4]
    } else {
        heap.resize(key.len() + 4, 0);
        &mut heap
    };
    input[4..].copy_from_slice(key);
    for (i, (id, weight)) in hosts.into_iter().enumerate() {
        if weight == 0 {
            continue;
        }
        input[..4].copy_from_slice(&id.to_be_bytes());
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(input, HRW_SEED);
        // Map to (0, 1): 53 significant bits, never 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = f64::from(weight) / -u.ln();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trips_and_rejects_tampering() {
        let key = CookieKey::derive(b"0123456789abcdef0123456789abcdef");
        let value = key.encode(4_000_000_000);
        assert_eq!(key.decode(value.as_bytes()), Some(4_000_000_000));
        let other = CookieKey::derive(b"another secret of enough length!");
        assert_eq!(other.decode(value.as_bytes()), None);
        let forged = value.replacen("v1.4000000000.", "v1.4000000001.", 1);
        assert_eq!(key.decode(forged.as_bytes()), None);
        assert_eq!(key.decode(b"v1.01.00"), None);
        assert_eq!(key.decode(b""), None);
    }

    #[test]
    fn finds_cookies_among_others() {
        let h = b"a=1; SY = v1.2.ff ;b=";
        assert_eq!(find_cookie(h, "SY"), Some(&b"v1.2.ff"[..]));
        assert_eq!(find_cookie(h, "b"), Some(&b""[..]));
        assert_eq!(find_cookie(h, "c"), None);
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_removed_host() {
        let all = [(1, 10), (2, 10), (3, 10)];
        let without_2 = [(1, 10), (3, 10)];
        for k in 0u32..500 {
            let key = k.to_be_bytes();
            let a = rendezvous(&key, all).map(|i| all[i].0);
            let b = rendezvous(&key, without_2).map(|i| without_2[i].0);
            if a != Some(2) {
                assert_eq!(a, b, "key {k} moved although its host stayed");
            }
        }
        assert_eq!(rendezvous(b"k", [(1, 0)]), None);
    }

    #[test]
    fn keys_on_the_stack_and_on_the_heap_hash_as_id_then_key() {
        // The definition: xxh3 of the host id (big-endian) followed by the key.
        let reference = |key: &[u8], hosts: &[(u32, u32)]| {
            let score = |&(id, weight): &(u32, u32)| {
                let mut input = id.to_be_bytes().to_vec();
                input.extend_from_slice(key);
                let h = xxhash_rust::xxh3::xxh3_64_with_seed(&input, HRW_SEED);
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                f64::from(weight) / -u.ln()
            };
            (0..hosts.len()).max_by(|&a, &b| score(&hosts[a]).total_cmp(&score(&hosts[b])))
        };
        let hosts: Vec<(u32, u32)> = (1..=7).map(|id| (id, 10 + id)).collect();
        for len in [0, 1, STACK_KEY, STACK_KEY + 1, 300] {
            for seed in 0u8..40 {
                let key: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                    .collect();
                assert_eq!(
                    rendezvous(&key, hosts.iter().copied()),
                    reference(&key, &hosts),
                    "key length {len}, seed {seed}"
                );
            }
        }
    }
}
