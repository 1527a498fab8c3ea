//! Citation markers in an answer: `[1]`, `[1][2]`, `[1, 2]`, each with whether it names a
//! source that was sent, for the `done` event.

pub use crate::domain::Citation;

/// Longest bracket content read as a marker (`[12, 13, 14, 15]` fits).
const MAX_MARKER: usize = 32;

/// The markers of `answer`, each index once, in order of first use. Text inside backtick code
/// (`` `a[0]` `` or fenced blocks) is not read: indexing in code is not a citation. Numbers of
/// more than three digits (`[2024]`) are not markers.
pub fn citations(answer: &str, source_count: usize) -> Vec<Citation> {
    let mut out: Vec<Citation> = Vec::new();
    let mut push = |index: u32| {
        if !out.iter().any(|c| c.index == index) {
            let resolves = index >= 1 && usize::try_from(index).is_ok_and(|i| i <= source_count);
            out.push(Citation { index, resolves });
        }
    };
    for (i, segment) in answer.split("```").enumerate() {
        // Odd segments are inside fenced code blocks.
        if i % 2 == 1 {
            continue;
        }
        for (j, prose) in segment.split('`').enumerate() {
            if j % 2 == 1 {
                continue;
            }
            let mut rest = prose;
            while let Some(open) = rest.find('[') {
                rest = &rest[open + 1..];
                let Some(close) = rest.find(']') else { break };
                if close > MAX_MARKER {
                    continue;
                }
                if let Some(indexes) = marker(&rest[..close]) {
                    indexes.into_iter().for_each(&mut push);
                    rest = &rest[close + 1..];
                }
            }
        }
    }
    out
}

/// The indexes of a marker's content (`1`, `1, 2`, `1,2`), or `None` if it is not a marker.
fn marker(inner: &str) -> Option<Vec<u32>> {
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    let valid = |p: &&str| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
    if !parts.iter().all(valid) {
        return None;
    }
    parts.iter().map(|p| p.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(answer: &str, n: usize) -> Vec<(u32, bool)> {
        citations(answer, n)
            .into_iter()
            .map(|c| (c.index, c.resolves))
            .collect()
    }

    #[test]
    fn markers_are_read_in_order_of_first_use() {
        let answer = "Water boils at 100 °C [2]. At altitude it boils lower [1][3], as noted \
                      [2, 4] and [1,2].";
        assert_eq!(
            indexes(answer, 3),
            [(2, true), (1, true), (3, true), (4, false)]
        );
    }

    #[test]
    fn zero_and_unsent_indexes_do_not_resolve() {
        assert_eq!(indexes("See [0] and [7].", 5), [(0, false), (7, false)]);
        assert_eq!(indexes("See [1].", 0), [(1, false)]);
    }

    #[test]
    fn brackets_that_are_not_markers_are_ignored() {
        let answer = "A [link](https://x.y) and [a note], [1a], [], [2024], [1-2], [ 3 ]\n\
                      `v[1]` and\n```\nlet x = a[2];\n```\n[^4] then [5]";
        assert_eq!(indexes(answer, 5), [(3, true), (5, true)]);
    }

    #[test]
    fn unclosed_and_nested_brackets_do_not_confuse_the_scan() {
        assert_eq!(indexes("[[1]] and [2", 2), [(1, true)]);
        assert_eq!(indexes("[", 2), []);
        assert_eq!(indexes("", 2), []);
        assert_eq!(indexes("[é][1]", 1), [(1, true)]);
    }

    #[test]
    fn citations_serialize_for_the_done_event() {
        let json = serde_json::to_value(citations("[1]", 1)).unwrap();
        assert_eq!(json, serde_json::json!([{"index": 1, "resolves": true}]));
    }
}
