//! `X-Hub-Signature-256`: Meta signs every webhook delivery with the app secret.
//!
//! The HMAC covers the exact bytes received, so verification runs on the raw body before any
//! parsing: re-serialised JSON would not match.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The header Meta sends (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const PREFIX: &str = "sha256=";

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery is refused. Carries nothing from the request: it ends up in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header is not sha256=<64 hex digits>")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

fn mac_over(app_secret: &[u8], body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(app_secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac
}

/// Checks `header` (the `X-Hub-Signature-256` value, if any) against the raw body.
pub fn verify_signature(app_secret: &[u8], raw_body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let digits = header.strip_prefix(PREFIX).ok_or(SignatureError::Malformed)?;
    let mut tag = [0u8; 32];
    // Exactly 64 hex digits, either case; anything else fails here, before any MAC work.
    hex::decode_to_slice(digits, &mut tag).map_err(|_| SignatureError::Malformed)?;
    // With an empty secret anyone could sign. Configuration refuses one; so does this.
    if app_secret.is_empty() {
        return Err(SignatureError::Mismatch);
    }
    // `verify_slice` compares in constant time.
    mac_over(app_secret, raw_body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

/// The full header value Meta would send for `body`: `sha256=<lowercase hex>`.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        hex::encode(mac_over(app_secret, body).finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-app-secret";
    const BODY: &[u8] = br#"{"object":"whatsapp_business_account","entry":[]}"#;

    #[test]
    fn matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signed_bodies_verify_in_either_hex_case() {
        let header = sign(SECRET, BODY);
        assert_eq!(header.len(), PREFIX.len() + 64);
        assert_eq!(verify_signature(SECRET, BODY, Some(&header)), Ok(()));
        let upper = format!("{PREFIX}{}", header[PREFIX.len()..].to_ascii_uppercase());
        assert_eq!(verify_signature(SECRET, BODY, Some(&upper)), Ok(()));
        assert_eq!(verify_signature(SECRET, BODY, Some(&format!("  {header}\t"))), Ok(()));
    }

    #[test]
    fn fixtures_verify_over_their_exact_bytes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks/inbound_text.json");
        let raw = std::fs::read(path).unwrap();
        let header = sign(SECRET, &raw);
        assert_eq!(verify_signature(SECRET, &raw, Some(&header)), Ok(()));
        // The same JSON, re-serialised, is different bytes and does not verify.
        let reserialised = serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&raw).unwrap()).unwrap();
        assert_eq!(
            verify_signature(SECRET, &reserialised, Some(&header)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_headers() {
        for header in [None, Some(""), Some("   ")] {
            assert_eq!(
                verify_signature(SECRET, BODY, header),
                Err(SignatureError::Missing),
                "{header:?}"
            );
        }
    }

    #[test]
    fn malformed_headers() {
        let good = sign(SECRET, BODY);
        let digits = &good[PREFIX.len()..];
        for bad in [
            digits.to_owned(),
            format!("sha1={digits}"),
            format!("SHA256={digits}"),
            format!("sha256:{digits}"),
            format!("sha256= {digits}"),
            format!("{PREFIX}{}", &digits[..63]),
            format!("{PREFIX}{digits}0"),
            format!("{PREFIX}{digits}00"),
            format!("{PREFIX}{}zz", &digits[..62]),
            format!("{PREFIX}{}é", &digits[..62]),
            PREFIX.to_owned(),
            "sha256=".repeat(20),
        ] {
            assert_eq!(
                verify_signature(SECRET, BODY, Some(&bad)),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn mismatches() {
        let good = sign(SECRET, BODY);
        assert_eq!(
            verify_signature(b"other-secret", BODY, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let mut tampered = BODY.to_vec();
        tampered.push(b' ');
        assert_eq!(
            verify_signature(SECRET, &tampered, Some(&good)),
            Err(SignatureError::Mismatch)
        );
        let flipped_last = format!(
            "{}{}",
            &good[..good.len() - 1],
            if good.ends_with('0') { '1' } else { '0' }
        );
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&flipped_last)),
            Err(SignatureError::Mismatch)
        );
        let zeros = format!("{PREFIX}{}", "0".repeat(64));
        assert_eq!(
            verify_signature(SECRET, BODY, Some(&zeros)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn an_empty_secret_never_verifies() {
        let forged = sign(b"", BODY);
        assert_eq!(
            verify_signature(b"", BODY, Some(&forged)),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_bodies_are_signed_like_any_other() {
        let header = sign(SECRET, b"");
        assert_eq!(verify_signature(SECRET, b"", Some(&header)), Ok(()));
    }
}
