//! Passages and their ranking: page texts are cut into paragraph-sized passages, scored
//! against the question with BM25 over all passages of all pages, and the best are chosen,
//! at most [`PER_PAGE`] from one page while other pages have relevant passages left.

use std::collections::{HashMap, HashSet};

use unicode_segmentation::UnicodeSegmentation;

/// Passages are cut at paragraph and sentence ends to at most this many characters.
pub const MAX_PASSAGE_CHARS: usize = 600;
/// Short paragraphs (headings, captions) are joined with what follows up to about this size.
const TARGET_PASSAGE_CHARS: usize = 250;
/// Shorter passages (menu leftovers, "Share", dates) are dropped.
const MIN_PASSAGE_CHARS: usize = 25;
/// Lines shorter than this are taken as headings.
const HEADING_CHARS: usize = 80;
/// Passages taken from one page before every other page's relevant passages are used.
pub const PER_PAGE: usize = 2;

/// BM25's usual parameters: term-frequency saturation and length normalisation.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// The readable text of one page.
#[derive(Clone, Debug)]
pub struct PageText {
    pub title: String,
    pub url: String,
    pub text: String,
}

/// A chosen passage: which page it comes from, its text and its score.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    pub page: usize,
    pub text: String,
    pub score: f64,
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Cuts text into passages: paragraphs (lines), short ones joined, long ones split into
/// windows of whole sentences (and whole words when a sentence alone is too long).
pub fn passages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        if chars(current) >= MIN_PASSAGE_CHARS {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
    };
    for line in text.lines() {
        let paragraph = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if paragraph.is_empty() {
            continue;
        }
        let len = chars(&paragraph);
        if len > MAX_PASSAGE_CHARS {
            flush(&mut current, &mut out);
            out.extend(
                windows(&paragraph)
                    .into_iter()
                    .filter(|w| chars(w) >= MIN_PASSAGE_CHARS),
            );
            continue;
        }
        // A short line after substantial text is likely a heading: it opens the next passage.
        let heading_like = len < HEADING_CHARS && chars(&current) >= 4 * MIN_PASSAGE_CHARS;
        if !current.is_empty() && (heading_like || chars(&current) + 1 + len > MAX_PASSAGE_CHARS) {
            flush(&mut current, &mut out);
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(&paragraph);
        if chars(&current) >= TARGET_PASSAGE_CHARS {
            flush(&mut current, &mut out);
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Splits a long paragraph into windows of whole sentences of at most the passage size.
fn windows(paragraph: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for sentence in paragraph.split_sentence_bounds() {
        let pieces = if chars(sentence) > MAX_PASSAGE_CHARS {
            word_windows(sentence)
        } else {
            vec![sentence.to_owned()]
        };
        for piece in pieces {
            if chars(&current) + chars(&piece) > MAX_PASSAGE_CHARS && !current.is_empty() {
                out.push(current.trim().to_owned());
                current.clear();
            }
            current.push_str(&piece);
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// Splits an overlong sentence at word boundaries.
fn word_windows(sentence: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for word in sentence.split_word_bounds() {
        if chars(&current) + chars(word) > MAX_PASSAGE_CHARS && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        if chars(word) > MAX_PASSAGE_CHARS {
            // A "word" this long is not prose (a hash, a data URL): keep its start only.
            current.extend(word.chars().take(MAX_PASSAGE_CHARS));
        } else {
            current.push_str(word);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Words that carry no topic; left out of the query.
const STOPWORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "did", "do", "does", "for",
    "from", "how", "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "tell", "that",
    "the", "their", "there", "this", "to", "was", "what", "when", "where", "which", "who", "why",
    "will", "with", "you", "your",
];

/// Lower-cased alphanumeric words.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn query_terms(query: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    tokens(query)
        .filter(|t| !STOPWORDS.contains(&t.as_str()))
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// BM25 scores of `docs` (as token lists) for `terms`.
fn bm25(terms: &[String], docs: &[Vec<String>]) -> Vec<f64> {
    let n = docs.len() as f64;
    if docs.is_empty() {
        return Vec::new();
    }
    let avg_len = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let avg_len = avg_len.max(1.0);
    let idf: Vec<f64> = terms
        .iter()
        .map(|t| {
            let with = docs.iter().filter(|d| d.contains(t)).count() as f64;
            // The "+1" form keeps idf positive for terms found in most passages.
            (1.0 + (n - with + 0.5) / (with + 0.5)).ln()
        })
        .collect();
    docs.iter()
        .map(|doc| {
            let mut freq: HashMap<&str, f64> = HashMap::new();
            for token in doc {
                *freq.entry(token.as_str()).or_default() += 1.0;
            }
            let len_norm = 1.0 - B + B * doc.len() as f64 / avg_len;
            terms
                .iter()
                .zip(&idf)
                .map(|(t, idf)| {
                    let f = freq.get(t.as_str()).copied().unwrap_or_default();
                    idf * f * (K1 + 1.0) / (f + K1 * len_norm)
                })
                .sum()
        })
        .collect()
}

/// The `max` best passages of `pages` for `query`, best first.
///
/// Passages that match no query word are used only when nothing matches at all (a question in
/// another language than the pages, say), and then only the first passage of each page.
pub fn rank(query: &str, pages: &[PageText], max: usize) -> Vec<Ranked> {
    let mut candidates: Vec<(usize, usize, String)> = Vec::new();
    let mut seen = HashSet::new();
    for (page, p) in pages.iter().enumerate() {
        for (position, text) in passages(&p.text).into_iter().enumerate() {
            // The same boilerplate sentence on several pages is one passage.
            if seen.insert(text.to_lowercase()) {
                candidates.push((page, position, text));
            }
        }
    }
    let docs: Vec<Vec<String>> = candidates
        .iter()
        .map(|(_, _, t)| tokens(t).collect())
        .collect();
    let scores = bm25(&query_terms(query), &docs);
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Best score first; ties go to the better search result, then to the earlier passage.
    order.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(candidates[a].0.cmp(&candidates[b].0))
            .then(candidates[a].1.cmp(&candidates[b].1))
    });
    let relevant: Vec<usize> = order.iter().copied().filter(|&i| scores[i] > 0.0).collect();
    let pool = if relevant.is_empty() {
        order
            .into_iter()
            .filter(|&i| candidates[i].1 == 0)
            .collect()
    } else {
        relevant
    };
    // Positions in `pool`, which is best first.
    let mut chosen: Vec<usize> = Vec::new();
    let mut per_page: HashMap<usize, usize> = HashMap::new();
    for (position, &i) in pool.iter().enumerate() {
        if chosen.len() == max {
            break;
        }
        let taken = per_page.entry(candidates[i].0).or_default();
        if *taken < PER_PAGE {
            *taken += 1;
            chosen.push(position);
        }
    }
    // Not enough pages to spread over: fill up with the best of what is left.
    for position in 0..pool.len() {
        if chosen.len() == max {
            break;
        }
        if !chosen.contains(&position) {
            chosen.push(position);
        }
    }
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|position| {
            let i = pool[position];
            Ranked {
                page: candidates[i].0,
                text: candidates[i].2.clone(),
                score: scores[i],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> PageText {
        PageText {
            title: String::new(),
            url: String::new(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn paragraphs_become_bounded_passages() {
        let long = "This sentence is about rivers and their deltas. ".repeat(40);
        let text = format!(
            "Short heading\n\nA paragraph of ordinary length that says \
             something useful about the topic at hand, enough to stand alone.\n\n{long}\n\nok"
        );
        let out = passages(&text);
        assert!(out.len() > 3, "{out:?}");
        for p in &out {
            assert!(chars(p) <= MAX_PASSAGE_CHARS, "{} chars", chars(p));
            assert!(chars(p) >= MIN_PASSAGE_CHARS, "{p}");
        }
        assert!(out[0].starts_with("Short heading A paragraph"), "{out:?}");
        assert!(out.iter().all(|p| p != "ok"));
    }

    #[test]
    fn a_sentence_without_ends_is_cut_at_words() {
        let text = "word ".repeat(500);
        let out = passages(&text);
        assert!(out.len() >= 4);
        assert!(out.iter().all(|p| chars(p) <= MAX_PASSAGE_CHARS));
        let cjk = "漢".repeat(2000);
        assert!(passages(&cjk).iter().all(|p| chars(p) <= MAX_PASSAGE_CHARS));
    }

    #[test]
    fn bm25_prefers_the_passage_about_the_query() {
        let pages = [
            page("Cookies help us deliver our services. By using the site you accept them."),
            page(
                "The boiling point of water at sea level is 100 degrees Celsius; at altitude \
                 water boils at a lower temperature because the air pressure is lower.\n\n\
                 Subscribe to our newsletter for more science facts every week of the year.",
            ),
        ];
        let out = rank("boiling point of water at altitude", &pages, 1);
        assert_eq!(out.len(), 1);
        assert!(out[0].text.contains("boiling point"), "{out:?}");
        assert_eq!(out[0].page, 1);
        assert!(out[0].score > 0.0);
    }

    #[test]
    fn one_page_gives_at_most_two_passages_while_others_have_some() {
        let strong = (0..5)
            .map(|i| {
                format!(
                    "Rust ownership rule number {i} explains how borrowing works in Rust. {}",
                    "This sentence only pads the paragraph to a realistic length. ".repeat(4)
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let pages = [
            page(&strong),
            page("Ownership in Rust is checked at compile time by the borrow checker, always."),
            page("A page about gardening tomatoes in the summer months in a small garden."),
        ];
        let out = rank("rust ownership borrowing", &pages, 4);
        assert_eq!(out.len(), 4, "{out:?}");
        let from_first = out.iter().filter(|r| r.page == 0).count();
        assert_eq!(
            from_first, 3,
            "filled up from page 0 once page 1 ran out: {out:?}"
        );
        assert!(out.iter().any(|r| r.page == 1));
        assert!(
            out.iter().all(|r| r.page != 2),
            "irrelevant page left out: {out:?}"
        );
        assert!(out.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn without_any_match_the_lead_passages_are_used() {
        let pages = [
            page("Erster Absatz über etwas ganz anderes, lang genug für eine Passage.\n\nZweiter."),
            page("Premier paragraphe sur un tout autre sujet, assez long pour compter."),
        ];
        let out = rank("quantum chromodynamics", &pages, 5);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].page, 0);
        assert_eq!(out[1].page, 1);
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(rank("anything", &[], 5).is_empty());
        assert!(rank("anything", &[page("")], 5).is_empty());
    }
}
