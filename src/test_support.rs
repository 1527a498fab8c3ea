//! Helpers for the property tests.

use proptest::sample::Index;

/// `text` cut at the character boundaries nearest to `cuts`: every piece non-empty, in order,
/// together the whole text.
pub(crate) fn pieces<'a>(text: &'a str, cuts: &[Index]) -> Vec<&'a str> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|cut| cut.index(text.len() + 1))
        .map(|mut i| {
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// `bytes` cut at `cuts`, anywhere (inside characters too).
pub(crate) fn byte_pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}
