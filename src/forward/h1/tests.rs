//! The lean client against a raw TCP upstream that answers exactly the
//! bytes each test gives it, and records what it was sent on which
//! connection.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// One request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection (0, 1, ...) carried it.
    conn: usize,
    head: String,
    body: Vec<u8>,
}

/// What the upstream does with the `n`-th request (over all connections):
/// the bytes it answers, and whether it then closes the connection.
type Script = dyn Fn(usize) -> (Vec<u8>, bool) + Send + Sync;

struct Upstream {
    url: Uri,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    async fn start(script: impl Fn(usize) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/v1/push", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let (mut stream, _) = listener.accept().await.unwrap();
                let (log, script) = (log.clone(), script.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some((head, body)) = read_request(&mut stream, &mut buf).await else {
                            return;
                        };
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(Seen { conn, head, body });
                            log.len() - 1
                        };
                        let (answer, close) = script(n);
                        if stream.write_all(&answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, seen }
    }

    fn client(&self, max_idle: usize) -> Http1Client {
        lean(&self.url, max_idle)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Which connection carried each request, in order.
    fn conns(&self) -> Vec<usize> {
        self.seen().iter().map(|s| s.conn).collect()
    }
}

fn lean(url: &Uri, max_idle: usize) -> Http1Client {
    Http1Client::new(
        url,
        HeaderName::from_static("x-scope-orgid"),
        &HeaderValue::from_static("orgsplit/test"),
        Duration::from_secs(2),
        max_idle,
    )
}

/// Reads one request (head and `Content-Length` body); `None` at the end.
async fn read_request(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = request.parse(buf) {
            let length: usize = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap_or(0);
            let head = String::from_utf8(buf[..len].to_vec()).unwrap();
            while buf.len() < len + length {
                if stream.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            let body = buf[len..len + length].to_vec();
            buf.drain(..len + length);
            return Some((head, body));
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn ok() -> (Vec<u8>, bool) {
    (
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        false,
    )
}

const V1: [(HeaderName, HeaderValue); 2] = [
    (
        http::header::CONTENT_ENCODING,
        HeaderValue::from_static("snappy"),
    ),
    (
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    ),
];

async fn post(
    client: &Http1Client,
    tenant: &str,
    body: &'static [u8],
) -> Result<Response, Failure> {
    client
        .post(tenant.as_bytes(), &V1, None, &Bytes::from_static(body))
        .await
}

/// A `200`-or-whatever answer to a one-byte push for tenant `t`.
async fn answered(client: &Http1Client) -> Response {
    match post(client, "t", b"x").await {
        Ok(r) => r,
        Err(e) => panic!("{}", unreachable(Err(e))),
    }
}

fn unreachable(result: Result<Response, Failure>) -> String {
    match result {
        Err(Failure::Unreachable(e)) => e,
        Ok(r) => panic!("answered {}", r.status),
    }
}

#[tokio::test]
async fn a_request_carries_its_tenant_headers_and_body_and_the_connection_is_reused() {
    let upstream = Upstream::start(|_| ok()).await;
    let client = upstream.client(8);
    let auth = HeaderValue::from_static("Bearer s3cret");
    let body = Bytes::from_static(b"\x00\x01 tenant one's series");
    let r = client
        .post(b"team-a", &V1, Some(&auth), &body)
        .await
        .unwrap_or_else(|_| panic!("failed"));
    assert_eq!(r.status, 200);
    let r = post(&client, "team-b", b"second")
        .await
        .ok()
        .expect("answered");
    assert_eq!(r.status, 200);

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    let authority = upstream.url.authority().unwrap().as_str();
    assert_eq!(
        seen[0].head,
        format!(
            "POST /api/v1/push HTTP/1.1\r\nhost: {authority}\r\nuser-agent: orgsplit/test\r\n\
             content-encoding: snappy\r\ncontent-type: application/x-protobuf\r\n\
             x-scope-orgid: team-a\r\nauthorization: Bearer s3cret\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        )
    );
    assert_eq!(seen[0].body, body);
    assert!(seen[1].head.contains("\r\nx-scope-orgid: team-b\r\n"));
    assert!(!seen[1].head.contains("authorization"));
    assert_eq!(seen[1].body, b"second");
    assert_eq!(
        (seen[0].conn, seen[1].conn),
        (0, 0),
        "one keep-alive connection"
    );
}

#[tokio::test]
async fn answers_framed_by_length_chunks_or_the_connections_end_are_read() {
    let upstream = Upstream::start(|n| match n {
        0 => (
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 19\r\n\r\nout of order sample".to_vec(),
            false,
        ),
        1 => (
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nout o\r\nE;ext=1\r\nf order sample\r\n0\r\nx-trailer: 1\r\n\r\n"
                .to_vec(),
            false,
        ),
        // No length: the body ends with the connection.
        2 => (b"HTTP/1.1 500 Oops\r\n\r\nupstream broke".to_vec(), true),
        _ => ok(),
    })
    .await;
    let client = upstream.client(8);
    for expected in ["out of order sample", "out of order sample"] {
        let r = answered(&client).await;
        assert_eq!((r.status, r.prefix.as_slice()), (400, expected.as_bytes()));
    }
    let r = answered(&client).await;
    assert_eq!(
        (r.status, r.prefix.as_slice()),
        (500, &b"upstream broke"[..])
    );
    let r = answered(&client).await;
    assert_eq!(r.status, 200);
    let conns: Vec<usize> = upstream.seen().iter().map(|s| s.conn).collect();
    // Length and chunks keep the connection; the close-framed answer ends it.
    assert_eq!(conns, [0, 0, 0, 1]);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_retry_after_and_written_counts_read() {
    let upstream = Upstream::start(|_| {
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n\
              HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n\
              X-Prometheus-Remote-Write-Samples-Written: 5\r\ncontent-length: 4\r\n\r\nslow"
                .to_vec(),
            false,
        )
    })
    .await;
    let client = upstream.client(8);
    let r = answered(&client).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.retry_after, Some(7));
    assert_eq!(r.prefix, b"slow");
    assert_eq!(r.written.map(|w| w.samples), Some(5));
}

#[tokio::test]
async fn a_long_answer_is_cut_to_its_prefix_and_its_connection_closed() {
    let long = MAX_DRAIN_BYTES + 1;
    let upstream = Upstream::start(move |n| match n {
        0 => {
            let mut a = format!("HTTP/1.1 503 Busy\r\ncontent-length: {long}\r\n\r\n").into_bytes();
            a.resize(a.len() + long, b'z');
            (a, false)
        }
        _ => ok(),
    })
    .await;
    let client = upstream.client(8);
    let r = answered(&client).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.prefix.len(), MAX_ANSWER_BYTES);
    let r = answered(&client).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        upstream.conns(),
        [0, 1],
        "a body past the drain bound is not drained"
    );
}

#[tokio::test]
async fn an_answer_exactly_at_the_drain_bound_keeps_its_connection() {
    let upstream = Upstream::start(|n| match n {
        0 => {
            let mut a = format!("HTTP/1.1 400 No\r\ncontent-length: {MAX_DRAIN_BYTES}\r\n\r\n")
                .into_bytes();
            a.resize(a.len() + MAX_DRAIN_BYTES, b'z');
            (a, false)
        }
        _ => ok(),
    })
    .await;
    let client = upstream.client(8);
    let r = answered(&client).await;
    assert_eq!((r.status, r.prefix.len()), (400, MAX_ANSWER_BYTES));
    answered(&client).await;
    assert_eq!(upstream.conns(), [0, 0]);
}

#[tokio::test]
async fn connection_close_and_http_1_0_answers_end_the_connection() {
    let upstream = Upstream::start(|n| match n {
        0 => (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
            false,
        ),
        1 => (
            b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
            false,
        ),
        _ => ok(),
    })
    .await;
    let client = upstream.client(8);
    for _ in 0..3 {
        let r = answered(&client).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(upstream.conns(), [0, 1, 2]);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    // The upstream answers, then closes the connection without saying so
    // (as a server does with an idle connection).
    let upstream = Upstream::start(|_| (ok().0, true)).await;
    let client = upstream.client(8);
    for _ in 0..3 {
        let r = answered(&client).await;
        assert_eq!(r.status, 200);
        // Let the close arrive before the connection is used again.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        upstream.conns(),
        [0, 1, 2],
        "each request arrived once, on a new connection"
    );
}

#[tokio::test]
async fn a_reused_connection_closed_as_the_request_went_out_is_retried_once_on_a_new_one() {
    // The upstream takes the second request on the kept connection and
    // closes it without an answer (its idle timeout firing just then).
    let upstream = Upstream::start(|n| match n {
        1 => (Vec::new(), true),
        _ => ok(),
    })
    .await;
    let client = upstream.client(8);
    for _ in 0..2 {
        let r = answered(&client).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        upstream.conns(),
        [0, 0, 1],
        "sent again, once, on a new connection"
    );
}

#[tokio::test]
async fn a_new_connection_closed_without_an_answer_is_unreachable_and_not_retried() {
    let upstream = Upstream::start(|_| (Vec::new(), true)).await;
    let client = upstream.client(8);
    let e = unreachable(post(&client, "t", b"x").await);
    assert!(e.contains("closed the connection without answering"), "{e}");
    assert_eq!(upstream.seen().len(), 1, "not sent twice");
}

#[tokio::test]
async fn malformed_or_oversized_answers_are_unreachable() {
    let huge_head = {
        let mut a = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        a.resize(a.len() + MAX_HEAD_BYTES, b'a');
        a.extend_from_slice(b"\r\n\r\n");
        a
    };
    let answers: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage\r\n\r\n".to_vec(), "malformed"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx".to_vec(),
            "conflicting Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n".to_vec(),
            "bad Content-Length",
        ),
        (
            b"HTTP/1.1 400 No\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "bad chunked body",
        ),
        (huge_head, "over 16384 bytes"),
        (b"HTTP/1.1 200 O".to_vec(), "in the middle of its answer"),
    ];
    for (answer, expected) in answers {
        let upstream = Upstream::start(move |_| (answer.clone(), true)).await;
        let client = upstream.client(8);
        let e = unreachable(post(&client, "t", b"x").await);
        assert!(e.contains(expected), "{e} should say {expected}");
    }
}

#[tokio::test]
async fn idle_connections_are_kept_up_to_the_bound() {
    let upstream = Upstream::start(|_| ok()).await;
    let client = Arc::new(upstream.client(2));
    let posts: Vec<_> = (0..6)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { post(&c, "t", b"x").await.is_ok() })
        })
        .collect();
    for p in posts {
        assert!(p.await.unwrap());
    }
    assert!(client.idle.lock().unwrap().len() <= 2);
    assert!(!client.idle.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_upstream_says_where_it_tried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url: Uri = format!("http://{addr}/push").parse().unwrap();
    let client = lean(&url, 1);
    let e = unreachable(post(&client, "t", b"x").await);
    assert!(
        e.contains("tcp connect error") && e.contains(&addr.to_string()),
        "{e}"
    );
}

#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_is_the_answer() {
    // Like a proxy refusing a body over its limit: it reads the head,
    // answers 413 and closes without reading the rest.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: Uri = format!("http://{}/push", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 9\r\n\r\ntoo large")
            .await;
        // Closing with unread data resets the connection.
    });
    let client = lean(&url, 1);
    let body = Bytes::from(vec![7u8; 32 << 20]);
    let r = client
        .post(b"t", &V1, None, &body)
        .await
        .unwrap_or_else(|e| panic!("{}", unreachable(Err(e))));
    assert_eq!((r.status, r.prefix.as_slice()), (413, &b"too large"[..]));
    assert!(client.idle.lock().unwrap().is_empty(), "not reused");
}

mod parser {
    //! The answer parser on arbitrary bytes: an upstream, or something
    //! posing as one, can send anything.
    use super::super::*;
    use proptest::prelude::*;

    fn chunked(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let end = cut.clamp(at, body.len());
            if end > at {
                out.extend_from_slice(format!("{:x}\r\n", end - at).as_bytes());
                out.extend_from_slice(&body[at..end]);
                out.extend_from_slice(b"\r\n");
                at = end;
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_head(&bytes);
            let mut prefix = Vec::new();
            let _ = dechunk(&bytes, &mut prefix);
            prop_assert!(prefix.len() <= MAX_ANSWER_BYTES);
        }

        #[test]
        fn a_chunked_body_decodes_to_its_bytes_however_it_is_cut(
            body in proptest::collection::vec(any::<u8>(), 0..6000),
            mut cuts in proptest::collection::vec(0usize..6000, 0..8),
            trailing in 0usize..3,
        ) {
            cuts.sort_unstable();
            let mut wire = chunked(&body, &cuts);
            let whole = wire.len();
            wire.extend(std::iter::repeat_n(b'x', trailing));
            let mut prefix = Vec::new();
            match dechunk(&wire, &mut prefix) {
                Chunks::Done(used) => prop_assert_eq!(used, whole),
                _ => prop_assert!(false, "not decoded"),
            }
            prop_assert_eq!(&prefix[..], &body[..body.len().min(MAX_ANSWER_BYTES)]);
            // Any strict prefix of the encoding asks for more.
            for end in [0, whole / 3, whole.saturating_sub(1)] {
                let mut p = Vec::new();
                prop_assert!(matches!(dechunk(&wire[..end], &mut p), Chunks::More));
            }
        }
    }
}

#[tokio::test]
async fn bytes_that_arrive_on_an_idle_connection_are_never_taken_for_an_answer() {
    // A broken upstream answers, then, a moment later, sends a second,
    // unasked-for answer: the next request must not take that `200` for
    // its own, nor go out on that connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url: Uri = format!("http://{}/push", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    tokio::spawn(async move {
        for conn in 0.. {
            let (mut stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_request(&mut stream, &mut buf).await.is_some() {
                    log.lock().unwrap().push(conn);
                    let answer: &[u8] = if conn == 0 {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail"
                    };
                    stream.write_all(answer).await.unwrap();
                    if conn == 0 {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    let client = lean(&url, 8);
    let r = answered(&client).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        client.idle.lock().unwrap().len(),
        1,
        "kept: nothing extra yet"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = answered(&client).await;
    assert_eq!(r.status, 500, "the second request's own answer");
    assert_eq!(
        *requests.lock().unwrap(),
        [0, 1],
        "sent on a new connection"
    );
}

#[tokio::test]
async fn the_head_bounds_hold_at_their_limits() {
    // An answer head of exactly `MAX_HEAD_BYTES`, `MAX_HEADERS` header
    // lines and `MAX_INTERIM` interim answers is read; one more of any is
    // refused.
    let sized_head = |total: usize| {
        let start = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-pad: ".to_vec();
        let mut a = start.clone();
        a.resize(total - 4, b'a');
        a.extend_from_slice(b"\r\n\r\n");
        a
    };
    let with_headers = |n: usize| {
        let mut a = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n".to_vec();
        for i in 1..n {
            a.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        a.extend_from_slice(b"\r\n");
        a
    };
    let with_interim = |n: usize| {
        let mut a = b"HTTP/1.1 103 Early Hints\r\n\r\n".repeat(n);
        a.extend_from_slice(&ok().0);
        a
    };
    for (answer, refused) in [
        (sized_head(MAX_HEAD_BYTES), None),
        (sized_head(MAX_HEAD_BYTES + 1), Some("over 16384 bytes")),
        (with_headers(MAX_HEADERS), None),
        (with_headers(MAX_HEADERS + 1), Some("malformed")),
        (with_interim(MAX_INTERIM), None),
        (with_interim(MAX_INTERIM + 1), Some("interim answers")),
    ] {
        let upstream = Upstream::start(move |_| (answer.clone(), true)).await;
        let client = upstream.client(8);
        let result = post(&client, "t", b"x").await;
        match refused {
            None => assert_eq!(result.ok().map(|r| r.status), Some(200)),
            Some(expected) => {
                let e = unreachable(result);
                assert!(e.contains(expected), "{e} should say {expected}");
            }
        }
    }
}
