//! The PostgreSQL frontend/backend protocol (version 3.0) as the gateway needs it: splitting
//! a byte stream into frames, reading the few message bodies policy and masking look at, and
//! writing the messages the gateway itself originates.
//!
//! Frames are kept as the bytes that arrived (`Bytes`, no copy): the gateway decides on a
//! parsed view and forwards the original frame, so what it authorised is exactly what the
//! server receives. Every length is checked against a limit before anything is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Protocol 3.0 in the startup packet.
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;

/// The largest startup packet accepted (PostgreSQL's own limit is 10,000 bytes).
const MAX_STARTUP: usize = 10_000;

/// Why a byte stream is not a valid protocol stream. Errors name what was wrong, never data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes is larger than the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("unsupported protocol version {major}.{minor}")]
    Version { major: i32, minor: i32 },
}

/// One message: its type byte and body (without the length word).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

impl Frame {
    /// The frame as it travels: tag, length, body.
    pub fn write_to(&self, out: &mut BytesMut) {
        out.reserve(5 + self.body.len());
        out.put_u8(self.tag);
        out.put_i32(4 + self.body.len() as i32);
        out.extend_from_slice(&self.body);
    }
}

/// Takes one complete tagged frame off the front of `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, limit: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(WireError::BadLength(len as i64));
    }
    let len = len as usize;
    if len > limit {
        return Err(WireError::TooLarge { len, limit });
    }
    if buf.len() < 1 + len {
        buf.reserve(1 + len - buf.len());
        return Ok(None);
    }
    let tag = buf[0];
    let mut frame = buf.split_to(1 + len);
    frame.advance(5);
    Ok(Some(Frame {
        tag,
        body: frame.freeze(),
    }))
}

/// The first packet of a connection (it has no type byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    Ssl,
    GssEnc,
    Cancel {
        pid: i32,
        secret: Bytes,
    },
    Start {
        minor: i32,
        params: Vec<(String, String)>,
    },
}

/// Takes the startup packet off the front of `buf`, if complete.
pub fn next_startup(buf: &mut BytesMut) -> Result<Option<Startup>, WireError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(8..=MAX_STARTUP as i32).contains(&len) {
        return Err(WireError::BadLength(len as i64));
    }
    if buf.len() < len as usize {
        return Ok(None);
    }
    let mut packet = buf.split_to(len as usize).freeze();
    packet.advance(4);
    let code = packet.get_i32();
    match code {
        SSL_REQUEST if packet.is_empty() => Ok(Some(Startup::Ssl)),
        GSSENC_REQUEST if packet.is_empty() => Ok(Some(Startup::GssEnc)),
        // Protocol 3.2 allows secrets of up to 256 bytes.
        CANCEL_REQUEST if (8..=260).contains(&packet.len()) => {
            let pid = packet.get_i32();
            Ok(Some(Startup::Cancel {
                pid,
                secret: packet,
            }))
        }
        code if code >> 16 == 3 => {
            let mut params = Vec::new();
            let mut body = Reader::new(packet);
            loop {
                let key = body.cstr("startup")?;
                if key.is_empty() {
                    break;
                }
                let value = body.cstr("startup")?;
                params.push((key, value));
            }
            if !body.is_empty() {
                return Err(WireError::Malformed { what: "startup" });
            }
            Ok(Some(Startup::Start {
                minor: code & 0xffff,
                params,
            }))
        }
        code => Err(WireError::Version {
            major: code >> 16,
            minor: code & 0xffff,
        }),
    }
}

/// A cursor over a message body.
pub struct Reader {
    buf: Bytes,
    what: &'static str,
}

impl Reader {
    pub fn new(buf: Bytes) -> Reader {
        Reader { buf, what: "" }
    }

    pub fn of(frame: &Frame, what: &'static str) -> Reader {
        Reader {
            buf: frame.body.clone(),
            what,
        }
    }

    fn bad(&self, what: &'static str) -> WireError {
        WireError::Malformed {
            what: if self.what.is_empty() {
                what
            } else {
                self.what
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A NUL-terminated string; must be UTF-8.
    pub fn cstr(&mut self, what: &'static str) -> Result<String, WireError> {
        let bytes = self.cbytes(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.bad(what))
    }

    /// A NUL-terminated string's bytes.
    pub fn cbytes(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let end = memchr(&self.buf).ok_or_else(|| self.bad(what))?;
        let s = self.buf.split_to(end);
        self.buf.advance(1);
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        if self.buf.is_empty() {
            return Err(self.bad(what));
        }
        Ok(self.buf.get_u8())
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        if self.buf.len() < 2 {
            return Err(self.bad(what));
        }
        Ok(self.buf.get_i16())
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        if self.buf.len() < 4 {
            return Err(self.bad(what));
        }
        Ok(self.buf.get_i32())
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, WireError> {
        if self.buf.len() < n {
            return Err(self.bad(what));
        }
        Ok(self.buf.split_to(n))
    }

    /// A length-prefixed value (-1 = NULL).
    pub fn value(&mut self, what: &'static str) -> Result<Option<Bytes>, WireError> {
        let len = self.i32(what)?;
        match len {
            -1 => Ok(None),
            n if n < 0 => Err(self.bad(what)),
            n => self.bytes(n as usize, what).map(Some),
        }
    }

    pub fn rest(self) -> Bytes {
        self.buf
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == 0)
}

// ---- client messages the gateway reads ----

/// `P`: Parse.
#[derive(Debug)]
pub struct Parse {
    pub name: String,
    pub query: String,
}

pub fn parse_parse(frame: &Frame) -> Result<Parse, WireError> {
    let mut r = Reader::of(frame, "Parse");
    let name = r.cstr("Parse")?;
    let query = r.cstr("Parse")?;
    let n = r.i16("Parse")?;
    if n < 0 || r.rest().len() != n as usize * 4 {
        return Err(WireError::Malformed { what: "Parse" });
    }
    Ok(Parse { name, query })
}

/// `B`: Bind, the parts the gateway needs.
#[derive(Debug)]
pub struct Bind {
    pub portal: String,
    pub statement: String,
    /// The result-column format codes as sent: empty (all text), one (for all), or one per
    /// column.
    pub result_formats: Vec<i16>,
    /// The parameter values as sent (slices of the frame, not copies) and their format
    /// codes: read only when a held statement shows them to approvers.
    pub parameters: Vec<Option<Bytes>>,
    pub parameter_formats: Vec<i16>,
}

impl Bind {
    /// The parameter values as a person reads them: text as sent, binary as `\x` hex
    /// (each cut at 256 characters), NULL as `NULL`.
    pub fn shown_parameters(&self) -> Vec<String> {
        self.parameters
            .iter()
            .enumerate()
            .map(|(i, v)| shown_parameter(v.as_deref(), format_of(&self.parameter_formats, i) == 1))
            .collect()
    }
}

/// The format code of value `i` under a message's list of codes: none (all text), one (for
/// all), or one per value.
pub fn format_of(codes: &[i16], i: usize) -> i16 {
    match codes {
        [] => 0,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(0),
    }
}

fn shown_parameter(value: Option<&[u8]>, binary: bool) -> String {
    const MAX: usize = 256;
    match value {
        None => "NULL".into(),
        Some(v) if !binary => match std::str::from_utf8(v) {
            Ok(t) if t.chars().count() <= MAX => t.to_string(),
            Ok(t) => format!("{}…", t.chars().take(MAX).collect::<String>()),
            Err(_) => format!("\\x{}", hex::encode(&v[..v.len().min(MAX / 2)])),
        },
        Some(v) => format!("\\x{}", hex::encode(&v[..v.len().min(MAX / 2)])),
    }
}

pub fn parse_bind(frame: &Frame) -> Result<Bind, WireError> {
    let mut r = Reader::of(frame, "Bind");
    let portal = r.cstr("Bind")?;
    let statement = r.cstr("Bind")?;
    let nformats = r.i16("Bind")?;
    if nformats < 0 {
        return Err(WireError::Malformed { what: "Bind" });
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(r.i16("Bind")?);
    }
    let nparams = r.i16("Bind")?;
    if nparams < 0 {
        return Err(WireError::Malformed { what: "Bind" });
    }
    let mut parameters = Vec::with_capacity(nparams as usize);
    for _ in 0..nparams {
        parameters.push(r.value("Bind")?);
    }
    let nresults = r.i16("Bind")?;
    if nresults < 0 {
        return Err(WireError::Malformed { what: "Bind" });
    }
    let mut result_formats = Vec::with_capacity(nresults as usize);
    for _ in 0..nresults {
        let f = r.i16("Bind")?;
        if f != 0 && f != 1 {
            return Err(WireError::Malformed { what: "Bind" });
        }
        result_formats.push(f);
    }
    if !r.is_empty() {
        return Err(WireError::Malformed { what: "Bind" });
    }
    Ok(Bind {
        portal,
        statement,
        result_formats,
        parameters,
        parameter_formats: formats,
    })
}

/// `D` (Describe) and `C` (Close): `S` or `P`, and a name.
pub fn parse_target(frame: &Frame, what: &'static str) -> Result<(u8, String), WireError> {
    let mut r = Reader::of(frame, what);
    let kind = r.u8(what)?;
    if kind != b'S' && kind != b'P' {
        return Err(WireError::Malformed { what });
    }
    let name = r.cstr(what)?;
    if !r.is_empty() {
        return Err(WireError::Malformed { what });
    }
    Ok((kind, name))
}

/// `E`: Execute's portal name.
pub fn parse_execute(frame: &Frame) -> Result<String, WireError> {
    let mut r = Reader::of(frame, "Execute");
    let portal = r.cstr("Execute")?;
    r.i32("Execute")?;
    if !r.is_empty() {
        return Err(WireError::Malformed { what: "Execute" });
    }
    Ok(portal)
}

/// `Q`: the query text.
pub fn parse_query(frame: &Frame) -> Result<String, WireError> {
    let mut r = Reader::of(frame, "Query");
    let q = r.cstr("Query")?;
    if !r.is_empty() {
        return Err(WireError::Malformed { what: "Query" });
    }
    Ok(q)
}

// ---- server messages the gateway reads ----

/// One column of a RowDescription.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
    /// 0 text, 1 binary.
    pub format: i16,
}

pub fn parse_row_description(frame: &Frame) -> Result<Vec<Column>, WireError> {
    let mut r = Reader::of(frame, "RowDescription");
    let n = r.i16("RowDescription")?;
    if n < 0 {
        return Err(WireError::Malformed {
            what: "RowDescription",
        });
    }
    let mut cols = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.cstr("RowDescription")?;
        r.bytes(4 + 2, "RowDescription")?;
        let type_oid = r.i32("RowDescription")? as u32;
        r.bytes(2 + 4, "RowDescription")?;
        let format = r.i16("RowDescription")?;
        cols.push(Column {
            name,
            type_oid,
            format,
        });
    }
    Ok(cols)
}

/// The values of a DataRow (None = NULL).
pub fn parse_data_row(frame: &Frame) -> Result<Vec<Option<Bytes>>, WireError> {
    let mut r = Reader::of(frame, "DataRow");
    let n = r.i16("DataRow")?;
    if n < 0 {
        return Err(WireError::Malformed { what: "DataRow" });
    }
    let mut values = Vec::with_capacity(n as usize);
    for _ in 0..n {
        values.push(r.value("DataRow")?);
    }
    Ok(values)
}

pub fn data_row(values: &[Option<Bytes>], out: &mut BytesMut) {
    let len: usize = 4
        + 2
        + values
            .iter()
            .map(|v| 4 + v.as_ref().map_or(0, |b| b.len()))
            .sum::<usize>();
    out.reserve(1 + len);
    out.put_u8(b'D');
    out.put_i32(len as i32);
    out.put_i16(values.len() as i16);
    for v in values {
        match v {
            None => out.put_i32(-1),
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.extend_from_slice(b);
            }
        }
    }
}

/// The row count at the end of a CommandComplete tag (`SELECT 5`, `INSERT 0 5`, `UPDATE 5`).
pub fn command_rows(frame: &Frame) -> Option<u64> {
    let tag = frame.body.strip_suffix(b"\0")?;
    let last = tag.rsplit(|&c| c == b' ').next()?;
    std::str::from_utf8(last).ok()?.parse().ok()
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Default, Clone)]
pub struct Notice {
    pub severity: String,
    pub code: String,
    pub message: String,
}

pub fn parse_notice(frame: &Frame) -> Notice {
    let mut n = Notice::default();
    let mut r = Reader::of(frame, "ErrorResponse");
    while let Ok(field) = r.u8("ErrorResponse") {
        if field == 0 {
            break;
        }
        let Ok(value) = r.cstr("ErrorResponse") else {
            break;
        };
        match field {
            b'V' => n.severity = value,
            b'C' => n.code = value,
            b'M' => n.message = value,
            _ => {}
        }
    }
    n
}

/// An ErrorResponse or NoticeResponse with the fields that can quote data (message `M`,
/// detail `D`, hint `H`, context `W`) passed through `mask`; `None` when nothing changed
/// (forward the original).
pub fn rewrite_notice(
    frame: &Frame,
    mut mask: impl FnMut(&str) -> Option<String>,
) -> Option<Frame> {
    let mut r = Reader::of(frame, "ErrorResponse");
    let mut fields: Vec<(u8, String)> = Vec::new();
    let mut changed = false;
    loop {
        let field = r.u8("ErrorResponse").ok()?;
        if field == 0 {
            break;
        }
        let value = r.cstr("ErrorResponse").ok()?;
        let value = match field {
            b'M' | b'D' | b'H' | b'W' => match mask(&value) {
                Some(masked) => {
                    changed = true;
                    masked
                }
                None => value,
            },
            _ => value,
        };
        fields.push((field, value));
    }
    if !changed {
        return None;
    }
    let mut body = BytesMut::new();
    for (field, value) in fields {
        body.put_u8(field);
        put_cstr(&mut body, &value);
    }
    body.put_u8(0);
    Some(Frame {
        tag: frame.tag,
        body: body.freeze(),
    })
}

/// A NotificationResponse with its payload passed through `mask`; `None` when nothing
/// changed or the message is malformed (forward the original).
pub fn rewrite_notification(
    frame: &Frame,
    mask: impl FnOnce(&str) -> Option<String>,
) -> Option<Frame> {
    let mut r = Reader::of(frame, "NotificationResponse");
    let pid = r.i32("NotificationResponse").ok()?;
    let channel = r.cstr("NotificationResponse").ok()?;
    let payload = r.cstr("NotificationResponse").ok()?;
    let masked = mask(&payload)?;
    let mut body = BytesMut::new();
    body.put_i32(pid);
    put_cstr(&mut body, &channel);
    put_cstr(&mut body, &masked);
    Some(Frame {
        tag: frame.tag,
        body: body.freeze(),
    })
}

// ---- messages the gateway writes ----

fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    // A NUL inside would end the field early; the gateway's own texts never hold one.
    out.extend_from_slice(s.replace('\0', " ").as_bytes());
    out.put_u8(0);
}

/// SQLSTATE 42501 insufficient_privilege: what a policy refusal is.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// 28000 invalid_authorization_specification; 28P01 invalid_password.
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const INVALID_PASSWORD: &str = "28P01";
/// 08P01 protocol_violation.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 42601 syntax_error.
pub const SYNTAX_ERROR: &str = "42601";
/// 08006 connection_failure; 57P01 admin_shutdown; 53300 too_many_connections.
pub const CONNECTION_FAILURE: &str = "08006";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// 0A000 feature_not_supported.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// 57014 query_canceled.
pub const QUERY_CANCELED: &str = "57014";
/// `system_error`: the gateway could not read what it needs from the server.
pub const SYSTEM_ERROR: &str = "58000";
/// 58030 io_error: the audit log cannot be written, so nothing runs.
pub const IO_ERROR: &str = "58030";

/// An ErrorResponse (`E`) or NoticeResponse (`N`).
pub fn notice(
    out: &mut BytesMut,
    tag: u8,
    severity: &str,
    code: &str,
    text: &str,
    hint: Option<&str>,
) {
    message(out, tag, |b| {
        b.put_u8(b'S');
        put_cstr(b, severity);
        b.put_u8(b'V');
        put_cstr(b, severity);
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, text);
        if let Some(hint) = hint {
            b.put_u8(b'H');
            put_cstr(b, hint);
        }
        b.put_u8(0);
    });
}

pub fn error(out: &mut BytesMut, code: &str, text: &str, hint: Option<&str>) {
    notice(out, b'E', "ERROR", code, text, hint);
}

pub fn fatal(out: &mut BytesMut, code: &str, text: &str, hint: Option<&str>) {
    notice(out, b'E', "FATAL", code, text, hint);
}

pub fn auth_request(out: &mut BytesMut, code: i32) {
    message(out, b'R', |b| b.put_i32(code));
}

pub fn parameter_status(out: &mut BytesMut, key: &str, value: &str) {
    message(out, b'S', |b| {
        put_cstr(b, key);
        put_cstr(b, value);
    });
}

pub fn backend_key(out: &mut BytesMut, pid: i32, secret: &[u8]) {
    message(out, b'K', |b| {
        b.put_i32(pid);
        b.extend_from_slice(secret);
    });
}

pub fn ready(out: &mut BytesMut, status: u8) {
    message(out, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest minor version the gateway speaks and the protocol
/// options (`_pq_.*`) it does not know.
pub fn negotiate_version(out: &mut BytesMut, minor: i32, unknown: &[String]) {
    message(out, b'v', |b| {
        b.put_i32(minor);
        b.put_i32(unknown.len() as i32);
        for o in unknown {
            put_cstr(b, o);
        }
    });
}

/// The startup packet the gateway sends upstream.
pub fn startup(out: &mut BytesMut, params: &[(&str, &str)]) {
    let at = out.len();
    out.put_i32(0);
    out.put_i32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn ssl_request(out: &mut BytesMut) {
    out.put_i32(8);
    out.put_i32(SSL_REQUEST);
}

pub fn cancel_request(out: &mut BytesMut, pid: i32, secret: &[u8]) {
    out.put_i32(12 + secret.len() as i32);
    out.put_i32(CANCEL_REQUEST);
    out.put_i32(pid);
    out.extend_from_slice(secret);
}

pub fn password(out: &mut BytesMut, password: &[u8]) {
    message(out, b'p', |b| {
        b.extend_from_slice(password);
        b.put_u8(0);
    });
}

pub fn sasl_initial(out: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(out, b'p', |b| {
        put_cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.extend_from_slice(data);
    });
}

pub fn sasl_response(out: &mut BytesMut, data: &[u8]) {
    message(out, b'p', |b| b.extend_from_slice(data));
}

/// Parse of a query text (unnamed statement, no parameter types).
pub fn parse_message(out: &mut BytesMut, name: &str, query: &str) {
    message(out, b'P', |b| {
        put_cstr(b, name);
        put_cstr(b, query);
        b.put_i16(0);
    });
}

pub fn query(out: &mut BytesMut, text: &str) {
    message(out, b'Q', |b| put_cstr(b, text));
}

pub fn describe_portal(out: &mut BytesMut, portal: &str) {
    message(out, b'D', |b| {
        b.put_u8(b'P');
        put_cstr(b, portal);
    });
}

pub fn describe_statement(out: &mut BytesMut, name: &str) {
    message(out, b'D', |b| {
        b.put_u8(b'S');
        put_cstr(b, name);
    });
}

pub fn flush(out: &mut BytesMut) {
    message(out, b'H', |_| {});
}

pub fn terminate(out: &mut BytesMut) {
    message(out, b'X', |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(tag: u8, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        }
        .write_to(&mut b);
        b
    }

    #[test]
    fn frames_split_and_wait_for_more() {
        let mut buf = framed(b'Q', b"select 1\0");
        buf.extend_from_slice(&framed(b'X', b""));
        let tail = buf.split_off(buf.len() - 2);
        let f = next_frame(&mut buf, 1 << 20).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'Q', &b"select 1\0"[..]));
        assert!(next_frame(&mut buf, 1 << 20).unwrap().is_none());
        buf.extend_from_slice(&tail);
        assert_eq!(next_frame(&mut buf, 1 << 20).unwrap().unwrap().tag, b'X');
    }

    #[test]
    fn bad_lengths_and_oversized_frames_are_errors() {
        let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
        assert_eq!(next_frame(&mut buf, 100), Err(WireError::BadLength(3)));
        let mut buf = BytesMut::from(&[b'Q', 0, 1, 0, 0][..]);
        assert!(matches!(
            next_frame(&mut buf, 100),
            Err(WireError::TooLarge { len: 65536, .. })
        ));
    }

    #[test]
    fn startup_packets() {
        let mut out = BytesMut::new();
        startup(&mut out, &[("user", "bot"), ("database", "billing")]);
        match next_startup(&mut out).unwrap().unwrap() {
            Startup::Start { minor, params } => {
                assert_eq!(minor, 0);
                assert_eq!(params[0], ("user".into(), "bot".into()));
            }
            other => panic!("{other:?}"),
        }
        let mut out = BytesMut::new();
        ssl_request(&mut out);
        assert_eq!(next_startup(&mut out).unwrap(), Some(Startup::Ssl));
        let mut out = BytesMut::new();
        cancel_request(&mut out, 7, &[1, 2, 3, 4]);
        assert!(matches!(
            next_startup(&mut out).unwrap(),
            Some(Startup::Cancel { pid: 7, .. })
        ));
        let mut out = BytesMut::from(&[0, 0, 0, 8, 0, 2, 0, 0][..]);
        assert_eq!(
            next_startup(&mut out),
            Err(WireError::Version { major: 2, minor: 0 })
        );
    }

    #[test]
    fn bind_and_rows() {
        let mut body = BytesMut::new();
        body.put_slice(b"p1\0s1\0");
        body.put_i16(1);
        body.put_i16(0);
        body.put_i16(2);
        body.put_i32(-1);
        body.put_i32(2);
        body.put_slice(b"42");
        body.put_i16(2);
        body.put_i16(0);
        body.put_i16(1);
        let f = Frame {
            tag: b'B',
            body: body.freeze(),
        };
        let b = parse_bind(&f).unwrap();
        assert_eq!((b.portal.as_str(), b.statement.as_str()), ("p1", "s1"));
        assert_eq!(b.result_formats, vec![0, 1]);
        let truncated = Frame {
            tag: b'B',
            body: f.body.slice(..f.body.len() - 1),
        };
        assert!(parse_bind(&truncated).is_err());

        let mut out = BytesMut::new();
        data_row(&[Some(Bytes::from_static(b"a")), None], &mut out);
        let f = next_frame(&mut out, 100).unwrap().unwrap();
        assert_eq!(
            parse_data_row(&f).unwrap(),
            vec![Some(Bytes::from_static(b"a")), None]
        );
        let tag = Frame {
            tag: b'C',
            body: Bytes::from_static(b"INSERT 0 12\0"),
        };
        assert_eq!(command_rows(&tag), Some(12));
    }
}
