//! Measures what the `phonenumber` crate costs on first use in a fresh process (its metadata
//! is deserialised and its regexes compiled lazily) against later uses, with the release
//! profile. Prints one JSON object; `bench` runs it a few times and reports the medians.

use std::time::Instant;

use crm_shared::contact::{normalize_phone, phone_from_wa_id};

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e6)
}

fn main() {
    let (a, first_gb) = time(|| normalize_phone("+447911123456"));
    let (b, second_gb) = time(|| normalize_phone("+447911000002"));
    let (c, first_us) = time(|| normalize_phone("+14155550123"));
    let (d, second_us) = time(|| normalize_phone("+14155550199"));
    let (e, wa_id_known_region) = time(|| phone_from_wa_id("447911000001"));
    let (f, first_de) = time(|| phone_from_wa_id("4915112345678"));
    // Valid or not, each call parses the number against the metadata: the timing is the point.
    let valid = [a.is_ok(), b.is_ok(), c.is_ok(), d.is_ok(), e.is_some(), f.is_some()];
    eprintln!("valid: {valid:?}");
    println!(
        "{}",
        serde_json::json!({
            "first_use_us": first_gb,
            "second_same_region_us": second_gb,
            "first_other_region_us": first_us,
            "second_other_region_us": second_us,
            "wa_id_known_region_us": wa_id_known_region,
            "wa_id_third_region_us": first_de,
        })
    );
}
