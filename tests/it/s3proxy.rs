//! A fault-injecting HTTP/1.1 proxy for the object-storage tests: it stands
//! between cairn and a Garage S3 endpoint, forwards each request as it came
//! (the Host header too: the request's AWS signature covers it, and Garage
//! checks it against what it receives), logs it, and fails the requests a test
//! picks, as a throttled, flaky or hung object store would.
//!
//! It runs on threads of the test process: one accepting, one per client
//! connection, each keeping its own connection to Garage. It handles what an
//! S3 client sends: one request at a time per connection (keep-alive, no
//! pipelining), bodies by Content-Length or chunked, no `Expect:
//! 100-continue` and no upgrades.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The longest head (request or status line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;

/// What the proxy does to a request instead of forwarding it straight away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this HTTP status and an S3 XML error body with the code
    /// that goes with it (503 SlowDown, 500 InternalError, 429
    /// TooManyRequests, 403 AccessDenied, 404 NoSuchKey); not forwarded.
    Status(u16),
    /// Reads the whole request, then drops the connection with a TCP reset,
    /// unanswered; not forwarded.
    Reset,
    /// Waits this long, then forwards the request, unless the client has hung
    /// up meanwhile (it gave up waiting): then it is dropped, not forwarded.
    Stall(Duration),
}

/// A request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target's path as sent (percent-encoded), bucket first:
    /// `/cairn/PREFIX/data/ab/ab…`.
    pub path: String,
    /// The query, without its `?`; empty if none.
    pub query: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

impl Request {
    /// The object key: the path without the bucket (`PREFIX/data/ab/ab…`);
    /// empty for requests on the bucket itself, such as listings.
    pub fn key(&self) -> &str {
        let path = self.path.strip_prefix('/').unwrap_or(&self.path);
        path.split_once('/').map_or("", |(_bucket, key)| key)
    }

    /// Whether this is an object listing (ListObjectsV2).
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.param("list-type").is_some()
    }

    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
    }

    /// What the request is about: the object key, or for a listing `list`
    /// and its prefix.
    pub fn subject(&self) -> String {
        if self.is_list() {
            format!("list {}", self.param("prefix").unwrap_or_default())
        } else {
            self.key().to_string()
        }
    }

    /// [`Self::subject`] and the range if any, for messages.
    pub fn target(&self) -> String {
        let mut t = self.subject();
        if let Some(r) = &self.range {
            t.push_str(&format!(" [{r}]"));
        }
        t
    }

    /// The same request again: method, path, query and range.
    pub fn same_as(&self, other: &Request) -> bool {
        (&self.method, &self.path, &self.query, &self.range)
            == (&other.method, &other.path, &other.query, &other.range)
    }
}

/// One request in the proxy's log. `seq` and `done` are read from one clock
/// that every connection's events advance, so they order events across
/// connections.
#[derive(Clone, Debug)]
pub struct Logged {
    /// When the whole request had arrived.
    pub seq: u64,
    pub request: Request,
    pub fault: Option<Fault>,
    /// The status of the response sent back (Garage's or an injected one);
    /// `None` when none was: a reset, a stalled request whose client hung up,
    /// or a failure talking to Garage.
    pub status: Option<u16>,
    /// When the response was about to be written back to the client: the
    /// client can't have seen it before this point.
    pub done: Option<u64>,
}

impl Logged {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.request;
        write!(f, "#{:<4} {:<6} {}", self.seq, r.method, r.target())?;
        if !r.query.is_empty() && !r.is_list() {
            write!(f, " ?{}", r.query)?;
        }
        match self.status {
            Some(s) => write!(f, " → {s}")?,
            None => write!(f, " → (no answer)")?,
        }
        if let Some(d) = self.done {
            write!(f, " @{d}")?;
        }
        if let Some(fault) = &self.fault {
            write!(f, "  FAULT {fault:?}")?;
        }
        Ok(())
    }
}

/// Renders log entries one a line, for assertion messages.
pub fn render(entries: &[Logged]) -> String {
    entries.iter().map(|e| format!("{e}\n")).collect()
}

type Matcher = Box<dyn Fn(&Request) -> bool + Send>;

struct Rule {
    method: String,
    matches: Matcher,
    left: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    clock: u64,
    log: Vec<Logged>,
    rules: Vec<Rule>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread leaves nothing half-updated that
        // matters here: carry on with the log as it is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Logs a request that has arrived whole and picks its fault: the first
    /// rule, in the order they were added, that matches it and has uses left.
    fn arrived(&self, request: Request) -> (usize, Option<Fault>) {
        let mut st = self.state();
        st.clock += 1;
        let seq = st.clock;
        let fault = st
            .rules
            .iter_mut()
            .find(|r| r.left > 0 && r.method == request.method && (r.matches)(&request))
            .map(|r| {
                r.left -= 1;
                r.fault.clone()
            });
        st.log.push(Logged {
            seq,
            request,
            fault: fault.clone(),
            status: None,
            done: None,
        });
        (st.log.len() - 1, fault)
    }

    fn answered(&self, at: usize, status: u16) {
        let mut st = self.state();
        st.clock += 1;
        let now = st.clock;
        if let Some(e) = st.log.get_mut(at) {
            e.status = Some(status);
            e.done = Some(now);
        }
    }
}

/// The proxy; it stops accepting connections when dropped.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`, as `Garage::endpoint` gives it).
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("upstream {upstream:?} is not http://IP:PORT"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy's port");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let for_accept = Arc::clone(&shared);
        let accept = thread::Builder::new()
            .name("s3proxy-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if for_accept.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = Arc::clone(&for_accept);
                    // A connection the proxy can't serve ends; the client
                    // sees it closed, as it would see a failing server.
                    let _ = thread::Builder::new()
                        .name("s3proxy-conn".into())
                        .spawn(move || {
                            let _ = serve(conn, &shared);
                        });
                }
            })
            .expect("starting the proxy's thread");
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `s3:http://127.0.0.1:PORT/BUCKET/PREFIX`: `prefix` in the bucket,
    /// reached through the proxy.
    pub fn location(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!(
            "s3:{}/{}/{prefix}",
            self.endpoint(),
            crate::garage::BUCKET
        ))
    }

    /// Applies `fault` to the next `times` requests with this method for
    /// which `matches` holds. Rules are tried in the order they were added;
    /// a request gets at most one fault.
    pub fn fail(
        &self,
        method: &str,
        matches: impl Fn(&Request) -> bool + Send + 'static,
        times: usize,
        fault: Fault,
    ) {
        self.shared.state().rules.push(Rule {
            method: method.to_string(),
            matches: Box::new(matches),
            left: times,
            fault,
        });
    }

    /// [`Self::fail`] for requests whose path contains `part` (`/data/`).
    pub fn fail_path(&self, method: &str, part: &str, times: usize, fault: Fault) {
        let part = part.to_string();
        self.fail(method, move |r| r.path.contains(&part), times, fault);
    }

    /// Removes every rule: from now on every request is forwarded.
    pub fn clear(&self) {
        self.shared.state().rules.clear();
    }

    /// How many faults the rules still had to give, in total: zero once every
    /// rule with a finite count has been used up.
    pub fn faults_left(&self) -> usize {
        self.shared
            .state()
            .rules
            .iter()
            .map(|r| r.left)
            .fold(0, usize::saturating_add)
    }

    /// Every request so far, in the order they arrived.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.state().log.clone()
    }

    /// How many requests have arrived so far: with [`Self::log_since`], the
    /// requests of one command.
    pub fn mark(&self) -> usize {
        self.shared.state().log.len()
    }

    /// The requests that arrived after [`Self::mark`] returned `mark`.
    pub fn log_since(&self, mark: usize) -> Vec<Logged> {
        self.shared
            .state()
            .log
            .get(mark..)
            .map(<[Logged]>::to_vec)
            .unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// An HTTP message read off a connection: its bytes as they came, and the
/// parts of its head the proxy needs.
struct Message {
    raw: Vec<u8>,
    start: String,
    headers: Vec<(String, String)>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        self.header("content-length")
            .map(|v| v.trim().parse().map_err(|_| invalid("bad Content-Length")))
            .transpose()
    }

    /// Whether the sender will close the connection after this message.
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one line (up to and including `\n`) into `raw`; the line's text
/// without its line end. `None` at end of stream before any byte.
fn read_line(r: &mut impl BufRead, raw: &mut Vec<u8>) -> io::Result<Option<String>> {
    let before = raw.len();
    let n = r.take(MAX_HEAD as u64).read_until(b'\n', raw)?;
    if n == 0 {
        return Ok(None);
    }
    let line = raw.get(before..).unwrap_or_default();
    let Some(line) = line.strip_suffix(b"\n") else {
        return Err(invalid("a line too long, or cut short"));
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Ok(Some(String::from_utf8_lossy(line).into_owned()))
}

/// Reads a message's head: its start line and headers. `None` when the
/// stream ends cleanly before one starts.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    let Some(start) = read_line(r, &mut raw)? else {
        return Ok(None);
    };
    let mut headers = Vec::new();
    loop {
        let line = read_line(r, &mut raw)?.ok_or_else(|| invalid("head cut short"))?;
        if line.is_empty() {
            break;
        }
        if raw.len() > MAX_HEAD {
            return Err(invalid("head too long"));
        }
        let (k, v) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some(Message {
        raw,
        start,
        headers,
    }))
}

/// How a message's body ends.
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Appends the body, framed as `framing` says, to `msg.raw`, as it came.
fn read_body(r: &mut impl BufRead, framing: Framing, msg: &mut Message) -> io::Result<()> {
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => {
            let got = r.take(n).read_to_end(&mut msg.raw)?;
            if got as u64 != n {
                return Err(invalid("body cut short"));
            }
        }
        Framing::UntilClose => {
            r.read_to_end(&mut msg.raw)?;
        }
        Framing::Chunked => loop {
            let line = read_line(r, &mut msg.raw)?.ok_or_else(|| invalid("chunk cut short"))?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let t =
                        read_line(r, &mut msg.raw)?.ok_or_else(|| invalid("trailers cut short"))?;
                    if t.is_empty() {
                        return Ok(());
                    }
                }
            }
            // The chunk and the line end after it.
            let want = size + 2;
            let got = r.take(want).read_to_end(&mut msg.raw)?;
            if got as u64 != want {
                return Err(invalid("chunk cut short"));
            }
        },
    }
    Ok(())
}

/// Reads one whole request; `None` when the client closed the connection
/// between requests.
fn read_request(r: &mut impl BufRead) -> io::Result<Option<(Message, Request)>> {
    let Some(mut msg) = read_head(r)? else {
        return Ok(None);
    };
    let mut parts = msg.start.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(invalid("bad request line"));
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        range: msg.header("range").map(str::to_string),
    };
    let framing = if msg.chunked() {
        Framing::Chunked
    } else {
        match msg.content_length()? {
            Some(n) => Framing::Length(n),
            None => Framing::Empty,
        }
    };
    read_body(r, framing, &mut msg)?;
    Ok(Some((msg, request)))
}

/// Reads one whole response to a request with `method`, and its status.
/// `None` when the connection ended before any of it.
fn read_response(r: &mut impl BufRead, method: &str) -> io::Result<Option<(Message, u16)>> {
    let Some(mut msg) = read_head(r)? else {
        return Ok(None);
    };
    let status: u16 = msg
        .start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("bad status line"))?;
    let framing = if method == "HEAD" || status < 200 || status == 204 || status == 304 {
        // A HEAD response has the Content-Length of the body a GET would
        // have had, and no body.
        Framing::Empty
    } else if msg.chunked() {
        Framing::Chunked
    } else {
        match msg.content_length()? {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let until_close = matches!(framing, Framing::UntilClose);
    read_body(r, framing, &mut msg)?;
    if until_close {
        msg.headers.push(("connection".into(), "close".into()));
    }
    Ok(Some((msg, status)))
}

/// One client connection: requests in turn until the client closes it, a
/// fault or a response ends it, or something goes wrong.
fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let mut upstream: Option<BufReader<TcpStream>> = None;
    while let Some((msg, request)) = read_request(&mut from_client)? {
        let method = request.method.clone();
        let (at, fault) = shared.arrived(request.clone());
        match fault {
            Some(Fault::Status(status)) => {
                // Logged before the client can see it: a test that reads the
                // log once the client is done finds every answer in it.
                shared.answered(at, status);
                to_client.write_all(&error_response(status, &request, at))?;
                to_client.flush()?;
                if msg.closes() {
                    return Ok(());
                }
                continue;
            }
            Some(Fault::Reset) => {
                reset(&to_client);
                return Ok(());
            }
            Some(Fault::Stall(d)) => {
                thread::sleep(d);
                if hung_up(&to_client) {
                    return Ok(());
                }
            }
            None => {}
        }
        let (response, status) = forward(&mut upstream, shared.upstream, &msg, &method)?;
        shared.answered(at, status);
        to_client.write_all(&response.raw)?;
        to_client.flush()?;
        if msg.closes() || response.closes() {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends `msg` to Garage on the connection kept for this client (made anew
/// if there is none, or if Garage had closed the kept one before it read
/// anything) and reads the response.
fn forward(
    conn: &mut Option<BufReader<TcpStream>>,
    upstream: SocketAddr,
    msg: &Message,
    method: &str,
) -> io::Result<(Message, u16)> {
    for _ in 0..2 {
        let reused = conn.is_some();
        let c = match conn {
            Some(c) => c,
            None => conn.insert(BufReader::new(TcpStream::connect(upstream)?)),
        };
        let sent = c
            .get_mut()
            .write_all(&msg.raw)
            .and_then(|_| c.get_mut().flush());
        let got = match sent {
            Ok(()) => read_response(c, method),
            Err(e) => Err(e),
        };
        match got {
            Ok(Some((response, status))) => {
                if response.closes() {
                    *conn = None;
                }
                return Ok((response, status));
            }
            // A kept connection Garage had closed: once more on a new one.
            Ok(None) | Err(_) if reused => *conn = None,
            Ok(None) => return Err(invalid("Garage closed the connection unanswered")),
            Err(e) => return Err(e),
        }
    }
    Err(invalid("Garage closed two connections unanswered"))
}

/// An S3 error response with `status` and the error code that goes with it.
fn error_response(status: u16, request: &Request, at: usize) -> Vec<u8> {
    let (reason, code) = match status {
        403 => ("Forbidden", "AccessDenied"),
        404 => ("Not Found", "NoSuchKey"),
        429 => ("Too Many Requests", "TooManyRequests"),
        500 => ("Internal Server Error", "InternalError"),
        503 => ("Slow Down", "SlowDown"),
        _ => ("Injected Fault", "InjectedFault"),
    };
    let resource: String = request
        .path
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '&'))
        .collect();
    let body = if request.method == "HEAD" {
        String::new()
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>injected by the test proxy</Message><Resource>{resource}</Resource>\
             <RequestId>fault-{at}</RequestId></Error>"
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\n\
         content-length: {}\r\nx-amz-request-id: fault-{at}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Makes the connection end with a TCP reset (RST) rather than an orderly
/// close when its last handle is dropped.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open (`stream` owns it) and `linger` is a
    // valid `struct linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Whether the client has closed its end (or reset it), without consuming
/// anything it sent.
fn hung_up(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let gone = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    gone || stream.set_nonblocking(false).is_err()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
