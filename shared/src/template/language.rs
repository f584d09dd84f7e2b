//! Our language fallback. Meta's `language.policy` is only `deterministic`: a send names one
//! language and Meta never substitutes another. A send asking for `auto` (or naming none)
//! gets the first language of the chain the template has, approved languages first: the
//! contact's language → its base language (`pt_BR` → `pt`) → the tenant's default language (→
//! its base) → none (the API answers `422`).

/// Meta's language and locale codes: `en`, `en_US`, `pt_BR`, `es_419`, `zh_CN`. Accepts the
/// BCP 47 spelling (`pt-BR`, `en-us`) and returns Meta's; `None` for anything else.
pub fn normalize(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let (lang, region) = match raw.split_once(['_', '-']) {
        Some((l, r)) => (l, Some(r)),
        None => (raw, None),
    };
    if !(2..=3).contains(&lang.len()) || !lang.bytes().all(|b| b.is_ascii_alphabetic()) {
        return None;
    }
    let lang = lang.to_ascii_lowercase();
    match region {
        None => Some(lang),
        Some(r) if r.len() == 2 && r.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(format!("{lang}_{}", r.to_ascii_uppercase()))
        }
        Some(r) if r.len() == 3 && r.bytes().all(|b| b.is_ascii_digit()) => Some(format!("{lang}_{r}")),
        Some(_) => None,
    }
}

/// `pt_BR` → `pt`; a base language is its own base.
pub fn base(code: &str) -> &str {
    code.split_once('_').map_or(code, |(lang, _)| lang)
}

/// Whether a send's `language.code` asks for our fallback.
pub fn is_auto(code: Option<&str>) -> bool {
    code.is_none_or(|c| c.eq_ignore_ascii_case("auto"))
}

/// The fallback chain, without repeats.
pub fn candidates(contact_language: Option<&str>, tenant_default: Option<&str>) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    for code in [contact_language, tenant_default].into_iter().flatten() {
        let Some(code) = normalize(code) else { continue };
        for step in [code.clone(), base(&code).to_owned()] {
            if !chain.contains(&step) {
                chain.push(step);
            }
        }
    }
    chain
}

/// The language to send in: the first candidate the template has approved, else the first it
/// has at all (the send then fails with that language's status, which says more than "none").
/// `available` lists the template's languages with whether each is approved.
pub fn choose(candidates: &[String], available: &[(&str, bool)]) -> Option<String> {
    let find = |want_approved: bool| {
        candidates.iter().find(|c| {
            available
                .iter()
                .any(|(lang, approved)| lang == c && (*approved || !want_approved))
        })
    };
    find(true).or_else(|| find(false)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_normalised_to_metas_form() {
        assert_eq!(normalize("pt-br").as_deref(), Some("pt_BR"));
        assert_eq!(normalize("en_US").as_deref(), Some("en_US"));
        assert_eq!(normalize("DE").as_deref(), Some("de"));
        assert_eq!(normalize("es_419").as_deref(), Some("es_419"));
        for bad in ["", "e", "english", "en_USA", "en_", "1n", "en-U1"] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
        assert_eq!(base("pt_BR"), "pt");
        assert_eq!(base("pt"), "pt");
        assert!(is_auto(None) && is_auto(Some("AUTO")) && !is_auto(Some("en")));
    }

    #[test]
    fn the_chain_goes_contact_base_tenant_default() {
        assert_eq!(candidates(Some("pt_BR"), Some("en_US")), ["pt_BR", "pt", "en_US", "en"]);
        assert_eq!(candidates(Some("pt"), Some("pt_BR")), ["pt", "pt_BR"]);
        assert_eq!(candidates(None, Some("de")), ["de"]);
        assert_eq!(candidates(Some("??"), None), Vec::<String>::new());
    }

    #[test]
    fn approved_languages_win_then_any_then_none() {
        let chain = candidates(Some("pt_BR"), Some("en"));
        assert_eq!(
            choose(&chain, &[("pt_BR", true), ("en", true)]).as_deref(),
            Some("pt_BR")
        );
        assert_eq!(choose(&chain, &[("pt", true), ("en", true)]).as_deref(), Some("pt"));
        assert_eq!(choose(&chain, &[("pt_BR", false), ("en", true)]).as_deref(), Some("en"));
        assert_eq!(
            choose(&chain, &[("pt_BR", false), ("de", true)]).as_deref(),
            Some("pt_BR")
        );
        assert_eq!(choose(&chain, &[("de", true)]), None);
        assert_eq!(choose(&[], &[("en", true)]), None);
    }
}
