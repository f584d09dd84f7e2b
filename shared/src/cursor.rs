//! Opaque pagination cursors.
//!
//! A cursor carries a DynamoDB `LastEvaluatedKey`, which may hold personal data (an index key
//! built from a name, say), so it is encrypted, not just signed: ChaCha20-Poly1305 with the
//! tenant id and the listing's name as associated data. An edited cursor, one from another
//! listing and one from another tenant all fail authentication the same way.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A position in a listing: the string attributes of a DynamoDB key.
pub type Position = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cursor is invalid, expired or belongs to another listing")]
pub struct CursorError;

#[derive(Clone)]
pub struct CursorCodec {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for CursorCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorCodec(***)")
    }
}

const NONCE_LEN: usize = 12;

fn associated_data(tenant_id: &str, listing: &str) -> Vec<u8> {
    format!("wcrm-cursor/v1\n{tenant_id}\n{listing}").into_bytes()
}

impl CursorCodec {
    /// Any secret string; it is stretched to a 256-bit key with SHA-256.
    pub fn new(secret: &str) -> Self {
        let key = Sha256::digest(secret.as_bytes());
        CursorCodec {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    pub fn encode(&self, tenant_id: &str, listing: &str, position: &Position) -> String {
        let plaintext = serde_json::to_vec(position).expect("a string map serializes");
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = associated_data(tenant_id, listing);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("encryption of a small buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn decode(&self, tenant_id: &str, listing: &str, cursor: &str) -> Result<Position, CursorError> {
        if cursor.len() > 4096 {
            return Err(CursorError);
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| CursorError)?;
        if raw.len() <= NONCE_LEN {
            return Err(CursorError);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let aad = associated_data(tenant_id, listing);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad: &aad })
            .map_err(|_| CursorError)?;
        serde_json::from_slice(&plaintext).map_err(|_| CursorError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position {
        [
            ("PK".to_owned(), "T#a".to_owned()),
            ("SK".to_owned(), "KEY#b".to_owned()),
        ]
        .into()
    }

    #[test]
    fn round_trips_for_the_same_tenant_and_listing() {
        let codec = CursorCodec::new("secret");
        let c = codec.encode("tenant-a", "keys", &position());
        assert_eq!(codec.decode("tenant-a", "keys", &c), Ok(position()));
        assert!(!c.contains("KEY"), "cursor must not reveal its content");
    }

    #[test]
    fn refuses_other_tenants_listings_edits_and_keys() {
        let codec = CursorCodec::new("secret");
        let c = codec.encode("tenant-a", "keys", &position());
        assert_eq!(codec.decode("tenant-b", "keys", &c), Err(CursorError));
        assert_eq!(codec.decode("tenant-a", "contacts", &c), Err(CursorError));
        assert_eq!(
            CursorCodec::new("other").decode("tenant-a", "keys", &c),
            Err(CursorError)
        );
        let mut edited = c.clone().into_bytes();
        let i = edited.len() / 2;
        edited[i] = if edited[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            codec.decode("tenant-a", "keys", &String::from_utf8(edited).unwrap()),
            Err(CursorError)
        );
        assert_eq!(codec.decode("tenant-a", "keys", ""), Err(CursorError));
        assert_eq!(codec.decode("tenant-a", "keys", "!!!"), Err(CursorError));
        assert_eq!(codec.decode("tenant-a", "keys", &"A".repeat(5000)), Err(CursorError));
    }
}
