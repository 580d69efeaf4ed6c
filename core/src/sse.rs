//! A server-sent events (`text/event-stream`) reader: feed it bytes as they
//! arrive, take complete events out. Used by the CLI (`tessera events`) and the
//! tests; the CA server writes the format itself.

/// One complete server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `event:` field (`message` if absent).
    pub event: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Incremental parser. Comment lines (`:` heartbeats) and `retry:` are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
    /// Longest line accepted, bytes; a longer one is an error.
    max_line: usize,
}

/// A line longer than the parser accepts.
#[derive(Debug, thiserror::Error)]
#[error("server-sent event line longer than {0} bytes")]
pub struct SseLineTooLong(pub usize);

impl SseParser {
    /// A parser accepting lines up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            ..Self::default()
        }
    }

    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseLineTooLong> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data {
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    out.push(ev);
                }
                self.cur = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "id" => self.cur.id = Some(value.to_owned()),
                "event" => self.cur.event = value.to_owned(),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        if self.buf.len() > self.max_line {
            return Err(SseLineTooLong(self.max_line));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_comments() {
        let mut p = SseParser::new(1024);
        assert!(
            p.feed(b": keepalive\n\nid: 3\nevent: a.b\nda")
                .unwrap()
                .is_empty()
        );
        let evs = p.feed(b"ta: {\"x\":1}\n\nid: 4\ndata: y\n\n").unwrap();
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].id.as_deref(), Some("3"));
        assert_eq!(evs[0].event, "a.b");
        assert_eq!(evs[0].data, "{\"x\":1}");
        assert_eq!(evs[1].event, "message");
        assert!(p.feed(&[b'z'; 2000]).is_err());
    }
}
