//! From bytes to readable text: the charset (header, byte-order mark, `<meta>`, else UTF-8),
//! then the page's main text, through a readability implementation (`dom_smoothie`) with a
//! plain boilerplate-stripping fallback for pages it cannot make sense of.

use dom_query::{Document, Matcher};
use dom_smoothie::{Config, Readability, TextMode};
use encoding_rs::{Encoding, UTF_8, WINDOWS_1252};

/// What kind of text a page is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    Html,
    PlainText,
}

impl PageKind {
    /// The kind for a `Content-Type` value; `None` for anything that is not read. A missing
    /// type is taken as HTML, as browsers do.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | "text/html" | "application/xhtml+xml" => Some(PageKind::Html),
            "text/plain" => Some(PageKind::PlainText),
            _ => None,
        }
    }
}

/// The `charset` parameter of a `Content-Type`-like value (`text/html; charset=utf-8`).
fn charset_param(value: &str) -> Option<&str> {
    value.split(';').skip(1).find_map(|param| {
        let (name, v) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

/// How many leading bytes are searched for a `<meta>` charset declaration.
const META_PRESCAN: usize = 4096;

/// The charset a page declares in its first bytes, through an HTML parser. The head is parsed
/// as windows-1252, which maps every byte and leaves the ASCII of the declaration intact.
fn meta_charset(body: &[u8]) -> Option<&'static Encoding> {
    let head = &body[..body.len().min(META_PRESCAN)];
    let (text, _, _) = WINDOWS_1252.decode(head);
    let doc = Document::from(text.as_ref());
    let matcher = Matcher::new("meta").ok()?;
    let label = doc.select_matcher(&matcher).iter().find_map(|meta| {
        if let Some(charset) = meta.attr("charset") {
            return Some(charset.to_string());
        }
        let is_content_type = meta
            .attr("http-equiv")
            .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-type"));
        let content = meta.attr("content")?;
        if !is_content_type {
            return None;
        }
        charset_param(&content).map(str::to_owned)
    })?;
    // A page cannot declare UTF-16 in its own ASCII-compatible bytes: the standard reads it
    // as UTF-8.
    Encoding::for_label_no_replacement(label.trim().as_bytes()).map(Encoding::output_encoding)
}

/// Decodes a body: the header's charset, else (for HTML) a `<meta>` declaration, else UTF-8;
/// a byte-order mark wins over all of them. Malformed bytes become U+FFFD.
pub fn decode(body: &[u8], content_type: &str, kind: PageKind) -> (String, &'static Encoding) {
    let declared = charset_param(content_type)
        .and_then(|label| Encoding::for_label_no_replacement(label.as_bytes()))
        .or_else(|| {
            (kind == PageKind::Html)
                .then(|| meta_charset(body))
                .flatten()
        })
        .unwrap_or(UTF_8);
    let (text, used, _) = declared.decode(body);
    (text.into_owned(), used)
}

/// A page's readable text and its title.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub title: Option<String>,
    /// Paragraphs separated by blank lines.
    pub text: String,
}

/// Readability output shorter than this is probably a miss: the fallback is tried too.
const MIN_ARTICLE_CHARS: usize = 200;

/// Extracts the main text of a decoded page. CPU-bound: call it off the async threads.
pub fn main_text(body: &str, kind: PageKind, url: &str) -> Extracted {
    match kind {
        PageKind::PlainText => Extracted {
            title: None,
            text: body.to_owned(),
        },
        PageKind::Html => html_main_text(body, url),
    }
}

fn html_main_text(html: &str, url: &str) -> Extracted {
    let config = Config {
        text_mode: TextMode::Formatted,
        // The pipeline needs text, not the page's metadata scripts.
        disable_json_ld: true,
        ..Config::default()
    };
    let article = Readability::new(html, Some(url), Some(config.clone()))
        .or_else(|_| Readability::new(html, None, Some(config)))
        .ok()
        .and_then(|mut r| r.parse().ok());
    let (title, text) = match article {
        Some(a) => (
            Some(a.title.trim().to_owned()).filter(|t| !t.is_empty()),
            a.text_content.to_string(),
        ),
        None => (None, String::new()),
    };
    if text.trim().chars().count() >= MIN_ARTICLE_CHARS {
        return Extracted { title, text };
    }
    let fallback = stripped_text(html);
    Extracted {
        title: title.or(fallback.title),
        // On a page this short readability keeps everything; the fallback at least drops
        // the navigation.
        text: if fallback.text.trim().is_empty() {
            text
        } else {
            fallback.text
        },
    }
}

/// Elements that are never main text.
const BOILERPLATE: &str = "script, style, noscript, template, svg, canvas, iframe, object, \
    embed, nav, header, footer, aside, form, button, select, dialog, [hidden], \
    [aria-hidden=true], [role=navigation], [role=banner], [role=contentinfo]";

/// The body's text with boilerplate elements removed.
fn stripped_text(html: &str) -> Extracted {
    let doc = Document::from(html);
    let title = Matcher::new("title").ok().and_then(|m| {
        let t = doc.select_matcher(&m).text().trim().to_owned();
        (!t.is_empty()).then_some(t)
    });
    if let Ok(m) = Matcher::new(BOILERPLATE) {
        doc.select_matcher(&m).remove();
    }
    let text = match Matcher::new("body") {
        Ok(m) => doc.select_matcher(&m).formatted_text().to_string(),
        Err(_) => String::new(),
    };
    Extracted { title, text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_sorted_into_read_and_skipped() {
        assert_eq!(
            PageKind::from_content_type("text/html; charset=UTF-8"),
            Some(PageKind::Html)
        );
        assert_eq!(
            PageKind::from_content_type("TEXT/PLAIN"),
            Some(PageKind::PlainText)
        );
        assert_eq!(PageKind::from_content_type(""), Some(PageKind::Html));
        assert_eq!(PageKind::from_content_type("application/pdf"), None);
        assert_eq!(PageKind::from_content_type("image/png"), None);
        assert_eq!(PageKind::from_content_type("application/json"), None);
    }

    #[test]
    fn the_header_charset_decodes_latin1() {
        let body = b"<p>Caf\xe9 cr\xe8me br\xfbl\xe9e</p>";
        let (text, enc) = decode(body, "text/html; charset=ISO-8859-1", PageKind::Html);
        assert!(text.contains("Café crème brûlée"), "{text}");
        assert_eq!(enc.name(), "windows-1252");
    }

    #[test]
    fn a_meta_charset_is_found_when_the_header_has_none() {
        let body = b"<html><head><meta charset=\"windows-1252\"><title>x</title></head>\
            <body>na\xefve \x93quotes\x94</body></html>";
        let (text, enc) = decode(body, "text/html", PageKind::Html);
        assert!(text.contains("naïve \u{201c}quotes\u{201d}"), "{text}");
        assert_eq!(enc.name(), "windows-1252");
        let body = b"<html><head><meta http-equiv=\"Content-Type\" \
            content=\"text/html; charset=iso-8859-15\"></head><body>\xa4</body></html>";
        let (text, _) = decode(body, "", PageKind::Html);
        assert!(text.contains('€'), "{text}");
    }

    #[test]
    fn without_a_declaration_the_body_is_utf8_and_bad_bytes_are_replaced() {
        let (text, enc) = decode("héllo \u{2603}".as_bytes(), "text/html", PageKind::Html);
        assert_eq!(text, "héllo \u{2603}");
        assert_eq!(enc.name(), "UTF-8");
        let (text, _) = decode(b"ab\xffcd", "text/plain", PageKind::PlainText);
        assert_eq!(text, "ab\u{fffd}cd");
    }

    #[test]
    fn a_bom_wins_over_the_header() {
        let (text, enc) = decode(b"\xef\xbb\xbfcaf\xc3\xa9", "text/plain; charset=latin1", {
            PageKind::PlainText
        });
        assert_eq!(text, "café");
        assert_eq!(enc.name(), "UTF-8");
    }

    #[test]
    fn boilerplate_is_dropped_from_the_main_text() {
        let html = r#"<html><head><title>Otters</title><style>.x{color:red}</style>
            <script>var tracking = "do not index";</script></head><body>
            <nav><a href="/">Home</a> <a href="/about">About us</a></nav>
            <header>Site banner</header>
            <article><h1>Sea otters</h1>
            <p>Sea otters hold hands while they sleep so that they do not drift apart. This
            behaviour is called rafting and groups can number in the hundreds.</p>
            <p>They use stones as tools to crack open shellfish, one of the few mammals besides
            primates known to do so, and they keep a favourite stone in a pouch of skin.</p>
            </article>
            <footer>Copyright footer text</footer></body></html>"#;
        let out = main_text(html, PageKind::Html, "https://example.org/otters");
        assert!(out.text.contains("hold hands while they sleep"), "{out:?}");
        assert!(out.text.contains("stones as tools"), "{out:?}");
        for junk in ["do not index", "color:red", "About us", "Copyright footer"] {
            assert!(!out.text.contains(junk), "{junk} in {out:?}");
        }
        assert_eq!(out.title.as_deref(), Some("Otters"));
    }

    #[test]
    fn a_short_page_still_yields_its_text() {
        let html = "<html><body><nav>Menu</nav><p>Just one short line.</p></body></html>";
        let out = main_text(html, PageKind::Html, "not a url");
        assert!(out.text.contains("Just one short line."), "{out:?}");
        assert!(!out.text.contains("Menu"), "{out:?}");
    }
}
