//! The cluster secret: owns how key material is read from the secret file, the minimum
//! strength, and a container that never prints the key.
//!
//! File format: if the file's content, with surrounding whitespace removed, consists only of
//! hex digits, it is hex-encoded key material and must hold at least 64 hex digits (32 bytes),
//! e.g. the output of `openssl rand -hex 32`. Anything else is raw key material used byte for
//! byte, exactly as stored, and must be at least 32 bytes long, e.g. `head -c 32 /dev/urandom`.

use std::fmt;

/// Fewest bytes of key material a cluster secret may hold.
pub const MIN_SECRET_BYTES: usize = 32;

/// The key that authenticates all control traffic of a cluster. `Debug` shows only its length.
#[derive(Clone)]
pub struct ClusterSecret {
    bytes: Vec<u8>,
}

/// Why a secret file's content is not usable key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretError {
    /// Hex-encoded, but fewer than 64 hex digits.
    ShortHex {
        /// How many hex digits the file holds.
        digits: usize,
    },
    /// Hex-encoded with an odd number of digits, so not whole bytes.
    OddHex {
        /// How many hex digits the file holds.
        digits: usize,
    },
    /// Raw, but fewer than 32 bytes.
    ShortRaw {
        /// How many bytes the file holds.
        bytes: usize,
    },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortHex { digits } => write!(
                f,
                "holds {digits} hex digits ({} bytes); at least {} hex digits ({MIN_SECRET_BYTES} bytes) are needed",
                digits / 2,
                MIN_SECRET_BYTES * 2
            ),
            Self::OddHex { digits } => {
                write!(f, "holds an odd number of hex digits ({digits})")
            }
            Self::ShortRaw { bytes } => write!(
                f,
                "holds {bytes} bytes of key material; at least {MIN_SECRET_BYTES} are needed"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

impl ClusterSecret {
    /// Interprets the content of a secret file (see the module docs for the format).
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, SecretError> {
        let trimmed = contents.trim_ascii();
        if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit) {
            let digits = trimmed.len();
            if digits < MIN_SECRET_BYTES * 2 {
                return Err(SecretError::ShortHex { digits });
            }
            return hex::decode(trimmed)
                .map(|bytes| Self { bytes })
                .map_err(|_| SecretError::OddHex { digits });
        }
        if contents.len() < MIN_SECRET_BYTES {
            return Err(SecretError::ShortRaw {
                bytes: contents.len(),
            });
        }
        Ok(Self {
            bytes: contents.to_vec(),
        })
    }

    /// The key material.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of bytes of key material.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false for a loaded secret; present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(<{} bytes redacted>)", self.bytes.len())
    }
}

impl Drop for ClusterSecret {
    fn drop(&mut self) {
        // Best effort: overwrite the key before the allocation is freed; `black_box` keeps the
        // compiler from treating the writes as dead.
        self.bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&mut self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_secret_is_decoded() {
        let text = format!("{}\n", "ab".repeat(32));
        let secret = ClusterSecret::from_file_contents(text.as_bytes());
        assert_eq!(secret.map(|s| s.as_bytes().to_vec()), Ok(vec![0xab; 32]));
    }

    #[test]
    fn long_hex_secret_is_accepted() {
        let text = "0123456789abcdefABCDEF".repeat(4); // 88 digits
        let secret = ClusterSecret::from_file_contents(text.as_bytes());
        assert_eq!(secret.map(|s| s.len()), Ok(44));
    }

    #[test]
    fn short_hex_secret_is_refused_even_if_long_in_bytes() {
        // `openssl rand -hex 16` gives 32 hex digits: 33 bytes on disk but only 16 of key.
        let text = format!("{}\n", "5a".repeat(16));
        assert_eq!(
            ClusterSecret::from_file_contents(text.as_bytes()).map(|s| s.len()),
            Err(SecretError::ShortHex { digits: 32 })
        );
    }

    #[test]
    fn odd_hex_secret_is_refused() {
        let text = "a".repeat(65);
        assert_eq!(
            ClusterSecret::from_file_contents(text.as_bytes()).map(|s| s.len()),
            Err(SecretError::OddHex { digits: 65 })
        );
    }

    #[test]
    fn raw_secret_is_used_verbatim() {
        let raw: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37) | 0x80).collect();
        let secret = ClusterSecret::from_file_contents(&raw);
        assert_eq!(secret.map(|s| s.as_bytes().to_vec()), Ok(raw));
    }

    #[test]
    fn short_raw_secret_is_refused() {
        assert_eq!(
            ClusterSecret::from_file_contents(b"password123").map(|s| s.len()),
            Err(SecretError::ShortRaw { bytes: 11 })
        );
        assert_eq!(
            ClusterSecret::from_file_contents(b"").map(|s| s.len()),
            Err(SecretError::ShortRaw { bytes: 0 })
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let secret = ClusterSecret::from_file_contents(&[0xf0; 32]);
        let shown = secret.map(|s| format!("{s:?}"));
        assert_eq!(shown.as_deref(), Ok("ClusterSecret(<32 bytes redacted>)"));
    }
}
