//! Frame authentication: key derivation and the HMAC-SHA256 tag.
//!
//! Every node of a cluster holds the cluster secret. The MAC key is bound to
//! the cluster id so that two clusters sharing a secret by mistake still
//! reject each other's frames:
//!
//! `key = HMAC-SHA256(key = secret, msg = "switchyard-wire-v1\0" || cluster_id)`
//!
//! Tags are compared in constant time. Key material is never printed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::KeyError;
use crate::frame::TAG_LEN;

type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted cluster secret, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// Domain separation label of the key derivation (NUL-terminated so no
/// cluster id can extend it).
const KDF_LABEL: &[u8] = b"switchyard-wire-v1\0";

/// The MAC key of a cluster. Holds a keyed HMAC state, ready to clone per
/// frame; its `Debug` output is redacted.
#[derive(Clone)]
pub struct MacKey {
    mac: HmacSha256,
}

impl MacKey {
    /// Derives the cluster's MAC key from the cluster secret and cluster id.
    /// Rejects secrets shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn derive(secret: &[u8], cluster_id: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort {
                len: secret.len(),
                min: MIN_SECRET_LEN,
            });
        }
        let mut kdf = keyed(secret);
        kdf.update(KDF_LABEL);
        kdf.update(cluster_id.as_bytes());
        let key = kdf.finalize().into_bytes();
        Ok(Self { mac: keyed(&key) })
    }

    /// The tag over `data`.
    pub(crate) fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` authenticates `data` (constant-time comparison).
    pub(crate) fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (RFC 2104 §2: long keys are hashed,
    // short ones padded), so `new_from_slice` cannot fail for Hmac<Sha256>.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn derivation_matches_definition() {
        let secret = [7u8; 32];
        let key = MacKey::derive(&secret, "prod").unwrap();
        let mut kdf = HmacSha256::new_from_slice(&secret).unwrap();
        kdf.update(b"switchyard-wire-v1\0prod");
        let raw = kdf.finalize().into_bytes();
        let mut mac = HmacSha256::new_from_slice(&raw).unwrap();
        mac.update(b"data");
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(key.tag(b"data"), expected);
        assert!(key.verify(b"data", &expected));
        assert!(!key.verify(b"datb", &expected));
        assert!(!key.verify(b"data", &expected[..31]));
    }

    #[test]
    fn short_secret_rejected_and_debug_redacted() {
        assert_eq!(
            MacKey::derive(&[0; 31], "c").unwrap_err(),
            KeyError::SecretTooShort { len: 31, min: 32 }
        );
        let key = MacKey::derive(&[0; 32], "c").unwrap();
        assert_eq!(format!("{key:?}"), "MacKey(<redacted>)");
    }
}
