//! Envelope encryption of the tenants' Graph access tokens.
//!
//! Contract: [`TokenCipher::seal`] asks KMS for a fresh data key (AES-256 material) under the
//! Graph-token key, encrypts the token with it (ChaCha20-Poly1305, random nonce, the tenant id as
//! associated data) and returns `kms1.<encrypted data key>.<nonce>.<ciphertext>` (base64url);
//! [`TokenCipher::open`] reverses it with one KMS `Decrypt`. The KMS encryption context binds the
//! data key to the tenant (`tenant_id`) and the purpose (`purpose=graph-token`), so a sealed token
//! copied to another tenant's item does not open. Only the roles that call Meta (sender, media)
//! may `kms:Decrypt` with this key; every other role that can read the item sees ciphertext.
//!
//! The store calls this at its token read/write sites only (`DynamoStore::with_token_cipher`). A
//! value without the `kms1.` prefix is a token stored before encryption existed: it is returned
//! as it is, and `crmctl tenant set-token` replaces it with a sealed one.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::secret::Secret;
use crate::store::{DynamoStore, StoreError};

/// Prefix of a sealed token (format version 1).
pub const SEALED_PREFIX: &str = "kms1.";
/// Logical id of the Graph-token key in `template.yaml`.
pub const TOKEN_KEY_LOGICAL_ID: &str = "GraphTokenKey";
/// The KMS key of the Graph tokens locally (`alias/` + the local name of `GraphTokenKey`).
pub const LOCAL_TOKEN_KEY: &str = "alias/wcrm-graph-token-key";

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("KMS request failed: {0}")]
    Kms(String),
    #[error("sealed token is malformed")]
    Malformed,
    #[error("sealed token does not open (wrong tenant or tampered)")]
    Tampered,
    #[error("the Graph token is encrypted but this process has no token key configured")]
    NoKey,
}

impl From<CipherError> for StoreError {
    fn from(e: CipherError) -> Self {
        match e {
            CipherError::Kms(_) | CipherError::NoKey => StoreError::Backend(e.to_string()),
            CipherError::Malformed | CipherError::Tampered => StoreError::Corrupt(e.to_string()),
        }
    }
}

/// KMS envelope encryption under one key; cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenCipher {
    client: crate::aws::LazyClient<aws_sdk_kms::Client>,
    key_id: String,
}

impl TokenCipher {
    /// `key_id`: key id, ARN or alias of the Graph-token key (`GRAPH_TOKEN_KEY_ID`).
    pub fn new(client: impl Into<crate::aws::LazyClient<aws_sdk_kms::Client>>, key_id: impl Into<String>) -> Self {
        TokenCipher {
            client: client.into(),
            key_id: key_id.into(),
        }
    }

    pub fn from_sdk(sdk: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        // Built on first use: most invocations never seal or open a token.
        Self::new(crate::aws::LazyClient::new(sdk, aws_sdk_kms::Client::new), key_id)
    }

    pub async fn seal(&self, tenant_id: &str, token: &Secret) -> Result<String, CipherError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("tenant_id", tenant_id)
            .encryption_context("purpose", "graph-token")
            .send()
            .await
            .map_err(|e| CipherError::Kms(aws_sdk_kms::error::DisplayErrorContext(&e).to_string()))?;
        let (Some(plain), Some(blob)) = (out.plaintext, out.ciphertext_blob) else {
            return Err(CipherError::Kms("GenerateDataKey returned no key".into()));
        };
        let cipher = ChaCha20Poly1305::new_from_slice(plain.as_ref()).map_err(|_| CipherError::Malformed)?;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: token.expose().as_bytes(),
                    aad: tenant_id.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Malformed)?;
        Ok(format!(
            "{SEALED_PREFIX}{}.{}.{}",
            B64.encode(blob.as_ref()),
            B64.encode(nonce),
            B64.encode(sealed)
        ))
    }

    pub async fn open(&self, tenant_id: &str, sealed: &str) -> Result<Secret, CipherError> {
        let parts: Vec<&str> = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(CipherError::Malformed)?
            .split('.')
            .collect();
        let [blob, nonce, body] = parts[..] else {
            return Err(CipherError::Malformed);
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| CipherError::Malformed);
        let (blob, nonce, body) = (decode(blob)?, decode(nonce)?, decode(body)?);
        if nonce.len() != 12 {
            return Err(CipherError::Malformed);
        }
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(blob))
            .encryption_context("tenant_id", tenant_id)
            .encryption_context("purpose", "graph-token")
            .send()
            .await
            .map_err(|e| CipherError::Kms(aws_sdk_kms::error::DisplayErrorContext(&e).to_string()))?;
        let plain = out.plaintext.ok_or(CipherError::Tampered)?;
        let key = Key::from_slice(plain.as_ref());
        let token = ChaCha20Poly1305::new(key)
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &body,
                    aad: tenant_id.as_bytes(),
                },
            )
            .map_err(|_| CipherError::Tampered)?;
        String::from_utf8(token)
            .map(Secret::new)
            .map_err(|_| CipherError::Malformed)
    }
}

impl DynamoStore {
    /// This store seals Graph tokens it writes and opens those it reads with `cipher`.
    pub fn with_token_cipher(mut self, cipher: TokenCipher) -> Self {
        self.tokens = Some(cipher);
        self
    }

    /// The stored form of `token` (sealed when the store has a cipher).
    pub(crate) async fn seal_token(&self, tenant_id: &str, token: &Secret) -> Result<String, StoreError> {
        match &self.tokens {
            Some(c) => Ok(c.seal(tenant_id, token).await?),
            None => Ok(token.expose().to_owned()),
        }
    }

    /// The token from its stored form.
    pub(crate) async fn open_token(&self, tenant_id: &str, stored: String) -> Result<Secret, StoreError> {
        if !stored.starts_with(SEALED_PREFIX) {
            return Ok(Secret::new(stored));
        }
        match &self.tokens {
            Some(c) => Ok(c.open(tenant_id, &stored).await?),
            None => Err(CipherError::NoKey.into()),
        }
    }
}

/// The Graph-token key a process uses: `GRAPH_TOKEN_KEY_ID`, else the local stack's alias.
pub fn token_key_id(env: &crate::config::Env) -> String {
    env.get("GRAPH_TOKEN_KEY_ID").unwrap_or(LOCAL_TOKEN_KEY).to_owned()
}
