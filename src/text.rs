//! Input hygiene for free text: names, reasons, descriptions — and, for features that take
//! formatted text (announcements, notification bodies), HTML sanitising.
//!
//! Plain text is checked, never rewritten behind the caller's back: it is NFC-normalised and
//! trimmed, and refused when it holds characters that can spoof what a reader sees — control
//! characters, bidirectional overrides and isolates (U+202A–U+202E, U+2066–U+2069, the marks
//! U+200E, U+200F, U+061C), invisible and zero-width characters (U+200B, U+200C, U+2060–U+2064,
//! U+FEFF, U+00AD, U+180E, U+034F, the tag block), and noncharacters. A zero-width joiner (U+200D)
//! is allowed only between pictographs, where it joins emoji sequences. Plain text is never HTML:
//! whatever renders it must escape it.
//!
//! Text from a third party (a social provider's display name) is cleaned instead
//! ([`clean_lossy`]): the same characters are dropped rather than refused.
//!
//! Rich text is HTML and goes through [`sanitize_html`] (ammonia's allowlist).

use unicode_normalization::UnicodeNormalization as _;

/// What a piece of plain text may hold.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Characters, after normalisation and trimming.
    pub max_chars: usize,
    /// Line breaks (`\n`, `\r\n` becomes `\n`) and tabs allowed.
    pub multiline: bool,
    /// The empty string (after trimming) allowed.
    pub allow_empty: bool,
}

impl Rules {
    /// One line, 1 to `max_chars` characters.
    pub const fn line(max_chars: usize) -> Self {
        Self {
            max_chars,
            multiline: false,
            allow_empty: false,
        }
    }

    /// Several lines, 1 to `max_chars` characters.
    pub const fn lines(max_chars: usize) -> Self {
        Self {
            max_chars,
            multiline: true,
            allow_empty: false,
        }
    }
}

/// Why a text was refused; `as_str` is stable (a metric label), `message` is for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Empty,
    TooLong(usize),
    ControlCharacter,
    Invisible,
    Bidi,
}

impl Rejection {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::TooLong(_) => "too_long",
            Self::ControlCharacter => "control_character",
            Self::Invisible => "invisible_character",
            Self::Bidi => "bidi_control",
        }
    }

    pub fn message(self) -> String {
        match self {
            Self::Empty => "must not be empty".to_owned(),
            Self::TooLong(max) => format!("must be at most {max} characters"),
            Self::ControlCharacter => "must not contain control characters".to_owned(),
            Self::Invisible => "must not contain invisible or zero-width characters".to_owned(),
            Self::Bidi => "must not contain text-direction control characters".to_owned(),
        }
    }
}

/// Bidirectional formatting characters: they reorder what a reader sees (`Trojan Source`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that render as nothing (or nearly) and so can hide in, or split, a name.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'
            | '\u{200C}'
            | '\u{2060}'..='\u{2064}'
            | '\u{206A}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{E0000}'..='\u{E007F}'
    ) || is_noncharacter(c)
}

fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// Pictographs (and the variation selector that makes a character one), between which a zero-width
/// joiner builds an emoji sequence.
fn is_pictographic(c: char) -> bool {
    matches!(
        c,
        '\u{2600}'..='\u{27BF}' | '\u{2B00}'..='\u{2BFF}' | '\u{FE0F}' | '\u{1F000}'..='\u{1FAFF}'
    ) || ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

/// Why the character at `i` may not stand in plain text (`None`: it may). Line breaks and tabs
/// are control characters here; [`plain`] allows them where several lines are.
fn refusal(chars: &[char], i: usize) -> Option<Rejection> {
    let c = chars[i];
    if is_bidi_control(c) {
        return Some(Rejection::Bidi);
    }
    if c == '\u{200D}' {
        let joins_pictographs = i > 0
            && is_pictographic(chars[i - 1])
            && chars.get(i + 1).is_some_and(|&next| is_pictographic(next));
        return (!joins_pictographs).then_some(Rejection::Invisible);
    }
    if is_invisible(c) {
        return Some(Rejection::Invisible);
    }
    (c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')).then_some(Rejection::ControlCharacter)
}

/// Checks and normalises plain text: NFC, trimmed, `\r\n` as `\n`.
///
/// # Errors
/// The first reason the text cannot be taken.
pub fn plain(input: &str, rules: Rules) -> Result<String, Rejection> {
    let normalized: String = input.replace("\r\n", "\n").nfc().collect();
    let text = normalized.trim();
    let chars: Vec<char> = text.chars().collect();
    for i in 0..chars.len() {
        match refusal(&chars, i) {
            Some(Rejection::ControlCharacter)
                if rules.multiline && matches!(chars[i], '\n' | '\t') => {}
            Some(rejection) => return Err(rejection),
            None => {}
        }
    }
    if chars.is_empty() && !rules.allow_empty {
        return Err(Rejection::Empty);
    }
    if chars.len() > rules.max_chars {
        return Err(Rejection::TooLong(rules.max_chars));
    }
    Ok(text.to_owned())
}

/// Third-party text made acceptable: what [`plain`] would refuse is dropped (line breaks become
/// spaces), then it is trimmed and cut to `max_chars`. `None` when nothing is left.
pub fn clean_lossy(input: &str, max_chars: usize) -> Option<String> {
    let normalized: String = input.nfc().collect();
    let chars: Vec<char> = normalized.chars().collect();
    let mut out = String::with_capacity(normalized.len());
    for (i, &c) in chars.iter().enumerate() {
        match refusal(&chars, i) {
            None => out.push(c),
            Some(Rejection::ControlCharacter) if c.is_whitespace() => out.push(' '),
            Some(_) => {}
        }
    }
    let cut: String = out.trim().chars().take(max_chars).collect();
    let cut = cut.trim_end().to_owned();
    (!cut.is_empty()).then_some(cut)
}

/// Plain text made safe to place in HTML text or a quoted attribute.
pub fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Formatted text (HTML) reduced to a safe subset: ammonia's allowlist of tags and attributes,
/// no scripts, styles, event handlers or `javascript:` URLs; links get
/// `rel="noopener noreferrer nofollow"`.
pub fn sanitize_html(input: &str) -> String {
    ammonia::Builder::default()
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(input)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_normalised_trimmed_and_spoofing_characters_are_refused() {
        // "é" as e + combining acute becomes one character.
        assert_eq!(
            plain("  Ame\u{301}lie ", Rules::line(10)),
            Ok("Amélie".to_owned())
        );
        assert_eq!(plain("a\u{202E}b", Rules::line(10)), Err(Rejection::Bidi));
        assert_eq!(plain("a\u{2066}b", Rules::line(10)), Err(Rejection::Bidi));
        assert_eq!(
            plain("ad\u{200B}min", Rules::line(10)),
            Err(Rejection::Invisible)
        );
        assert_eq!(
            plain("ad\u{200D}min", Rules::line(10)),
            Err(Rejection::Invisible)
        );
        assert_eq!(
            plain("a\u{FEFF}", Rules::line(10)),
            Err(Rejection::Invisible)
        );
        assert_eq!(
            plain("a\u{E0041}", Rules::line(10)),
            Err(Rejection::Invisible)
        );
        assert_eq!(
            plain("a\u{0}b", Rules::line(10)),
            Err(Rejection::ControlCharacter)
        );
        assert_eq!(
            plain("a\nb", Rules::line(10)),
            Err(Rejection::ControlCharacter)
        );
        assert_eq!(plain("a\r\nb", Rules::lines(10)), Ok("a\nb".to_owned()));
        assert_eq!(plain("   ", Rules::line(10)), Err(Rejection::Empty));
        assert_eq!(plain("abcdef", Rules::line(5)), Err(Rejection::TooLong(5)));
        // An emoji family keeps its joiners.
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}";
        assert_eq!(plain(family, Rules::line(10)), Ok(family.to_owned()));
        // Scripts other than Latin are fine.
        assert_eq!(
            plain("Łukasz 山田", Rules::line(20)),
            Ok("Łukasz 山田".to_owned())
        );
    }

    #[test]
    fn third_party_text_is_cleaned_not_refused() {
        assert_eq!(
            clean_lossy(" Ev\u{202E}il\u{200B} Name\n", 100),
            Some("Evil Name".to_owned())
        );
        assert_eq!(clean_lossy("\u{200B}\u{202E}", 100), None);
        assert_eq!(clean_lossy("abcdef", 3), Some("abc".to_owned()));
    }

    #[test]
    fn html_keeps_formatting_and_loses_scripts() {
        let clean = sanitize_html(
            "<p onclick=\"x()\">Hi <b>there</b><script>alert(1)</script> <a href=\"javascript:alert(1)\">x</a> <a href=\"https://example.com\">ok</a></p>",
        );
        assert!(clean.contains("<b>there</b>"), "{clean}");
        assert!(!clean.contains("script"), "{clean}");
        assert!(!clean.contains("onclick"), "{clean}");
        assert!(!clean.contains("javascript"), "{clean}");
        assert!(
            clean.contains("rel=\"noopener noreferrer nofollow\""),
            "{clean}"
        );
    }
}
