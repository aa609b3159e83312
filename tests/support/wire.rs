//! HTTP/1 on the wire for the raw test peers (the recording backend, the scripted backend, the
//! raw client): where a head ends, how its message is framed, a chunked body decoded, a response
//! read whole. Lenient on purpose: these peers must see what the proxy actually sent, so they
//! accept bare LF line endings and odd whitespace rather than refuse them. No I/O here.

/// A message head split into its start line and fields, bytes as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub start: String,
    /// `(name, value)`, the value without its surrounding whitespace.
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Head {
    /// Parses the head in `bytes` (up to and including its empty line).
    pub fn parse(bytes: &[u8]) -> Head {
        let mut lines = bytes
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
        let start = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
        let fields = lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
                let name = String::from_utf8_lossy(&line[..colon]).into_owned();
                let value = line.get(colon + 1..).unwrap_or_default().trim_ascii();
                (name, value.to_vec())
            })
            .collect();
        Head { start, fields }
    }

    /// Every value of the field `name` (case-insensitive), as text.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The status code of a response head.
    pub fn status(&self) -> Option<u16> {
        self.start.get(9..12)?.parse().ok()
    }

    /// The request method of a request head.
    pub fn method(&self) -> &str {
        self.start.split(' ').next().unwrap_or("")
    }

    /// The framing of the body that follows: chunked when `Transfer-Encoding` ends in
    /// `chunked`, else the first `Content-Length` item, else `otherwise`.
    pub fn framing(&self, otherwise: Framing) -> Framing {
        let codings = self.values("transfer-encoding").join(",");
        if let Some(last) = codings.rsplit(',').next()
            && !codings.is_empty()
        {
            return match last.trim().eq_ignore_ascii_case("chunked") {
                true => Framing::Chunked,
                false => Framing::UntilClose,
            };
        }
        match self.values("content-length").first() {
            Some(value) => {
                let first = value.split(',').next().unwrap_or("").trim();
                first.parse().map_or(Framing::UntilClose, Framing::Length)
            }
            None => otherwise,
        }
    }
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Just past the head's empty line (CRLF CRLF, or a bare LF on either line), if it has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = buf[from..].iter().position(|&b| b == b'\n') {
        let newline = from + at;
        match &buf[newline + 1..] {
            [b'\n', ..] => return Some(newline + 2),
            [b'\r', b'\n', ..] => return Some(newline + 3),
            _ => from = newline + 1,
        }
    }
    None
}

/// A chunked body read from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    Incomplete,
    /// The whole body: its length on the wire, its data, its trailer fields (one a line).
    Whole {
        len: usize,
        data: Vec<u8>,
        trailers: Vec<u8>,
    },
    Bad(String),
}

/// Decodes the chunked body at the start of `buf`.
pub fn chunked(buf: &[u8]) -> Chunked {
    let mut data = Vec::new();
    walk_chunks(buf, &mut data).0
}

/// The data of a chunked body that may be cut short or malformed, as far as it reads (a chunk
/// cut short included), and the bytes from where it stops reading.
pub fn chunked_prefix(buf: &[u8]) -> (Vec<u8>, &[u8]) {
    let mut data = Vec::new();
    let (_, at) = walk_chunks(buf, &mut data);
    (data, &buf[at..])
}

/// Reads chunks into `data`; the outcome, and where reading stopped.
fn walk_chunks(buf: &[u8], data: &mut Vec<u8>) -> (Chunked, usize) {
    let mut at = 0;
    loop {
        let Some(line_len) = buf[at..].iter().position(|&b| b == b'\n') else {
            return (Chunked::Incomplete, at);
        };
        let line = &buf[at..at + line_len];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = String::from_utf8_lossy(size.trim_ascii()).into_owned();
        let Ok(size) = usize::from_str_radix(&size, 16) else {
            return (
                Chunked::Bad(format!("chunk size line {:?}", escape(line))),
                at,
            );
        };
        if size == 0 {
            return (trailers(buf, at + line_len + 1, data.clone()), at);
        }
        let Some(chunk) = buf.get(at + line_len + 1..at + line_len + 1 + size) else {
            data.extend_from_slice(&buf[at + line_len + 1..]);
            return (Chunked::Incomplete, buf.len());
        };
        data.extend_from_slice(chunk);
        let end = at + line_len + 1 + size;
        at = match &buf[end..] {
            [b'\r', b'\n', ..] => end + 2,
            [b'\n', ..] => end + 1,
            [] | [b'\r'] => return (Chunked::Incomplete, buf.len()),
            _ => {
                return (
                    Chunked::Bad(format!("no line end after a chunk of {size}")),
                    end,
                );
            }
        };
    }
}

/// The trailer section from `at` to its empty line.
fn trailers(buf: &[u8], at: usize, data: Vec<u8>) -> Chunked {
    let rest = &buf[at..];
    let empty_at_once = rest.starts_with(b"\r\n") || rest.starts_with(b"\n");
    let end = match empty_at_once {
        true => Some(if rest[0] == b'\r' { 2 } else { 1 }),
        false => head_end(rest),
    };
    match end {
        None => Chunked::Incomplete,
        Some(end) => {
            let section = Head::parse(&[&b"\n"[..], &rest[..end]].concat());
            let trailers = section
                .fields
                .iter()
                .map(|(name, value)| format!("{name}: {}\n", escape(value)))
                .collect::<String>();
            Chunked::Whole {
                len: at + end,
                data,
                trailers: trailers.into_bytes(),
            }
        }
    }
}

/// One response read whole, after any interim (1xx) ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub interim: Vec<Head>,
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<u8>,
    /// Its length on the wire, interim responses included.
    pub len: usize,
}

/// A response read from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Incomplete,
    Whole(Response),
    Bad(String),
}

/// Reads the response at the start of `buf`, answering a request that was a `HEAD` or not;
/// `eof` says the connection has ended (a body delimited by the close is then whole).
pub fn response(buf: &[u8], to_head: bool, eof: bool) -> Parsed {
    let mut at = 0;
    let mut interim = Vec::new();
    loop {
        let Some(end) = head_end(&buf[at..]) else {
            return Parsed::Incomplete;
        };
        let head = Head::parse(&buf[at..at + end]);
        if !head.start.starts_with("HTTP/1.") {
            return Parsed::Bad(format!("not a status line: {:?}", head.start));
        }
        at += end;
        let status = head.status().unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            interim.push(head);
            continue;
        }
        let bodiless = to_head || matches!(status, 101 | 204 | 304);
        let framing = match bodiless {
            true => Framing::None,
            false => head.framing(Framing::UntilClose),
        };
        let rest = &buf[at..];
        let (len, body, trailers) = match framing {
            Framing::None => (0, Vec::new(), Vec::new()),
            Framing::Length(n) if rest.len() >= n => (n, rest[..n].to_vec(), Vec::new()),
            Framing::Length(_) => return Parsed::Incomplete,
            Framing::UntilClose if eof => (rest.len(), rest.to_vec(), Vec::new()),
            Framing::UntilClose => return Parsed::Incomplete,
            Framing::Chunked => match chunked(rest) {
                Chunked::Whole {
                    len,
                    data,
                    trailers,
                } => (len, data, trailers),
                Chunked::Incomplete => return Parsed::Incomplete,
                Chunked::Bad(why) => return Parsed::Bad(why),
            },
        };
        return Parsed::Whole(Response {
            interim,
            head,
            body,
            trailers,
            len: at + len,
        });
    }
}

/// `bytes` as readable text: printable ASCII as is, everything else escaped (`\r`, `\t`,
/// `\xNN`).
pub fn escape(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'\r' => "\\r".to_owned(),
            b'\n' => "\\n".to_owned(),
            b'\t' => "\\t".to_owned(),
            b'\\' => "\\\\".to_owned(),
            0x20..=0x7e => char::from(b).to_string(),
            _ => format!("\\x{b:02x}"),
        })
        .collect()
}

/// A head as readable text, a line per CRLF-ended line (any other control byte, a bare LF or CR
/// included, escaped), with the value of each field named in `placeholders` replaced.
pub fn show_head(bytes: &[u8], placeholders: &[(&str, &str)]) -> String {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
        .iter()
        .map(|line| {
            let text = escape(line);
            let name = text.split(':').next().unwrap_or("");
            match placeholders
                .iter()
                .find(|(field, _)| name.eq_ignore_ascii_case(field))
            {
                Some((_, placeholder)) => format!("{name}: {placeholder}"),
                None => text,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
