//! Identifiers: ULIDs (time-ordered, 26 lowercase Crockford base32 characters), so ids sort by
//! creation time and can be parsed back without a lookup table.

use ulid::Ulid;

/// A new lowercase ULID.
pub fn new_id() -> String {
    Ulid::new().to_string().to_ascii_lowercase()
}

/// True when `s` looks like an id this system issued (cheap shape check before any I/O).
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 26 && Ulid::from_string(&s.to_ascii_uppercase()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_valid_unique_and_lowercase() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(is_valid_id(&a));
        assert_eq!(a, a.to_ascii_lowercase());
        assert!(!is_valid_id("not-an-id"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&format!("{a}x")));
    }
}
