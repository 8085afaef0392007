//! The cluster's codec, derived the same way by every daemon: the MAC key from
//! `cluster.secret_file`'s contents and `cluster.id`.

use switchyard_config::Config;
use switchyard_wire::{Codec, KeyError, MacKey};

/// The codec every member of `config`'s cluster seals and opens control messages with.
pub fn cluster_codec(config: &Config) -> Result<Codec, KeyError> {
    let key = MacKey::derive(config.cluster.secret.as_bytes(), &config.cluster.id)?;
    Ok(Codec::new(key))
}
