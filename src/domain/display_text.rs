//! The rule for short text that other people read as a label: chat names today, and any name or
//! title a later dialect accepts. One rule, so that every dialect refuses the same text.
//!
//! Bidirectional override and isolate controls are refused anywhere in the text: they make a
//! label display in an order other than the one stored (`abc\u{202E}txt.exe` shows as
//! `abcexe.txt`), which is how a name impersonates another. Text that renders as nothing (only
//! spaces and invisible format characters) is refused too: such a label cannot be told apart
//! from an empty one, or from another blank one. Invisible characters between visible ones stay
//! valid: U+200D joins emoji sequences (`👩‍💻`), variation selectors pick an emoji's style.

use crate::error::Error;

/// Bidirectional embedding, override (U+202A-U+202E) and isolate (U+2066-U+2069) controls. The
/// marks U+200E, U+200F and U+061C change no order beyond their own position and stay allowed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether a character draws nothing on its own: white space, and the code points Unicode
/// declares default-ignorable (renderers show nothing for them), plus the blank-looking letters
/// that are often used to fake an empty name.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'                      // soft hyphen
            | '\u{034F}'                    // combining grapheme joiner
            | '\u{061C}'                    // Arabic letter mark
            | '\u{115F}'..='\u{1160}'       // Hangul choseong and jungseong fillers
            | '\u{17B4}'..='\u{17B5}'       // Khmer inherent vowels
            | '\u{180B}'..='\u{180F}'       // Mongolian variation selectors, vowel separator
            | '\u{200B}'..='\u{200F}'       // zero-width space, non-joiner, joiner, marks
            | '\u{202A}'..='\u{202E}'       // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{206F}'       // word joiner, invisible operators, isolates
            | '\u{2800}'                    // Braille pattern blank
            | '\u{3164}'                    // Hangul filler
            | '\u{FE00}'..='\u{FE0F}'       // variation selectors
            | '\u{FEFF}'                    // zero-width no-break space (byte order mark)
            | '\u{FFA0}'                    // halfwidth Hangul filler
            | '\u{FFF0}'..='\u{FFF8}'       // reserved, default-ignorable
            | '\u{1BCA0}'..='\u{1BCA3}'     // shorthand format controls
            | '\u{1D173}'..='\u{1D17A}'     // musical symbol format controls
            | '\u{E0000}'..='\u{E0FFF}'     // tags, variation selectors supplement
        )
}

/// Checks a label people will read and returns it without surrounding white space.
///
/// Refused, as [`Error::Unprocessable`] naming `field`: control characters, bidirectional
/// override and isolate controls, text with no visible character (including empty text), and
/// text longer than `max_chars` characters.
pub fn display_text(field: &str, text: &str, max_chars: usize) -> Result<String, Error> {
    // The length is the text as sent, white space included, as a client can check it.
    if text.chars().nth(max_chars).is_some() {
        return Err(too_long(field, max_chars));
    }
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err(Error::unprocessable(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    if text.chars().any(is_bidi_control) {
        return Err(Error::unprocessable(
            field,
            format!(
                "{field} must not contain bidirectional override or isolate controls \
                 (U+202A-U+202E, U+2066-U+2069)"
            ),
        ));
    }
    if text.is_empty() {
        return Err(Error::unprocessable(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if text.chars().all(is_invisible) {
        return Err(Error::unprocessable(
            field,
            format!("{field} must contain at least one visible character"),
        ));
    }
    Ok(text.to_owned())
}

/// The error for a text longer than `max_chars`.
pub fn too_long(field: &str, max_chars: usize) -> Error {
    Error::unprocessable(
        field,
        format!("{field} is longer than {max_chars} characters"),
    )
}

#[cfg(test)]
mod tests {
    use super::display_text;

    fn refused_field(text: &str) -> Option<String> {
        display_text("name", text, 200)
            .err()
            .and_then(|e| e.field().map(str::to_owned))
    }

    #[test]
    fn ordinary_names_are_kept_without_surrounding_spaces() {
        assert_eq!(
            display_text("name", "  Plans  ", 200).ok().as_deref(),
            Some("Plans")
        );
        assert_eq!(
            display_text("name", "日本語 ok", 200).ok().as_deref(),
            Some("日本語 ok")
        );
    }

    #[test]
    fn emoji_sequences_joined_by_zwj_or_styled_by_a_selector_stay_valid() {
        for name in [
            "👩\u{200D}💻 team",
            "👩\u{200D}💻",
            "👨\u{200D}👩\u{200D}👧",
            "❤\u{FE0F}",
            "🏳\u{FE0F}\u{200D}🌈",
        ] {
            assert_eq!(display_text("name", name, 200).ok().as_deref(), Some(name));
        }
    }

    #[test]
    fn bidirectional_overrides_and_isolates_are_refused_anywhere_naming_the_field() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            assert_eq!(
                refused_field(&format!("invoice{c}fdp.exe")).as_deref(),
                Some("name"),
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn bidirectional_marks_between_letters_stay_valid() {
        assert!(display_text("name", "abc\u{200F}def", 200).is_ok());
    }

    #[test]
    fn text_with_no_visible_character_is_refused() {
        for blank in [
            "",
            "   ",
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}",
            "\u{2060}\u{FEFF}",
            "\u{00AD}",
            "\u{180E}",
            "\u{FE0F}",
            " \u{3000}\u{200B} ",
            "\u{2800}",
            "\u{3164}",
            "\u{E0041}",
        ] {
            assert_eq!(refused_field(blank).as_deref(), Some("name"), "{blank:?}");
        }
    }

    #[test]
    fn control_characters_and_overlong_text_are_refused() {
        assert_eq!(refused_field("a\u{7}b").as_deref(), Some("name"));
        assert_eq!(refused_field(&"x".repeat(201)).as_deref(), Some("name"));
        assert!(display_text("name", &"x".repeat(200), 200).is_ok());
    }

    #[test]
    fn the_message_names_the_field_it_was_given() {
        let message = display_text("title", "\u{202E}", 200)
            .err()
            .map(|e| e.public_message())
            .unwrap_or_default();
        assert!(message.starts_with("title "), "{message}");
    }
}
