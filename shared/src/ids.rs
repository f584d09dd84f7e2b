//! Identifiers: ULIDs (time-ordered, 26 lowercase Crockford base32 characters), so ids sort by
//! creation time and can be parsed back without a lookup table.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// A new lowercase ULID, greater than every id this process issued before (monotonic within a
/// millisecond too): ids of one instance sort in the order it issued them, which is the
/// acceptance order per recipient that the sender keeps.
pub fn new_id() -> String {
    static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());
    let next = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .generate()
        // 2^80 ids in one millisecond overflow the random part: fall back to a fresh one.
        .unwrap_or_else(|_| Ulid::new());
    next.to_string().to_ascii_lowercase()
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

    #[test]
    fn ids_of_one_process_sort_in_issue_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
