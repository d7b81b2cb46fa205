//! A lean HTTP/1.1 client for plain `http://` upstreams: the push path's
//! one request per tenant, written by hand.
//!
//! ```text
//!  post ─► idle connection (LIFO) or connect ─► one vectored write: head | body
//!                                             ─► read: status line, headers, body (bounded)
//!                                             ─► connection back to the idle list, if reusable
//! ```
//!
//! Why by hand: with 200 organizations in a push, orgsplit makes up to 200
//! upstream requests for it, and below saturation (where pushes do not
//! overlap enough to be coalesced) the request itself was the cost. Through
//! hyper-util's pooled client each one took a pool checkout, a trip through
//! a channel to the connection's own task and back, a header map built and
//! hashed, a boxed future and a handful of allocations: by a profile of the
//! pinned server, hyper, tokio's channels and the allocator together were
//! about a quarter of its CPU. Here the request is rendered into the
//! connection's own buffer from a head prepared once (request line, `Host`,
//! `User-Agent`), written with the body in one `writev`, and its answer read
//! in the calling task: no channel, no task, no header map, and no
//! allocation once a connection is warm. TLS upstreams keep hyper (HTTP/2,
//! rustls); see [`super::client`].
//!
//! What it speaks, and why that is enough: it sends `POST` with a
//! `Content-Length` and no `Expect`, to one configured origin. It reads any
//! HTTP/1.x answer: interim `1xx` answers are skipped; the body is framed by
//! `Content-Length`, `chunked` or the connection's end; at most
//! [`MAX_ANSWER_BYTES`] of it is kept and at most [`MAX_DRAIN_BYTES`] read
//! (past that the connection is closed rather than drained). A connection is
//! reused only after an answer that was completely read, on HTTP/1.1,
//! without `Connection: close`, and only if nothing arrived on it while it
//! was idle (so a request never reads an answer that is not its own).
//!
//! Invariant: a request is sent at most twice, and twice only when a reused
//! connection turned out closed before any byte of an answer arrived (the
//! upstream closed it while idle, or restarted); the second try is on a new
//! connection. An upstream that read the request and then closed without
//! answering cannot be told apart from that, so the push may arrive twice;
//! a remote-write receiver takes a repeated sample as the same sample.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::reply::{ExchangeFailure as Failure, UpstreamReply as Response, MAX_ANSWER_BYTES};

/// Most bytes of an answer's status line and headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most interim (1xx) answers before the final one.
const MAX_INTERIM: usize = 8;
/// Most header lines of an answer.
const MAX_HEADERS: usize = 64;
/// Most bytes of an answer's body read to keep its connection; a longer
/// body closes the connection instead.
pub(super) const MAX_DRAIN_BYTES: usize = 64 * 1024;
/// An idle connection older than this is closed rather than reused:
/// shorter than the usual server idle timeouts (Mimir's is 2 minutes), so
/// the upstream rarely closes one just as it is used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A connection's buffer is shrunk back to this when it goes idle.
const IDLE_BUFFER: usize = 4096;

/// Connections to one plain-HTTP origin and the head every request starts
/// with.
pub(super) struct Http1Client {
    host: String,
    port: u16,
    /// `POST <path> HTTP/1.1`, `Host`, `User-Agent`, each with its CRLF.
    head: Box<[u8]>,
    tenant_header: HeaderName,
    connect_timeout: Duration,
    /// Most recently used last; expired ones are dropped from the front.
    idle: Mutex<VecDeque<Idle>>,
    max_idle: usize,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// A connection and its buffer: the request head is rendered into it, then
/// the answer read into it.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// How an exchange on one connection failed.
enum Broken {
    /// Closed (or reset) before a single byte of an answer: on a reused
    /// connection, worth one more try on a new one.
    Closed(io::Error),
    /// Anything else: the request may have been taken.
    Other(String),
}

/// The answer's head, reduced to what the push and the connection need.
struct Head {
    status: u16,
    retry_after: Option<u64>,
    written: Option<crate::answer::Written>,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
    /// Bytes of the buffer the head took.
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl Http1Client {
    /// For `uri`, an `http://` URL.
    pub fn new(
        uri: &Uri,
        tenant_header: HeaderName,
        user_agent: &HeaderValue,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let authority = uri.authority().map_or("", |a| a.as_str());
        // `Uri::host` keeps an IPv6 literal's brackets; connecting wants none.
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut head = Vec::with_capacity(64 + path.len() + authority.len());
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(if path.is_empty() {
            b"/"
        } else {
            path.as_bytes()
        });
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        // host[:port] as written, without any userinfo (which is never
        // sent: upstream credentials come from `upstream.auth`).
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        head.extend_from_slice(host_port.as_bytes());
        head.extend_from_slice(b"\r\nuser-agent: ");
        head.extend_from_slice(user_agent.as_bytes());
        head.extend_from_slice(b"\r\n");
        Self {
            host,
            port: uri.port_u16().unwrap_or(80),
            head: head.into_boxed_slice(),
            tenant_header,
            connect_timeout,
            idle: Mutex::new(VecDeque::new()),
            max_idle,
        }
    }

    /// POSTs `body` with `tenant` in the tenant header, `headers` and
    /// `authorization`, and reads the answer. The caller bounds the time.
    pub async fn post(
        &self,
        tenant: &[u8],
        headers: &[(HeaderName, HeaderValue)],
        authorization: Option<&HeaderValue>,
        body: &Bytes,
    ) -> Result<Response, Failure> {
        let mut fresh_only = false;
        loop {
            let (mut conn, reused) = match (!fresh_only).then(|| self.checkout()).flatten() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            self.render(&mut conn.buf, tenant, headers, authorization, body.len());
            match exchange(&mut conn, body).await {
                Ok((response, reusable)) => {
                    if reusable {
                        self.checkin(conn);
                    }
                    return Ok(response);
                }
                Err(Broken::Closed(_)) if reused => fresh_only = true,
                Err(Broken::Closed(e)) => {
                    return Err(Failure::Unreachable(format!(
                        "upstream closed the connection without answering: {e}"
                    )))
                }
                Err(Broken::Other(e)) => return Err(Failure::Unreachable(e)),
            }
        }
    }

    fn render(
        &self,
        buf: &mut Vec<u8>,
        tenant: &[u8],
        headers: &[(HeaderName, HeaderValue)],
        authorization: Option<&HeaderValue>,
        length: usize,
    ) {
        fn line(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
            buf.extend_from_slice(name);
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value);
            buf.extend_from_slice(b"\r\n");
        }
        buf.clear();
        buf.extend_from_slice(&self.head);
        for (name, value) in headers {
            line(buf, name.as_str().as_bytes(), value.as_bytes());
        }
        // After the fixed headers, as hyper's `insert` order made it: the
        // tenant and the credentials are this request's own.
        line(buf, self.tenant_header.as_str().as_bytes(), tenant);
        if let Some(auth) = authorization {
            line(buf, b"authorization", auth.as_bytes());
        }
        let mut digits = itoa::Buffer::new();
        line(buf, b"content-length", digits.format(length).as_bytes());
        buf.extend_from_slice(b"\r\n");
    }

    /// The most recently used idle connection that is still quiet: one on
    /// which anything arrived while idle (its end, or bytes no request
    /// asked for) is closed, never used, so no request can read another's
    /// answer.
    fn checkout(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let last = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                let last = idle.pop_back()?;
                if now.duration_since(last.since) >= IDLE_TIMEOUT {
                    // The newest is too old, so all are.
                    idle.clear();
                    return None;
                }
                last
            };
            // Usually one `recv` that finds nothing.
            match last.conn.stream.try_read(&mut [0u8; 1]) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(last.conn),
                _ => continue,
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        if conn.buf.capacity() > IDLE_BUFFER {
            conn.buf.clear();
            conn.buf.shrink_to(IDLE_BUFFER);
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < self.max_idle {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(Failure::Unreachable(format!(
                    "tcp connect error: {}:{}: {e}",
                    self.host, self.port
                )))
            }
            Err(_) => {
                return Err(Failure::Unreachable(format!(
                    "tcp connect error: {}:{}: timed out after {:?}",
                    self.host, self.port, self.connect_timeout
                )))
            }
        };
        // Requests are one write each; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }
}

/// Writes the rendered head (in `conn.buf`) and `body`, then reads the
/// answer. Returns it and whether the connection can carry another request.
async fn exchange(conn: &mut Conn, body: &[u8]) -> Result<(Response, bool), Broken> {
    let written = write_request(&mut conn.stream, &conn.buf, body).await;
    conn.buf.clear();
    let head = match (written, read_head(conn).await) {
        (Ok(()), head) => head?,
        // The upstream may answer before it has read the whole body (a
        // proxy's 413) and close: that answer is the one that counts.
        (Err(_), Ok(head)) => Head {
            keep_alive: false,
            ..head
        },
        (Err(e), Err(_)) => return Err(Broken::Closed(e)),
    };
    let mut prefix = Vec::new();
    let complete = read_body(conn, &head, &mut prefix).await?;
    let response = Response {
        status: head.status,
        retry_after: head.retry_after,
        prefix,
        written: head.written,
    };
    Ok((response, complete && head.keep_alive))
}

async fn write_request(stream: &mut TcpStream, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let n = if head.is_empty() {
            stream.write(body).await?
        } else {
            stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    Ok(())
}

/// Reads into the connection's buffer; `Ok(0)` at its end.
async fn fill(conn: &mut Conn) -> io::Result<usize> {
    conn.buf.reserve(1024);
    conn.stream.read_buf(&mut conn.buf).await
}

/// Reads until a final (non-1xx) answer head is in the buffer and parses it.
async fn read_head(conn: &mut Conn) -> Result<Head, Broken> {
    let mut answered = false;
    let mut interim = 0;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&conn.buf)? {
                Some(head) if (100..200).contains(&head.status) => {
                    // An interim answer (100 Continue, 103 Early Hints):
                    // the final one follows, unless the upstream only
                    // ever sends these.
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(Broken::Other(format!(
                            "upstream sent over {MAX_INTERIM} interim answers"
                        )));
                    }
                    conn.buf.drain(..head.len);
                    continue;
                }
                Some(head) => return Ok(head),
                None if conn.buf.len() > MAX_HEAD_BYTES => return Err(head_too_long()),
                None => {}
            }
        }
        match fill(conn).await {
            Ok(0) if !answered => {
                return Err(Broken::Closed(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => {
                return Err(Broken::Other(
                    "upstream closed the connection in the middle of its answer".into(),
                ))
            }
            Ok(_) => {}
            Err(e)
                if !answered
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Err(Broken::Closed(e))
            }
            Err(e) => return Err(Broken::Other(format!("reading the upstream answer: {e}"))),
        }
    }
}

/// Parses an answer head from the start of `buf`: `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Broken> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD_BYTES => len,
        Ok(httparse::Status::Complete(_)) => return Err(head_too_long()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Broken::Other(format!("malformed upstream answer: {e}"))),
    };
    let status = response.code.unwrap_or(0);
    let get = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let retry_after = get("retry-after")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let written = crate::answer::Written::from_headers(get);
    let mut close = response.version != Some(1);
    let mut chunked = false;
    let mut encoded = false;
    let mut length: Option<u64> = None;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            close |= tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only when it is the last coding; any other final
            // coding means the body runs to the connection's end.
            encoded = true;
            chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Broken::Other("malformed upstream answer: bad Content-Length".into())
                })?;
            if length.is_some_and(|l| l != n) {
                return Err(Broken::Other(
                    "malformed upstream answer: conflicting Content-Length".into(),
                ));
            }
            length = Some(n);
        }
    }
    let framing = if matches!(status, 100..=199 | 204 | 304) {
        Framing::None
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        retry_after,
        written,
        framing,
        keep_alive: !close,
        len,
    }))
}

fn head_too_long() -> Broken {
    Broken::Other(format!(
        "upstream answer's head is over {MAX_HEAD_BYTES} bytes"
    ))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Reads the body after `head` (which starts the buffer), keeping at most
/// [`MAX_ANSWER_BYTES`] of it in `prefix`. Returns whether the body was
/// read to its end with nothing after it, so the connection can be reused.
async fn read_body(conn: &mut Conn, head: &Head, prefix: &mut Vec<u8>) -> Result<bool, Broken> {
    let start = head.len;
    let keep = |prefix: &mut Vec<u8>, data: &[u8]| {
        let room = MAX_ANSWER_BYTES.saturating_sub(prefix.len());
        prefix.extend_from_slice(&data[..data.len().min(room)]);
    };
    match head.framing {
        Framing::None => Ok(conn.buf.len() == start),
        Framing::Length(n) => {
            let want = usize::try_from(n).unwrap_or(usize::MAX);
            let enough = want.min(MAX_ANSWER_BYTES);
            // Read all of a short body (so the connection can be reused),
            // only the kept prefix of a long one.
            let target = if want <= MAX_DRAIN_BYTES {
                want
            } else {
                enough
            };
            while conn.buf.len() - start < target {
                if read_more(conn).await? == 0 {
                    keep(prefix, &conn.buf[start..]);
                    return Ok(false);
                }
            }
            let body = &conn.buf[start..];
            keep(prefix, &body[..body.len().min(enough)]);
            Ok(want <= MAX_DRAIN_BYTES && body.len() == want)
        }
        Framing::Chunked => loop {
            prefix.clear();
            match dechunk(&conn.buf[start..], prefix) {
                Chunks::Done(used) => return Ok(start + used == conn.buf.len()),
                Chunks::Malformed => {
                    return Err(Broken::Other(
                        "malformed upstream answer: bad chunked body".into(),
                    ))
                }
                Chunks::More if conn.buf.len() - start > MAX_DRAIN_BYTES => return Ok(false),
                Chunks::More => {
                    if read_more(conn).await? == 0 {
                        return Ok(false);
                    }
                }
            }
        },
        Framing::UntilClose => {
            while conn.buf.len() - start <= MAX_DRAIN_BYTES {
                if read_more(conn).await? == 0 {
                    break;
                }
            }
            keep(prefix, &conn.buf[start..]);
            Ok(false)
        }
    }
}

async fn read_more(conn: &mut Conn) -> Result<usize, Broken> {
    fill(conn)
        .await
        .map_err(|e| Broken::Other(format!("reading the upstream answer: {e}")))
}

enum Chunks {
    /// The whole body, and the bytes it took.
    Done(usize),
    More,
    Malformed,
}

/// Decodes a `chunked` body from the start of `data` into `prefix` (at most
/// [`MAX_ANSWER_BYTES`]); trailers are read past and ignored.
fn dechunk(data: &[u8], prefix: &mut Vec<u8>) -> Chunks {
    let mut pos = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&data[pos..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Chunks::More,
            Err(_) => return Chunks::Malformed,
        };
        pos += used;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let rest = &data[pos..];
                match rest.windows(2).position(|w| w == b"\r\n") {
                    None => return Chunks::More,
                    Some(0) => return Chunks::Done(pos + 2),
                    Some(end) => pos += end + 2,
                }
            }
        }
        let rest = &data[pos..];
        // `size + 2` bytes: the data and its CRLF.
        if size > (rest.len() as u64).saturating_sub(2) {
            return Chunks::More;
        }
        let size = size as usize;
        let room = MAX_ANSWER_BYTES.saturating_sub(prefix.len());
        prefix.extend_from_slice(&rest[..size.min(room)]);
        if &rest[size..size + 2] != b"\r\n" {
            return Chunks::Malformed;
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests;
