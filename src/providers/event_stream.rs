//! An incremental `text/event-stream` decoder for upstream bodies, run inside the task that
//! reads the body: bytes go in as they arrive, each complete event's `data` comes out as a
//! `&str` borrowed from a buffer reused for the whole stream.
//!
//! It follows the WHATWG event-stream rules that matter for model APIs: lines end with CRLF, LF
//! or CR (also when a CRLF is split across reads); a blank line dispatches; `data` lines are
//! joined with `\n`; one space after the colon is dropped; comments and unknown fields are
//! ignored; an event without `data` dispatches nothing.

/// What the decoder hands over for one event.
pub(crate) struct Event<'a> {
    /// The `event:` field, empty when absent.
    pub name: &'a str,
    pub data: &'a str,
}

/// Why the body cannot be read as an event stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A line that is not UTF-8.
    NotUtf8,
    /// A line longer than the limit (an upstream that never ends its lines).
    LineTooLong(usize),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::NotUtf8 => f.write_str("the event stream is not UTF-8"),
            DecodeError::LineTooLong(limit) => {
                write!(f, "an event-stream line is longer than {limit} bytes")
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Decoder {
    /// Bytes of a line not yet terminated.
    partial: Vec<u8>,
    /// The current event's data lines, joined.
    data: String,
    has_data: bool,
    name: String,
    /// The previous line ended with CR: a LF at the start of the next read belongs to it.
    after_cr: bool,
    max_line: usize,
}

impl Decoder {
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            data: String::new(),
            has_data: false,
            name: String::new(),
            after_cr: false,
            max_line,
        }
    }

    /// Feeds the next bytes of the body; `on_event` gets every event they complete.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = bytes.strip_prefix(b"\n") {
                bytes = rest;
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, rest) = bytes.split_at(end);
            if rest[0] == b'\r' {
                match rest.get(1) {
                    Some(b'\n') => bytes = &rest[2..],
                    Some(_) => bytes = &rest[1..],
                    None => {
                        self.after_cr = true;
                        bytes = &[];
                    }
                }
            } else {
                bytes = &rest[1..];
            }
            if self.partial.is_empty() {
                self.line(line, on_event)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let result = self.line(&whole, on_event);
                whole.clear();
                self.partial = whole;
                result?;
            }
        }
        if !bytes.is_empty() {
            if self.partial.len() + bytes.len() > self.max_line {
                return Err(DecodeError::LineTooLong(self.max_line));
            }
            self.partial.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// The body ended: an event whose blank line never came is dispatched anyway, since some
    /// servers close right after their last `data:` line.
    pub(crate) fn finish(
        &mut self,
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, on_event)?;
        }
        self.dispatch(on_event);
        Ok(())
    }

    fn line(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(Event<'_>),
    ) -> Result<(), DecodeError> {
        if line.is_empty() {
            self.dispatch(on_event);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                let value = std::str::from_utf8(value).map_err(|_| DecodeError::NotUtf8)?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                let value = std::str::from_utf8(value).map_err(|_| DecodeError::NotUtf8)?;
                self.name.clear();
                self.name.push_str(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, on_event: &mut impl FnMut(Event<'_>)) {
        if self.has_data {
            on_event(Event {
                name: &self.name,
                data: &self.data,
            });
        }
        self.data.clear();
        self.name.clear();
        self.has_data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pieces: &[&[u8]]) -> Vec<(String, String)> {
        let mut decoder = Decoder::new(1024);
        let mut out = Vec::new();
        let mut push = |e: Event<'_>| out.push((e.name.to_owned(), e.data.to_owned()));
        for piece in pieces {
            decoder.feed(piece, &mut push).unwrap();
        }
        decoder.finish(&mut push).unwrap();
        out
    }

    fn data(events: &[(String, String)]) -> Vec<&str> {
        events.iter().map(|(_, d)| d.as_str()).collect()
    }

    #[test]
    fn every_line_ending_dispatches_alike() {
        for body in [
            &b"data: a\n\ndata: b\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\r\rdata: b\r\r",
        ] {
            assert_eq!(data(&decode(&[body])), ["a", "b"], "{body:?}");
        }
    }

    #[test]
    fn events_split_at_every_byte_come_out_whole() {
        let body = b"event: x\r\ndata: {\"a\": 1}\r\n\r\n: comment\r\ndata: caf\xc3\xa9\r\n\r\n";
        let whole = decode(&[body]);
        assert_eq!(
            whole,
            [
                ("x".into(), "{\"a\": 1}".into()),
                (String::new(), "café".into())
            ]
        );
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(decode(&[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.iter().map(std::slice::from_ref).collect();
        assert_eq!(decode(&bytes), whole);
    }

    #[test]
    fn data_lines_join_and_one_space_is_dropped() {
        let events = decode(&[b"data:a\ndata:  b\ndata\n\n"]);
        assert_eq!(data(&events), ["a\n b\n"]);
    }

    #[test]
    fn comments_unknown_fields_and_empty_events_are_ignored() {
        let events = decode(&[b": keep-alive\n\nid: 7\nretry: 10\n\nevent: ping\n\ndata: x\n\n"]);
        assert_eq!(events, [(String::new(), "x".to_owned())]);
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(
            data(&decode(&[b"data: a\n\ndata: [DONE]"])),
            ["a", "[DONE]"]
        );
    }

    #[test]
    fn invalid_utf8_and_endless_lines_are_errors() {
        let mut decoder = Decoder::new(16);
        let mut ignore = |_: Event<'_>| {};
        assert_eq!(
            decoder.feed(b"data: \xff\n", &mut ignore),
            Err(DecodeError::NotUtf8)
        );
        let mut decoder = Decoder::new(16);
        decoder.feed(b"data: 0123456", &mut ignore).unwrap();
        assert_eq!(
            decoder.feed(b"789abcdef", &mut ignore),
            Err(DecodeError::LineTooLong(16))
        );
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::{Decoder, Event};
    use crate::test_support::byte_pieces;

    /// An event as an upstream writes it, with any of the three line endings on each line.
    fn written(name: &str, data: &str, endings: &[Index]) -> Vec<u8> {
        let mut chosen = endings
            .iter()
            .cycle()
            .map(|i| ["\n", "\r\n", "\r"][i.index(3)]);
        // A LF right after a lone CR would make the two one line ending.
        let mut previous = "";
        let mut eol = std::iter::from_fn(move || {
            let mut next = chosen.next()?;
            if previous == "\r" && next == "\n" {
                next = "\r\n";
            }
            previous = next;
            Some(next)
        });
        let mut out = String::new();
        if !name.is_empty() {
            out.push_str(&format!("event: {name}{}", eol.next().unwrap_or("\n")));
        }
        for line in data.split('\n') {
            out.push_str(&format!("data: {line}{}", eol.next().unwrap_or("\n")));
        }
        out.push_str(eol.next().unwrap_or("\n"));
        out.into_bytes()
    }

    proptest! {
        #[test]
        fn any_split_of_the_body_gives_the_same_events(
            events in prop::collection::vec(("[a-z]{0,6}", "[^\r]{0,40}"), 0..6),
            endings in prop::collection::vec(any::<Index>(), 1..8),
            cuts in prop::collection::vec(any::<Index>(), 0..16),
        ) {
            let body: Vec<u8> = events
                .iter()
                .flat_map(|(name, data)| written(name, data, &endings))
                .collect();
            let mut decoder = Decoder::new(1 << 20);
            let mut out: Vec<(String, String)> = Vec::new();
            let mut push = |e: Event<'_>| out.push((e.name.to_owned(), e.data.to_owned()));
            for piece in byte_pieces(&body, &cuts) {
                decoder.feed(piece, &mut push).unwrap();
            }
            decoder.finish(&mut push).unwrap();
            prop_assert_eq!(out, events);
        }
    }
}
