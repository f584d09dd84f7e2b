//! Keyword matching of inbound text (pure): both the text and the rule's keywords are *folded*
//! — lower-cased, accents removed (`é` → `e`, `ß` → `ss`), invisible characters dropped and every
//! run of whitespace made one space, trimmed — so "  Café   HOURS " matches the keyword
//! "cafe hours". Modes: `exact` (the whole message), `prefix` (the message starts with the
//! keyword as a whole word), `contains` (the keyword appears as whole words), `regex` (over the
//! folded text, compiled with a size limit so no pattern can make matching expensive).

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Longest regex source accepted (characters).
pub const MAX_PATTERN_CHARS: usize = 200;
/// Compiled-program budget of one regex (bytes): far above any sensible keyword pattern, far
/// below what could slow down an inbound message.
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Longest keyword (characters, after folding).
pub const MAX_KEYWORD_CHARS: usize = 100;
/// Most keywords per rule.
pub const MAX_KEYWORDS: usize = 50;
/// Text longer than this is matched on its first this-many characters only (a WhatsApp text is
/// at most 4,096).
pub const MAX_TEXT_CHARS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchMode {
    Exact,
    Prefix,
    Contains,
    Regex,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("keywords must hold 1 to {MAX_KEYWORDS} entries")]
    KeywordCount,
    #[error("keyword {0:?} is empty after folding, or longer than {MAX_KEYWORD_CHARS} characters")]
    BadKeyword(String),
    #[error("pattern {0:?} is longer than {MAX_PATTERN_CHARS} characters")]
    PatternTooLong(String),
    #[error("pattern {0:?} is not a valid regex, or too complex: {1}")]
    BadPattern(String, String),
}

/// The folded form of `text` (see the module doc).
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars().take(MAX_TEXT_CHARS) {
        if is_invisible(c) {
            continue;
        }
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        for lower in c.to_lowercase() {
            match strip_accent(lower) {
                Folded::One(b) => out.push(b),
                Folded::Two(a, b) => {
                    out.push(a);
                    out.push(b);
                }
                Folded::Same => out.push(lower),
            }
        }
    }
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{00AD}')
        // Combining diacritical marks (a decomposed "é" is "e" + U+0301): dropped with the accent.
        || ('\u{0300}'..='\u{036F}').contains(&c)
}

enum Folded {
    Same,
    One(char),
    Two(char, char),
}

/// The base letter of an accented lower-case Latin letter (Latin-1 Supplement and Latin
/// Extended-A, which cover the languages WhatsApp's Latin-script markets write in).
fn strip_accent(c: char) -> Folded {
    let base = match c {
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'æ' => return Folded::Two('a', 'e'),
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è'..='ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => 'e',
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => 'g',
        'ĥ' | 'ħ' => 'h',
        'ì'..='ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => 'i',
        'ĵ' => 'j',
        'ķ' => 'k',
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => 'l',
        'ñ' | 'ń' | 'ņ' | 'ň' => 'n',
        'ò'..='ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => 'o',
        'œ' => return Folded::Two('o', 'e'),
        'ŕ' | 'ŗ' | 'ř' => 'r',
        'ś' | 'ŝ' | 'ş' | 'š' => 's',
        'ß' => return Folded::Two('s', 's'),
        'ţ' | 'ť' | 'ŧ' => 't',
        'ù'..='ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => 'u',
        'ŵ' => 'w',
        'ý' | 'ÿ' | 'ŷ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        _ => return Folded::Same,
    };
    Folded::One(base)
}

/// A rule's keywords, validated and folded (regexes compiled), ready to match.
#[derive(Debug, Clone)]
pub struct Matcher {
    mode: MatchMode,
    keywords: Vec<String>,
    patterns: Vec<Regex>,
}

impl Matcher {
    pub fn new(mode: MatchMode, keywords: &[String]) -> Result<Matcher, MatchError> {
        if keywords.is_empty() || keywords.len() > MAX_KEYWORDS {
            return Err(MatchError::KeywordCount);
        }
        if mode == MatchMode::Regex {
            let patterns = keywords.iter().map(|k| compile(k)).collect::<Result<_, _>>()?;
            return Ok(Matcher {
                mode,
                keywords: Vec::new(),
                patterns,
            });
        }
        let keywords = keywords
            .iter()
            .map(|k| {
                let folded = fold(k);
                if folded.is_empty() || folded.chars().count() > MAX_KEYWORD_CHARS {
                    Err(MatchError::BadKeyword(k.clone()))
                } else {
                    Ok(folded)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Matcher {
            mode,
            keywords,
            patterns: Vec::new(),
        })
    }

    /// The keyword (or pattern) that `folded` (a [`fold`]ed text) matches, if any.
    pub fn find(&self, folded: &str) -> Option<String> {
        match self.mode {
            MatchMode::Exact => self.keywords.iter().find(|k| folded == k.as_str()).cloned(),
            MatchMode::Prefix => self
                .keywords
                .iter()
                .find(|k| folded.strip_prefix(k.as_str()).is_some_and(starts_at_boundary))
                .cloned(),
            MatchMode::Contains => self.keywords.iter().find(|k| contains_words(folded, k)).cloned(),
            MatchMode::Regex => self
                .patterns
                .iter()
                .find(|p| p.is_match(folded))
                .map(|p| p.as_str().to_owned()),
        }
    }
}

fn compile(pattern: &str) -> Result<Regex, MatchError> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(MatchError::PatternTooLong(pattern.to_owned()));
    }
    if pattern.is_empty() {
        return Err(MatchError::BadPattern(pattern.to_owned(), "empty".into()));
    }
    // Matched against folded text: case-insensitive so an upper-case pattern still matches.
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(20)
        .build()
        .map_err(|e| MatchError::BadPattern(pattern.to_owned(), first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

/// Whether what follows a matched prefix starts a new word (or the text ended).
fn starts_at_boundary(rest: &str) -> bool {
    rest.chars().next().is_none_or(|c| !c.is_alphanumeric())
}

/// Whether `keyword` occurs in `text` with no letter or digit glued to either side.
fn contains_words(text: &str, keyword: &str) -> bool {
    text.match_indices(keyword).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + keyword.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

/// Whether a rule for `rule_language` (Meta's code: `es`, `pt_BR`) applies to a contact whose
/// language is `contact_language`: a rule without a language applies to everyone; `es` covers
/// `es_MX`; a contact without a language gets only rules without one.
pub fn language_applies(rule_language: Option<&str>, contact_language: Option<&str>) -> bool {
    let Some(rule) = rule_language else { return true };
    let Some(contact) = contact_language else { return false };
    let norm = |s: &str| s.replace('-', "_").to_ascii_lowercase();
    let (rule, contact) = (norm(rule), norm(contact));
    contact == rule || contact.strip_prefix(&rule).is_some_and(|rest| rest.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mode: MatchMode, keywords: &[&str]) -> Matcher {
        Matcher::new(mode, &keywords.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn folding_ignores_case_accents_and_whitespace() {
        assert_eq!(fold("  Café   HOURS \n"), "cafe hours");
        assert_eq!(fold("Straße"), "strasse");
        assert_eq!(fold("\u{200B}Ñandú\u{FEFF}"), "nandu");
        // Decomposed accents (e + combining acute) fold like composed ones.
        assert_eq!(fold("Cafe\u{0301}"), "cafe");
        assert_eq!(fold("ÅNGSTRÖM Œuvre"), "angstrom oeuvre");
        assert_eq!(fold("\t\u{00A0}"), "");
        assert_eq!(fold("こんにちは"), "こんにちは");
        assert_eq!(fold(&"a".repeat(10_000)).len(), MAX_TEXT_CHARS);
    }

    #[test]
    fn exact_prefix_and_contains() {
        let text = fold("  Preço do PLANO premium? ");
        assert_eq!(
            m(MatchMode::Exact, &["preco do plano premium?"]).find(&text).as_deref(),
            Some("preco do plano premium?")
        );
        assert_eq!(m(MatchMode::Exact, &["preço"]).find(&text), None);
        assert_eq!(m(MatchMode::Prefix, &["PREÇO"]).find(&text).as_deref(), Some("preco"));
        // A prefix must end at a word boundary: "pre" is not the word "preço".
        assert_eq!(m(MatchMode::Prefix, &["pre"]).find(&text), None);
        assert_eq!(
            m(MatchMode::Contains, &["plano premium"]).find(&text).as_deref(),
            Some("plano premium")
        );
        assert_eq!(m(MatchMode::Contains, &["lano"]).find(&text), None);
        assert_eq!(
            m(MatchMode::Contains, &["x", "premium"]).find(&text).as_deref(),
            Some("premium")
        );
        assert_eq!(
            m(MatchMode::Contains, &["hours"])
                .find(&fold("opening-hours?"))
                .as_deref(),
            Some("hours")
        );
    }

    #[test]
    fn regex_over_folded_text_with_limits() {
        let r = m(MatchMode::Regex, &[r"^order\s*#?\d{4,}$"]);
        assert!(r.find(&fold("ORDER #12345")).is_some());
        assert!(r.find(&fold("order 12")).is_none());
        // Accents are folded before matching, so the pattern is written without them.
        assert!(m(MatchMode::Regex, &["cafe"]).find(&fold("CAFÉ")).is_some());
        let too_long = "a".repeat(MAX_PATTERN_CHARS + 1);
        assert!(matches!(
            Matcher::new(MatchMode::Regex, &[too_long]),
            Err(MatchError::PatternTooLong(_))
        ));
        // A pattern whose program exceeds the size limit is refused, not run.
        assert!(matches!(
            Matcher::new(MatchMode::Regex, &[r"\w{1000}\w{1000}".into()]),
            Err(MatchError::BadPattern(..))
        ));
        assert!(matches!(
            Matcher::new(MatchMode::Regex, &["(".into()]),
            Err(MatchError::BadPattern(..))
        ));
    }

    #[test]
    fn keywords_are_validated() {
        assert_eq!(
            Matcher::new(MatchMode::Exact, &[]).unwrap_err(),
            MatchError::KeywordCount
        );
        assert!(matches!(
            Matcher::new(MatchMode::Exact, &["  \u{200B} ".into()]),
            Err(MatchError::BadKeyword(_))
        ));
        let many: Vec<String> = (0..=MAX_KEYWORDS).map(|i| i.to_string()).collect();
        assert_eq!(
            Matcher::new(MatchMode::Contains, &many).unwrap_err(),
            MatchError::KeywordCount
        );
    }

    #[test]
    fn languages() {
        assert!(language_applies(None, None));
        assert!(language_applies(None, Some("de")));
        assert!(language_applies(Some("es"), Some("es_MX")));
        assert!(language_applies(Some("pt_BR"), Some("pt-br")));
        assert!(!language_applies(Some("pt_BR"), Some("pt_PT")));
        assert!(!language_applies(Some("es"), Some("en")));
        assert!(!language_applies(Some("es"), Some("est")));
        assert!(!language_applies(Some("es"), None));
    }
}
