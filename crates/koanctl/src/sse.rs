//! A minimal reader of Server-Sent Events.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field (`message` when absent).
    pub(crate) event: String,
    /// The `data:` lines, joined by `\n`.
    pub(crate) data: String,
}

/// The longest line, and the largest event, taken from a stream: 16 MiB, as for an
/// answer. (1 MiB stopped `koanctl events` at the first event of 1.1 MB a service
/// emitted, found by a probe; an endless line is still cut.)
pub(crate) const MAX_EVENT: usize = 16 << 20;

/// A line or an event past [`MAX_EVENT`]: not what a koan host sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// Turns chunks of an event stream into events. Each byte is looked at once: only a
/// chunk's own bytes are searched for line ends, the line so far is held apart.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    /// The line so far, without its end.
    line: Vec<u8>,
    event: Option<String>,
    /// The `data:` lines so far, joined by `\n`; `None` before the first.
    data: Option<String>,
}

impl SseParser {
    /// Feeds `chunk`, returning the events it completes; [`TooLarge`] when a line or
    /// an event grows past [`MAX_EVENT`].
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, TooLarge> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.extend_line(&rest[..i])?;
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.line);
            if let Some(ev) = self.line(&line)? {
                out.push(ev);
            }
        }
        self.extend_line(rest)?;
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if bytes.len() > MAX_EVENT - self.line.len() {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Takes one whole line, answering the event an empty line completes.
    fn line(&mut self, raw: &[u8]) -> Result<Option<SseEvent>, TooLarge> {
        let line = String::from_utf8_lossy(raw);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            let event = self.event.take();
            return Ok(self.data.take().map(|data| SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            }));
        }
        if line.starts_with(':') {
            return Ok(None); // a comment: the keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut self.data {
                Some(data) if value.len() >= MAX_EVENT - data.len() => return Err(TooLarge),
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.event = Some(value.to_owned()),
            _ => {} // id, retry: not needed here
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks() -> Result<(), TooLarge> {
        let mut p = SseParser::default();
        assert!(
            p.feed(b": keep-alive\n\nevent: Tick\nid: 1\nda")?
                .is_empty()
        );
        let got = p.feed(b"ta: {\"a\":1}\r\ndata: x\n\ndata:y\n\n")?;
        assert_eq!(
            got,
            [
                SseEvent {
                    event: "Tick".into(),
                    data: "{\"a\":1}\nx".into()
                },
                SseEvent {
                    event: "message".into(),
                    data: "y".into()
                },
            ]
        );
        // An empty `data:` still makes an event.
        assert_eq!(p.feed(b"data:\n\n")?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_line_or_an_event_past_the_cap_is_refused() -> Result<(), TooLarge> {
        let mut p = SseParser::default();
        let half = vec![b'x'; MAX_EVENT / 2];
        p.feed(&half)?;
        p.feed(&half[1..])?;
        assert_eq!(p.feed(b"yy"), Err(TooLarge));

        let mut p = SseParser::default();
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&half);
        line.push(b'\n');
        p.feed(&line)?;
        assert_eq!(p.feed(&line), Err(TooLarge));

        // Many lines in one chunk, and the stream goes on after them.
        let mut p = SseParser::default();
        let many = b"data: 1\n\n".repeat(10_000);
        assert_eq!(p.feed(&many)?.len(), 10_000);
        Ok(())
    }
}
