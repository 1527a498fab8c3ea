//! Normalisation of streamed text before it is stored or sent.
//!
//! An event stream cannot carry a carriage return, so CR and CRLF become LF. The state survives
//! across chunks: a CRLF split between two upstream chunks is still one line break. NUL, which
//! PostgreSQL text cannot hold, becomes U+FFFD, so what is sent is always what can be stored.

/// Streaming CR/CRLF → LF converter.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineBreaks {
    after_cr: bool,
}

impl LineBreaks {
    /// Appends `chunk` to `out` with CR and CRLF turned into LF.
    pub fn push(&mut self, chunk: &str, out: &mut String) {
        if !(chunk.contains(['\r', '\0']) || self.after_cr && chunk.starts_with('\n')) {
            self.after_cr = false;
            out.push_str(chunk);
            return;
        }
        for c in chunk.chars() {
            match c {
                '\r' => {
                    out.push('\n');
                    self.after_cr = true;
                }
                '\n' if self.after_cr => self.after_cr = false,
                '\0' => {
                    out.push('\u{FFFD}');
                    self.after_cr = false;
                }
                other => {
                    out.push(other);
                    self.after_cr = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineBreaks;

    fn run(chunks: &[&str]) -> String {
        let mut lb = LineBreaks::default();
        let mut out = String::new();
        for c in chunks {
            lb.push(c, &mut out);
        }
        out
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_break() {
        assert_eq!(run(&["a\r", "\nb"]), "a\nb");
    }

    #[test]
    fn lone_cr_becomes_lf() {
        assert_eq!(run(&["a\rb\r\r\nc"]), "a\nb\n\nc");
    }

    #[test]
    fn text_without_cr_is_unchanged() {
        assert_eq!(run(&["  lead", "\n\n", "😀"]), "  lead\n\n😀");
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(run(&["a\0b"]), "a\u{FFFD}b");
    }

    #[test]
    fn lf_after_cr_in_a_later_chunk_is_swallowed_only_once() {
        assert_eq!(run(&["x\r", "\n", "\n"]), "x\n\n");
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::LineBreaks;
    use crate::test_support::pieces;

    /// What normalising does, said the simple way: CRLF and CR become LF, NUL becomes U+FFFD.
    fn normalised(text: &str) -> String {
        text.replace("\r\n", "\n")
            .replace('\r', "\n")
            .replace('\0', "\u{FFFD}")
    }

    proptest! {
        #[test]
        fn any_cut_of_any_text_normalises_as_the_whole(
            text in "[a-c \r\n\0é😀]{0,48}|\\PC{0,48}",
            cuts in prop::collection::vec(any::<Index>(), 0..12),
        ) {
            let mut breaks = LineBreaks::default();
            let mut out = String::new();
            for piece in pieces(&text, &cuts) {
                breaks.push(piece, &mut out);
            }
            prop_assert!(!out.contains('\r'));
            prop_assert_eq!(out, normalised(&text));
        }
    }
}
