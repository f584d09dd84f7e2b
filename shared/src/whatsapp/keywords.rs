//! Consent keywords in inbound text: STOP and UNSUBSCRIBE opt out, START opts back in.
//!
//! Only a message that is the keyword counts ("stop!", " Stop. "); a keyword inside a sentence
//! ("please stop", "don't stop") is ordinary conversation, not an instruction.

/// What a consent keyword asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentKeyword {
    OptOut,
    OptIn,
}

const OPT_OUT: &[&str] = &["STOP", "UNSUBSCRIBE"];
const OPT_IN: &[&str] = &["START"];

/// The keyword `text` is, if any: trimmed, case-insensitive, trailing punctuation ignored.
pub fn consent_keyword(text: &str) -> Option<ConsentKeyword> {
    let word = text
        .trim_matches(is_blank)
        .trim_end_matches(|c: char| is_blank(c) || is_punctuation(c));
    let is = |list: &[&str]| list.iter().any(|k| k.eq_ignore_ascii_case(word));
    if is(OPT_OUT) {
        Some(ConsentKeyword::OptOut)
    } else if is(OPT_IN) {
        Some(ConsentKeyword::OptIn)
    } else {
        None
    }
}

/// Whitespace, plus the invisible characters keyboards and copy-paste leave behind.
fn is_blank(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}')
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || matches!(c, '…' | '！' | '？' | '。' | '，' | '¡' | '¿')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords() {
        use ConsentKeyword::{OptIn, OptOut};
        let cases: &[(&str, Option<ConsentKeyword>)] = &[
            ("STOP", Some(OptOut)),
            ("stop", Some(OptOut)),
            ("Stop", Some(OptOut)),
            ("  sToP \n", Some(OptOut)),
            ("stop!", Some(OptOut)),
            ("STOP!!!", Some(OptOut)),
            ("stop.", Some(OptOut)),
            ("Stop !", Some(OptOut)),
            ("stop?!", Some(OptOut)),
            ("stop…", Some(OptOut)),
            ("stop！", Some(OptOut)),
            ("\u{200B}STOP\u{FEFF}", Some(OptOut)),
            ("\u{00A0}stop\u{00A0}", Some(OptOut)),
            ("UNSUBSCRIBE", Some(OptOut)),
            ("unsubscribe.", Some(OptOut)),
            ("START", Some(OptIn)),
            ("start", Some(OptIn)),
            (" Start! ", Some(OptIn)),
            ("please stop", None),
            ("stop please", None),
            ("don't stop", None),
            ("STOP ALL", None),
            ("stopp", None),
            ("sto p", None),
            ("s.t.o.p", None),
            ("!stop", None),
            ("\"stop\"", None),
            ("started", None),
            ("restart", None),
            ("unsubscribed", None),
            ("STOP\nthanks", None),
            ("", None),
            ("   ", None),
            ("!!!", None),
            ("ＳＴＯＰ", None),
        ];
        for (text, expected) in cases {
            assert_eq!(consent_keyword(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn any_input_is_safe() {
        for text in ["\u{0}", "é", "🛑", "stop🛑", &"stop".repeat(10_000), "\u{10FFFF}!"] {
            let _ = consent_keyword(text);
        }
        assert_eq!(consent_keyword("stop🛑"), None);
    }
}
