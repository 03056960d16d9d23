//! A tiny hand-rolled HTTP/1.1 layer on tokio streams.
//!
//! Every byte of every response is written here or by the caller: later tests build hostile servers
//! from these helpers, so nothing is hidden behind a framework. Requests: request line, headers,
//! `Content-Length` or chunked body (read whole). Responses: written from parts; proxied responses are
//! streamed chunk by chunk, flushed after every piece (the execd JSON-lines stream must flow line by
//! line through every hop).

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request/status line or header line accepted.
pub(crate) const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted.
pub(crate) const MAX_HEADERS: usize = 128;
/// Largest request body any lab server reads (execd enforces its own 1 MiB on top).
pub(crate) const MAX_BODY: usize = 8 * 1024 * 1024;

/// A parsed request. Header names keep their case as sent; look them up with [`Request::header`].
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query as sent (`/exec?token=...`).
    pub(crate) target: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub(crate) version: String,
    pub(crate) headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub(crate) fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// A query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A cookie's value from the `Cookie` header(s).
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    }

    /// The `Host` header without a port, lower-cased.
    pub(crate) fn host(&self) -> Option<String> {
        self.header("host").map(host_without_port)
    }

    /// The client wants the connection closed after this exchange.
    pub(crate) fn wants_close(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.version == "HTTP/1.0" {
            !conn.contains("keep-alive")
        } else {
            conn.split(',').any(|t| t.trim() == "close")
        }
    }
}

/// `Host: a.b:8443` -> `a.b` (lower case); IPv6 literals keep their brackets.
pub(crate) fn host_without_port(h: &str) -> String {
    let h = h.trim();
    let base = if let Some(rest) = h.strip_prefix('[') {
        match rest.find(']') {
            Some(i) => &h[..i + 2],
            None => h,
        }
    } else {
        match h.rsplit_once(':') {
            Some((b, p)) if p.bytes().all(|c| c.is_ascii_digit()) => b,
            _ => h,
        }
    };
    base.to_ascii_lowercase()
}

/// Case-insensitive header lookup (first occurrence).
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Removes every header of that name.
pub(crate) fn remove_header(headers: &mut Vec<(String, String)>, name: &str) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
}

/// Headers that describe one connection, not the message; proxies drop them.
pub(crate) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn strip_hop_by_hop(headers: &mut Vec<(String, String)>) {
    // Headers named by `Connection` are hop-by-hop too.
    let named: Vec<String> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    headers.retain(|(k, _)| {
        let k = k.to_ascii_lowercase();
        !HOP_BY_HOP.contains(&k.as_str()) && !named.contains(&k)
    });
}

/// Why a request could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// Not HTTP, or broken framing; the server answers 400 and closes.
    Malformed(String),
    /// Head or body over the limits; the server answers 431/413 and closes.
    TooLarge(&'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "i/o: {e}"),
            ReadError::Malformed(m) => write!(f, "malformed: {m}"),
            ReadError::TooLarge(w) => write!(f, "too large: {w}"),
        }
    }
}

/// Reads one line (up to and including `\n`), at most `limit` bytes. `Ok(None)` on EOF before any
/// byte. The returned line has its `\r\n` / `\n` removed.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(None);
            }
            return Err(ReadError::Malformed("connection closed mid-line".into()));
        }
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&buf[..i]);
            r.consume(i + 1);
            if line.len() > limit {
                return Err(ReadError::TooLarge("line"));
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        r.consume(n);
        if line.len() > limit {
            return Err(ReadError::TooLarge("line"));
        }
    }
}

/// Reads header lines up to the empty line.
async fn read_headers<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Vec<(String, String)>, ReadError> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, MAX_LINE)
            .await?
            .ok_or_else(|| ReadError::Malformed("connection closed in headers".into()))?;
        if line.is_empty() {
            return Ok(headers);
        }
        if headers.len() >= MAX_HEADERS {
            return Err(ReadError::TooLarge("headers"));
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ReadError::Malformed(format!("header line without colon: {line:?}")))?;
        if k.is_empty() || k.bytes().any(|c| c.is_ascii_whitespace()) {
            return Err(ReadError::Malformed(format!("bad header name {k:?}")));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
}

/// Reads one request from a connection. `Ok(None)`: the peer closed the connection cleanly between
/// requests. `Expect: 100-continue` is answered before the body is read.
pub async fn read_request<S>(s: &mut S, max_body: usize) -> Result<Option<Request>, ReadError>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    // Tolerate stray empty lines between requests (RFC 9112 §2.2).
    let line = loop {
        match read_line(s, MAX_LINE).await? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let line = String::from_utf8_lossy(&line).into_owned();
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && !t.is_empty() => (m, t, v),
        _ => return Err(ReadError::Malformed(format!("bad request line {line:?}"))),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ReadError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }
    let headers = read_headers(s).await?;
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false);
    let length = match req.header("content-length") {
        Some(v) => Some(
            v.trim()
                .parse::<usize>()
                .map_err(|_| ReadError::Malformed(format!("bad content-length {v:?}")))?,
        ),
        None => None,
    };
    if (chunked || length.unwrap_or(0) > 0)
        && req
            .header("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        s.flush().await?;
    }
    if chunked {
        req.body = read_chunked_body(s, max_body).await?;
    } else if let Some(n) = length {
        if n > max_body {
            return Err(ReadError::TooLarge("body"));
        }
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).await?;
        req.body = body;
    }
    Ok(Some(req))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, ReadError> {
    let s = String::from_utf8_lossy(line);
    let hex = s.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| ReadError::Malformed(format!("bad chunk size {s:?}")))
}

async fn read_chunked_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max_body: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, MAX_LINE)
            .await?
            .ok_or_else(|| ReadError::Malformed("closed in chunked body".into()))?;
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            // Trailers up to the empty line.
            read_headers(r).await?;
            return Ok(body);
        }
        if body.len() as u64 + size > max_body as u64 {
            return Err(ReadError::TooLarge("body"));
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        r.read_exact(&mut body[start..]).await?;
        let crlf = read_line(r, 2).await?;
        if crlf.as_deref() != Some(&b""[..]) {
            return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
        }
    }
}

/// The reason phrase of a status code.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        520..=527 => "",
        530 => "",
        _ => "",
    }
}

/// An RFC 9110 IMF-fixdate for `Date` headers.
pub(crate) fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = (days + 4).rem_euclid(7); // 1970-01-01 was a Thursday
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[wd as usize],
        d,
        MO[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}

pub(crate) fn now_date() -> String {
    http_date(SystemTime::now())
}

/// Serialises a status line and headers, exactly as given (no header is added).
pub(crate) fn head_bytes(status: u16, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", status, reason(status)).into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A complete response with a body: the given headers, then `Content-Length` (unless given).
pub fn response_bytes(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if header(&h, "content-length").is_none() {
        h.push(("Content-Length".into(), body.len().to_string()));
    }
    let mut out = head_bytes(status, &h);
    out.extend_from_slice(body);
    out
}

/// Writes all bytes and flushes.
pub async fn send<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Writes one chunk of a chunked body (nothing for empty data) and flushes.
pub(crate) async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    send(w, &out).await
}

/// Ends a chunked body.
pub(crate) async fn write_last_chunk<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    send(w, b"0\r\n\r\n").await
}

/// Writes a request (as a client / proxy). `Content-Length` is set from the body when the method
/// carries one or the body is not empty.
pub(crate) fn request_bytes(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A response's status line and headers, as a proxy reads them from upstream.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
}

/// Reads a response head, skipping interim 1xx answers (except 101).
pub(crate) async fn read_response_head<R: AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<ResponseHead>, ReadError> {
    loop {
        let line = match read_line(r, MAX_LINE).await? {
            None => return Ok(None),
            Some(l) => l,
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        let mut parts = line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let code = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") || code.len() != 3 {
            return Err(ReadError::Malformed(format!("bad status line {line:?}")));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| ReadError::Malformed(format!("bad status code {code:?}")))?;
        if !(100..=999).contains(&status) {
            return Err(ReadError::Malformed(format!("bad status code {code:?}")));
        }
        let headers = read_headers(r).await?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(Some(ResponseHead { status, headers }));
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

pub(crate) fn response_framing(request_method: &str, head: &ResponseHead) -> Framing {
    if request_method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        return Framing::Empty;
    }
    if header(&head.headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match header(&head.headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    }
}

/// Prepares upstream response headers for the next hop: hop-by-hop headers go; the body will be
/// sent with `Content-Length` when upstream gave one, chunked otherwise.
pub(crate) fn downstream_headers(head: &ResponseHead, framing: Framing) -> Vec<(String, String)> {
    let mut h = head.headers.clone();
    strip_hop_by_hop(&mut h);
    match framing {
        Framing::Chunked | Framing::Close => {
            remove_header(&mut h, "content-length");
            h.push(("Transfer-Encoding".into(), "chunked".into()));
        }
        Framing::Length(_) | Framing::Empty => {}
    }
    h
}

/// Copies a response body from upstream to downstream, flushing every piece as it arrives.
/// Downstream framing: `Length` stays `Length`; `Chunked` and `Close` become chunked.
pub(crate) async fn pipe_body<R, W>(r: &mut R, framing: Framing, w: &mut W) -> Result<(), ReadError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    match framing {
        Framing::Empty => Ok(()),
        Framing::Length(mut left) => {
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = r.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(ReadError::Malformed("upstream closed mid-body".into()));
                }
                send(w, &buf[..n]).await?;
                left -= n as u64;
            }
            Ok(())
        }
        Framing::Close => {
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                write_chunk(w, &buf[..n]).await?;
            }
            write_last_chunk(w).await?;
            Ok(())
        }
        Framing::Chunked => loop {
            let line = read_line(r, MAX_LINE)
                .await?
                .ok_or_else(|| ReadError::Malformed("upstream closed in chunked body".into()))?;
            let mut left = parse_chunk_size(&line)?;
            if left == 0 {
                read_headers(r).await?;
                write_last_chunk(w).await?;
                return Ok(());
            }
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = r.read(&mut buf[..want]).await?;
                if n == 0 {
                    return Err(ReadError::Malformed("upstream closed mid-chunk".into()));
                }
                write_chunk(w, &buf[..n]).await?;
                left -= n as u64;
            }
            let crlf = read_line(r, 2).await?;
            if crlf.as_deref() != Some(&b""[..]) {
                return Err(ReadError::Malformed("chunk not followed by CRLF".into()));
            }
        },
    }
}

/// Why a forwarded request got no usable answer.
#[derive(Debug)]
pub(crate) enum ForwardError {
    /// The connection was refused (nothing listens) or failed otherwise.
    Connect(io::Error),
    ConnectTimeout,
    /// Connected, sent, no response head in time.
    HeadTimeout,
    /// The upstream closed or spoke something that is not HTTP.
    BadResponse(String),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Connect(e) => write!(f, "dial: {e}"),
            ForwardError::ConnectTimeout => write!(f, "dial: i/o timeout"),
            ForwardError::HeadTimeout => write!(f, "timeout awaiting response headers"),
            ForwardError::BadResponse(m) => write!(f, "bad response: {m}"),
        }
    }
}

/// Sends a request to `addr` as a proxy does and reads the response head. The caller streams the
/// body from the returned reader with [`pipe_body`].
pub(crate) async fn forward(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    connect_timeout: std::time::Duration,
    head_timeout: std::time::Duration,
) -> Result<(tokio::io::BufReader<tokio::net::TcpStream>, ResponseHead), ForwardError> {
    let stream =
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err(ForwardError::ConnectTimeout),
            Ok(Err(e)) => return Err(ForwardError::Connect(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    let mut up = tokio::io::BufReader::new(stream);
    let mut h: Vec<(String, String)> = headers.to_vec();
    remove_header(&mut h, "content-length");
    send(&mut up, &request_bytes(method, target, &h, body))
        .await
        .map_err(|e| ForwardError::BadResponse(e.to_string()))?;
    match tokio::time::timeout(head_timeout, read_response_head(&mut up)).await {
        Err(_) => Err(ForwardError::HeadTimeout),
        Ok(Ok(Some(head))) => Ok((up, head)),
        Ok(Ok(None)) => Err(ForwardError::BadResponse("EOF".into())),
        Ok(Err(e)) => Err(ForwardError::BadResponse(e.to_string())),
    }
}

/// A pseudo-random 64-bit value (std only: hashed time, counter and a per-process random key).
pub(crate) fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_http_date_format() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn lab_host_without_port() {
        assert_eq!(
            host_without_port("Xterm-202.Example.test:8443"),
            "xterm-202.example.test"
        );
        assert_eq!(host_without_port("example.test"), "example.test");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
    }

    #[tokio::test]
    async fn lab_read_request_and_chunked_pipe() {
        let raw = b"POST /exec?token=a%20b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nCookie: a=1; _cmux_auth=tok\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(raw).await.unwrap();
        let mut s = tokio::io::BufReader::new(server);
        let req = read_request(&mut s, MAX_BODY).await.unwrap().unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path(), "/exec");
        assert_eq!(req.query_param("token").as_deref(), Some("a b"));
        assert_eq!(req.cookie("_cmux_auth").as_deref(), Some("tok"));
        assert_eq!(req.body, b"abcde");

        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab\ncd\r\n0\r\n\r\n";
        let mut r = tokio::io::BufReader::new(&resp[..]);
        let head = read_response_head(&mut r).await.unwrap().unwrap();
        let framing = response_framing("GET", &head);
        assert_eq!(framing, Framing::Chunked);
        let mut out = Vec::new();
        pipe_body(&mut r, framing, &mut out).await.unwrap();
        assert_eq!(out, b"5\r\nab\ncd\r\n0\r\n\r\n");

        let close = b"HTTP/1.1 200 OK\r\n\r\nuntil close";
        let mut r = tokio::io::BufReader::new(&close[..]);
        let head = read_response_head(&mut r).await.unwrap().unwrap();
        assert_eq!(response_framing("GET", &head), Framing::Close);
    }
}
