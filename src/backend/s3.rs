//! Object storage: a repository in an S3-compatible bucket (AWS S3, Garage,
//! MinIO, …), through OpenDAL's S3 service (format-spec/README.md §21).
//!
//! The layout is the local one, as object keys under the location's prefix
//! (`config`, `keys/…`, `data/3f/…`, …). A write is one PUT of the whole object,
//! or a multipart upload for objects larger than [`SINGLE_PUT_MAX`]: either way
//! the object appears whole or not at all, so there are no temporary files.
//! Reads of pack ranges are ranged GETs; listings are paginated by OpenDAL.
//!
//! Transient failures (5xx, throttling, timeouts, connection resets) are retried
//! with exponential backoff and jitter; permanent ones (403, a missing bucket)
//! are not. Every error names the object it was about.
//!
//! The trait is synchronous and cairn's pipelines run on threads: each call runs
//! its request on a private tokio runtime with `block_on`, so several threads
//! have several requests in flight ([`Backend::concurrency`]).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::services::S3;
use opendal::{ErrorKind, Operator};

use super::{Backend, Entry, FileType, S3Location};
use crate::error::{Error, Result};

/// Objects up to this size are written with one PUT; larger ones (packs made
/// with a large `--pack-size`) as a multipart upload of parts of this size.
pub const SINGLE_PUT_MAX: usize = 32 << 20;
const PART_SIZE: usize = 16 << 20;
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// Requests the pipelines keep in flight on object storage (pack uploads, pack
/// reads of restore, check and prune): round trips, not bandwidth, bound a
/// single stream. Each in-flight pack is held in memory, so this also bounds
/// what they hold: about this many packs.
pub const REQUESTS_IN_FLIGHT: usize = 8;

/// Retries of a request that failed transiently, after the first attempt; the
/// environment variable `CAIRN_S3_RETRIES` overrides it.
const DEFAULT_RETRIES: usize = 8;
const RETRY_MIN_DELAY: Duration = Duration::from_millis(200);
const RETRY_MAX_DELAY: Duration = Duration::from_secs(20);
/// A request without progress for this long is abandoned (and retried); the
/// environment variable `CAIRN_S3_TIMEOUT` (seconds) overrides it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings given in code rather than taken from the environment (library
/// users, tests). Unset fields fall back to the environment.
#[derive(Clone, Default)]
pub struct S3Settings {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub region: Option<String>,
}

pub struct S3Backend {
    location: S3Location,
    op: Operator,
    rt: tokio::runtime::Runtime,
    retries: usize,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Backend {
    /// Writes `buffer` as the object `key`: one request, or a multipart upload
    /// above [`SINGLE_PUT_MAX`].
    fn put(&self, key: &str, buffer: opendal::Buffer) -> Result<()> {
        let result = if buffer.len() <= SINGLE_PUT_MAX {
            self.block_on(self.op.write(key, buffer))
        } else {
            self.block_on(
                self.op
                    .write_with(key, buffer)
                    .chunk(PART_SIZE)
                    .concurrent(PARTS_IN_FLIGHT),
            )
        };
        result.map(|_| ()).map_err(|e| self.error(key, e))
    }

    /// Connects nothing yet: the first request does. Credentials come from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or an AWS
    /// profile (AWS_PROFILE, ~/.aws/credentials); the region from AWS_REGION or
    /// AWS_DEFAULT_REGION; the endpoint, when the location has none, from
    /// AWS_ENDPOINT_URL.
    pub fn new(location: S3Location) -> Result<Self> {
        Self::with_settings(location, S3Settings::default())
    }

    /// [`Self::new`] with some settings given rather than read from the
    /// environment.
    pub fn with_settings(location: S3Location, settings: S3Settings) -> Result<Self> {
        // OpenDAL's HTTP client (reqwest); installing it again does nothing.
        opendal::install_default();
        let mut b = S3::default()
            .bucket(&location.bucket)
            .root(&format!("/{}", location.prefix))
            // Instance metadata is a network call to a link-local address that
            // hangs off EC2; only asked where the user says so.
            .checksum_algorithm("crc32c");
        if env("CAIRN_S3_INSTANCE_METADATA").as_deref() != Some("1") {
            b = b.disable_ec2_metadata();
        }
        let endpoint = location
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL"));
        if let Some(e) = &endpoint {
            b = b.endpoint(e);
        }
        if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
            b = b.access_key_id(id).secret_access_key(secret);
        }
        if let Some(region) = &settings.region {
            b = b.region(region);
        } else if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
            if endpoint.is_none() {
                return Err(Error::invalid(format!(
                    "{location}: no region: set AWS_DEFAULT_REGION (or AWS_REGION), or give \
                     the endpoint, as s3:https://HOST/{}",
                    location.bucket
                )));
            }
            // S3-compatible servers (MinIO, Garage with its default settings)
            // take any region, or this one.
            b = b.region("us-east-1");
        }
        let timeout = env("CAIRN_S3_TIMEOUT")
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        let retries = env("CAIRN_S3_RETRIES")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_RETRIES);
        let op = Operator::new(b)
            .map_err(|e| Error::invalid(format!("{location}: {e}")))?
            // Innermost: each attempt has its own time limit, and a timed-out
            // attempt is retried like any transient failure.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(timeout)
                    .with_io_timeout(timeout),
            )
            .layer(
                RetryLayer::new()
                    .with_jitter()
                    .with_factor(2.0)
                    .with_min_delay(RETRY_MIN_DELAY)
                    .with_max_delay(RETRY_MAX_DELAY)
                    .with_max_times(retries),
            );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(PathBuf::from(location.to_string()), e))?;
        Ok(S3Backend {
            location,
            op,
            rt,
            retries,
        })
    }

    /// The object key of a file, relative to the location's prefix.
    fn key(t: FileType, name: &str) -> Result<String> {
        let ok = match t {
            FileType::Config => name == "config",
            _ => crate::id::is_file_name(name),
        };
        if !ok {
            return Err(Error::invalid(format!(
                "{name:?} is not a valid name for a {t:?} file"
            )));
        }
        Ok(match t {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("data/{}/{name}", name.get(..2).unwrap_or("00")),
            _ => format!("{}/{name}", t.dir()),
        })
    }

    /// The full name of an object, for messages.
    fn object(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("{}/{key}", self.location))
    }

    /// An OpenDAL error as cairn's, naming the object and saying what to do
    /// where that is clear.
    fn error(&self, key: &str, e: opendal::Error) -> Error {
        let kind = match e.kind() {
            ErrorKind::NotFound => io::ErrorKind::NotFound,
            ErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            ErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            ErrorKind::RateLimited => io::ErrorKind::ResourceBusy,
            ErrorKind::ConfigInvalid | ErrorKind::Unsupported => io::ErrorKind::InvalidInput,
            _ => io::ErrorKind::Other,
        };
        let text = e.to_string();
        let status = http_status(&text);
        let advice = if text.contains("NoSuchBucket") {
            format!(
                " — the bucket {:?} does not exist at this endpoint; create it first",
                self.location.bucket
            )
        } else if e.kind() == ErrorKind::PermissionDenied
            || text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
        {
            " — check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or \
             AWS_PROFILE) and that they may use this bucket"
                .to_string()
        } else if text.contains("AuthorizationHeaderMalformed")
            || (status == Some(400) && text.contains("HeadObject"))
        {
            " — the server refused the request's signature scope; the usual cause is the \
             region: set AWS_DEFAULT_REGION to the server's (Garage: its s3_region)"
                .to_string()
        } else if gave_up(&e, &text, status) {
            format!(" — gave up after {} retries", self.retries)
        } else {
            String::new()
        };
        Error::io(
            self.object(key),
            io::Error::new(kind, format!("{}{advice}", summary(&text, status))),
        )
    }

    fn block_on<F: std::future::IntoFuture>(&self, f: F) -> F::Output {
        self.rt.block_on(f.into_future())
    }

    /// Every object under `dir/` (recursively), as (key, entry).
    fn list_under(&self, dir: &str) -> Result<Vec<(String, Entry)>> {
        let listed = self
            .block_on(self.op.list_with(dir).recursive(true))
            .map_err(|e| self.error(dir, e))?;
        let mut out = Vec::with_capacity(listed.len());
        for e in listed {
            let m = e.metadata();
            if !m.is_file() {
                continue;
            }
            let Some(name) = e.path().rsplit('/').next() else {
                continue;
            };
            out.push((
                e.path().to_string(),
                Entry {
                    name: name.to_string(),
                    size: m.content_length(),
                    modified: m.last_modified().map(SystemTime::from),
                },
            ));
        }
        Ok(out)
    }

    /// The first object under the prefix, if any: one listing request of one
    /// key (`list_with(..).limit(1)` would page through all of them).
    fn first_object(&self) -> Result<Option<String>> {
        use futures::TryStreamExt;
        self.block_on(async {
            let mut lister = self.op.lister_with("").recursive(true).limit(1).await?;
            while let Some(e) = lister.try_next().await? {
                if e.metadata().is_file() {
                    return Ok(Some(e.path().to_string()));
                }
            }
            Ok(None)
        })
        .map_err(|e| self.error("", e))
    }

    fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let fut = self.op.read_with(key);
        let fut = match range {
            Some((start, end)) => fut.range(start..end),
            None => fut,
        };
        match self.block_on(fut) {
            Ok(b) => Ok(b.to_vec()),
            Err(e) => Err(self.error(key, e)),
        }
    }
}

/// The HTTP status of the response an OpenDAL error describes, if any.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status: ")? + "status: ".len();
    let digits: String = text
        .get(at..)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Whether `e` is a transient failure that the retries gave up on. The retry
/// layer marks every error it returns persistent, retried or not, so
/// `is_temporary` no longer tells; the failure itself does, as OpenDAL's S3
/// service and HTTP client class them: answers 429, 499, 500, 502, 503 and
/// 504 (throttling, server errors), requests that got no answer (not sent,
/// response cut off) and timeouts.
fn gave_up(e: &opendal::Error, text: &str, status: Option<u16>) -> bool {
    e.is_temporary()
        || e.kind() == ErrorKind::RateLimited
        || match status {
            Some(s) => matches!(s, 429 | 499 | 500 | 502 | 503 | 504),
            None => [
                "send http request",
                "read data from http response",
                "timeout reached",
            ]
            .iter()
            .any(|m| text.contains(m)),
        }
}

/// An OpenDAL error's text on one line, without its context block (request
/// URI, response headers), plus the S3 operation and HTTP status from it.
fn summary(text: &str, status: Option<u16>) -> String {
    let operation = text
        .find("service_operation: ")
        .and_then(|i| text.get(i + "service_operation: ".len()..))
        .and_then(|rest| rest.split([',', ' ', '}']).next())
        .filter(|op| !op.is_empty());
    let mut short = text.to_string();
    if let Some(start) = text.find(", context: {") {
        let mut depth = 0usize;
        let open = start + ", context: ".len();
        let end = text
            .char_indices()
            .skip_while(|(i, _)| *i < open)
            .find(|(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                depth == 0
            })
            .map(|(i, _)| i + 1);
        if let (Some(head), Some(tail)) = (text.get(..start), end.and_then(|e| text.get(e..))) {
            short = format!("{head}{tail}");
        }
    }
    let mut out = short.split_whitespace().collect::<Vec<_>>().join(" ");
    match (operation, status) {
        (Some(op), Some(s)) => out.push_str(&format!(" [{op}, HTTP {s}]")),
        (Some(op), None) => out.push_str(&format!(" [{op}]")),
        (None, Some(s)) => out.push_str(&format!(" [HTTP {s}]")),
        (None, None) => {}
    }
    out
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.location.to_string()
    }

    fn create(&self) -> Result<()> {
        // Anything under the prefix, a repository or not, is refused; a
        // missing bucket or bad credentials fail here, before a password is set.
        if self.first_object()?.is_some() {
            return Err(Error::RepositoryExists(self.location()));
        }
        Ok(())
    }

    fn is_repository(&self) -> Result<bool> {
        match self.block_on(self.op.stat("config")) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // A missing bucket answers NotFound for every object: say so,
                // rather than "not a repository".
                self.first_object().map(|_| false)
            }
            Err(e) => Err(self.error("config", e)),
        }
    }

    fn list(&self, t: FileType) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = match t {
            FileType::Config => match self.block_on(self.op.stat("config")) {
                Ok(m) if m.is_file() => vec![Entry {
                    name: "config".into(),
                    size: m.content_length(),
                    modified: m.last_modified().map(SystemTime::from),
                }],
                Ok(_) => Vec::new(),
                Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(self.error("config", e)),
            },
            // Packs are one level down, as on disk: `data/3f/3f…`.
            FileType::Pack => self
                .list_under("data/")?
                .into_iter()
                .filter(|(key, _)| key.split('/').count() == 3)
                .map(|(_, e)| e)
                .collect(),
            _ => {
                let dir = format!("{}/", t.dir());
                self.list_under(&dir)?
                    .into_iter()
                    .filter(|(key, _)| key.split('/').count() == 2)
                    .map(|(_, e)| e)
                    .collect()
            }
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, t: FileType, name: &str, max_len: u64) -> Result<Vec<u8>> {
        let key = Self::key(t, name)?;
        // The size first (HEAD), so that an object too large is refused before
        // any of it is fetched; then one GET of exactly that many bytes.
        let size = self
            .block_on(self.op.stat(&key))
            .map_err(|e| self.error(&key, e))?
            .content_length();
        if size > max_len {
            return Err(Error::corrupt(
                self.object(&key).display().to_string(),
                format!("{size} bytes is larger than the {max_len} bytes such a file may have"),
            ));
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.get(&key, Some((0, size)))?;
        if bytes.len() as u64 != size {
            return Err(Error::corrupt(
                self.object(&key).display().to_string(),
                format!("{} bytes read of the {size} it had", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    fn read_range(&self, t: FileType, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let key = Self::key(t, name)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.checked_add(len).ok_or_else(|| {
            Error::corrupt(
                self.object(&key).display().to_string(),
                format!("range {offset}+{len} overflows"),
            )
        })?;
        let short = |got: u64| {
            Error::corrupt(
                self.object(&key).display().to_string(),
                format!("range {offset}+{len} is past the end of the object ({got} bytes read)"),
            )
        };
        match self.block_on(self.op.read_with(&key).range(offset..end)) {
            Ok(b) if b.len() as u64 == len => Ok(b.to_vec()),
            Ok(b) => Err(short(b.len() as u64)),
            Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => Err(short(0)),
            Err(e) => Err(self.error(&key, e)),
        }
    }

    fn write(&self, t: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_parts(t, name, &[data])
    }

    fn write_parts(&self, t: FileType, name: &str, parts: &[&[u8]]) -> Result<()> {
        let key = Self::key(t, name)?;
        let buffer: opendal::Buffer = parts
            .iter()
            .map(|p| bytes::Bytes::copy_from_slice(p))
            .collect::<Vec<_>>()
            .into();
        self.put(&key, buffer)
    }

    fn write_owned(&self, t: FileType, name: &str, data: Vec<u8>) -> Result<()> {
        let key = Self::key(t, name)?;
        self.put(&key, bytes::Bytes::from(data).into())
    }

    fn remove(&self, t: FileType, name: &str) -> Result<()> {
        let key = Self::key(t, name)?;
        self.block_on(self.op.delete(&key))
            .map_err(|e| self.error(&key, e))
    }

    fn concurrency(&self) -> usize {
        REQUESTS_IN_FLIGHT
    }

    fn write_through_cache(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_texts_lose_their_headers_and_keep_status_and_operation() {
        let text = "Unexpected (persistent) at stat, context: { service_operation: HeadObject, \
                    uri: http://h/b/config, response: Parts { status: 400, headers: {\"a\": \"b\"} }, \
                    service: s3, path: config } => S3Error { code: \"X\" }";
        let status = http_status(text);
        assert_eq!(status, Some(400));
        assert_eq!(
            summary(text, status),
            "Unexpected (persistent) at stat => S3Error { code: \"X\" } [HeadObject, HTTP 400]"
        );
    }

    /// Regression: the retry layer marks every error it returns persistent,
    /// so a failure that was retried until the retries ran out said nothing
    /// of it (only errors still marked temporary did, and none were).
    #[test]
    fn failures_retried_to_the_end_say_so_and_others_do_not() {
        let loc = S3Location::parse("s3:http://127.0.0.1:1/bucket/p").unwrap();
        let backend = S3Backend::with_settings(
            loc,
            S3Settings {
                access_key_id: Some("id".into()),
                secret_access_key: Some("secret".into()),
                region: Some("garage".into()),
            },
        )
        .unwrap();
        let answered = |kind, status: u16| {
            opendal::Error::new(kind, "S3Error { code: \"X\" }")
                .with_context("service_operation", "PutObject")
                .with_context("response", format!("Parts {{ status: {status} }}"))
                .set_persistent()
        };
        let unanswered = |what: &str| {
            opendal::Error::new(ErrorKind::Unexpected, what.to_string()).set_persistent()
        };
        let message = |e| backend.error("data/ab/abcd", e).to_string();
        for e in [
            answered(ErrorKind::Unexpected, 503),
            answered(ErrorKind::Unexpected, 500),
            answered(ErrorKind::RateLimited, 429),
            unanswered("send http request"),
            unanswered("io operation timeout reached"),
        ] {
            let m = message(e);
            assert!(
                m.ends_with(&format!("gave up after {} retries", backend.retries)),
                "{m}"
            );
        }
        for e in [
            answered(ErrorKind::PermissionDenied, 403),
            answered(ErrorKind::Unexpected, 400),
            answered(ErrorKind::Unexpected, 501),
            unanswered("deserialize xml"),
        ] {
            let m = message(e);
            assert!(!m.contains("gave up"), "{m}");
        }
    }

    #[test]
    fn object_keys_follow_the_local_layout() {
        let id = "ab".repeat(32);
        assert_eq!(
            S3Backend::key(FileType::Pack, &id).unwrap(),
            format!("data/ab/{id}")
        );
        assert_eq!(
            S3Backend::key(FileType::Index, &id).unwrap(),
            format!("index/{id}")
        );
        assert_eq!(
            S3Backend::key(FileType::Config, "config").unwrap(),
            "config"
        );
        assert!(S3Backend::key(FileType::Pack, "../x").is_err());
    }
}
