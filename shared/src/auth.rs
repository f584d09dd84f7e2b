//! API keys and roles: pure rules, no I/O.
//!
//! A key reads `wcrm_<tenant id>_<key id>_<64 hex secret>`. The tenant and key ids in it let the
//! API find the stored record with one strongly consistent `GetItem` under the tenant's own
//! partition; only the SHA-256 of the whole key is stored, compared in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids;

pub const KEY_PREFIX: &str = "wcrm";
/// A one-time sign-in code (`crmctl user login`) reads like a key with this prefix instead, so
/// a code is never accepted as a key nor a key as a code.
pub const SIGNIN_PREFIX: &str = "wcrs";

/// What a key may do. Ordered: each role can do everything the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads.
    Viewer,
    /// Also sends messages and edits contacts.
    Agent,
    /// Also erases, exports, changes settings and reads the audit log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// True when this role may do what `required` may.
    pub fn allows(self, required: Role) -> bool {
        self >= required
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "agent" => Ok(Role::Agent),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: expected admin, agent or viewer")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A freshly minted key: the plaintext (shown once) and what gets stored.
#[derive(Debug)]
pub struct MintedKey {
    pub plaintext: crate::secret::Secret,
    pub key_id: String,
    pub hash: String,
}

/// Mints a new key for `tenant_id`.
pub fn mint_key(tenant_id: &str) -> MintedKey {
    mint_token(KEY_PREFIX, tenant_id)
}

/// Mints a token shaped like a key (`<prefix>_<tenant id>_<id>_<64 hex secret>`).
pub fn mint_token(prefix: &str, tenant_id: &str) -> MintedKey {
    let key_id = ids::new_id();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let plaintext = format!("{prefix}_{tenant_id}_{key_id}_{}", hex::encode(secret));
    let hash = hash_key(&plaintext);
    MintedKey {
        plaintext: crate::secret::Secret::new(plaintext),
        key_id,
        hash,
    }
}

/// Hex SHA-256 of the whole presented key: the only form in which keys are stored.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

/// The ids a well-formed key carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    pub tenant_id: String,
    pub key_id: String,
}

/// Splits a presented key into its ids; `None` for anything not shaped like our keys, so
/// garbage never costs a database read.
pub fn parse_key(presented: &str) -> Option<KeyRef> {
    parse_token(presented, KEY_PREFIX)
}

/// [`parse_key`] for tokens of another prefix ([`SIGNIN_PREFIX`]).
pub fn parse_token(presented: &str, expected_prefix: &str) -> Option<KeyRef> {
    let mut parts = presented.split('_');
    let (prefix, tenant, key, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || prefix != expected_prefix {
        return None;
    }
    let secret_ok = secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !(ids::is_valid_id(tenant) && ids::is_valid_id(key) && secret_ok) {
        return None;
    }
    Some(KeyRef {
        tenant_id: tenant.to_owned(),
        key_id: key.to_owned(),
    })
}

/// Constant-time check of a presented key against a stored hash.
pub fn key_matches(presented: &str, stored_hash: &str) -> bool {
    let computed = hash_key(presented);
    computed.len() == stored_hash.len() && bool::from(computed.as_bytes().ct_eq(stored_hash.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_parse_back_and_match_their_hash() {
        let tenant = ids::new_id();
        let k = mint_key(&tenant);
        let parsed = parse_key(k.plaintext.expose()).expect("well formed");
        assert_eq!(parsed.tenant_id, tenant);
        assert_eq!(parsed.key_id, k.key_id);
        assert!(key_matches(k.plaintext.expose(), &k.hash));
        assert_eq!(k.hash.len(), 64);
        assert!(!k.hash.contains(k.plaintext.expose()));
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_changed_secret_does_not_match() {
        let k = mint_key(&ids::new_id());
        let mut other = k.plaintext.expose().to_owned();
        let last = other.pop().unwrap();
        other.push(if last == '0' { '1' } else { '0' });
        assert!(parse_key(&other).is_some());
        assert!(!key_matches(&other, &k.hash));
        assert!(!key_matches(k.plaintext.expose(), "short"));
    }

    #[test]
    fn malformed_keys_are_refused_without_lookup() {
        let t = ids::new_id();
        let kid = ids::new_id();
        let secret = "a".repeat(64);
        assert!(parse_key(&format!("wcrm_{t}_{kid}_{secret}")).is_some());
        for bad in [
            String::new(),
            "wcrm".into(),
            format!("xcrm_{t}_{kid}_{secret}"),
            format!("wcrm_{t}_{kid}_{}", "a".repeat(63)),
            format!("wcrm_{t}_{kid}_{}", "A".repeat(64)),
            format!("wcrm_{t}_{kid}_{secret}_extra"),
            format!("wcrm_nope_{kid}_{secret}"),
        ] {
            assert!(parse_key(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Admin.allows(Role::Admin));
        assert!(Role::Agent.allows(Role::Viewer));
        assert!(!Role::Agent.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Agent));
        assert_eq!("agent".parse::<Role>(), Ok(Role::Agent));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
