//! Object-storage locations as users write them (`s3:…`, format-spec §21):
//! parsed whether or not this cairn was built with the object-storage backend,
//! so that plan files and messages can name them.

use crate::error::{Error, Result};

/// The scheme prefix of an object-storage location (`s3:…`).
pub const SCHEME: &str = "s3:";

/// Where a repository lives in object storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http(s)://host[:port]`, or `None` for the environment's (or AWS's).
    pub endpoint: Option<String>,
    pub bucket: String,
    /// Object key prefix, without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// Whether `s` names object storage rather than a local directory.
    pub fn is_s3(s: &str) -> bool {
        s.starts_with(SCHEME)
    }

    /// Parses `s3:http(s)://host[:port]/bucket[/prefix]` (endpoint form) or
    /// `s3:bucket[/prefix]` (endpoint and region from the environment).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("repository location {s:?}: {why}"));
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("an object storage location starts with \"s3:\""))?;
        let (endpoint, path) = if let Some((scheme, after)) = rest
            .strip_prefix("http://")
            .map(|a| ("http", a))
            .or_else(|| rest.strip_prefix("https://").map(|a| ("https", a)))
        {
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(bad("the endpoint has no host"));
            }
            if host.contains('@') {
                // Not echoed: the location holds a secret.
                return Err(Error::invalid(
                    "the repository location has credentials in it (user:password@); they \
                     don't go there, since the location is printed in messages: set \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                ));
            }
            if host.contains(['?', '#']) {
                return Err(bad("the endpoint may not have a query or fragment"));
            }
            (Some(format!("{scheme}://{host}")), path)
        } else {
            // `s3://bucket/prefix`, as other tools write it, means the same.
            (None, rest.strip_prefix("//").unwrap_or(rest))
        };
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad(
                "no bucket named: write s3:BUCKET/PREFIX or s3:http://HOST:PORT/BUCKET/PREFIX",
            ));
        }
        if !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(&format!(
                "{bucket:?} is not a bucket name (letters, digits, '-', '_' and '.')"
            )));
        }
        for seg in prefix.split('/').filter(|_| !prefix.is_empty()) {
            if seg.is_empty() || seg == "." || seg == ".." {
                return Err(bad(&format!(
                    "the prefix {prefix:?} has an empty, \".\" or \"..\" part"
                )));
            }
        }
        if prefix.chars().any(char::is_control) {
            return Err(bad("the prefix has control characters"));
        }
        Ok(S3Location {
            endpoint,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(SCHEME)?;
        if let Some(e) = &self.endpoint {
            write!(f, "{e}/")?;
        }
        f.write_str(&self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_in_both_forms() {
        let l = S3Location::parse("s3:http://127.0.0.1:3900/bucket/some/prefix/").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("bucket", "some/prefix")
        );
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:3900/bucket/some/prefix");

        let l = S3Location::parse("s3:bucket").unwrap();
        assert_eq!(
            (l.endpoint.as_deref(), l.bucket.as_str(), l.prefix.as_str()),
            (None, "bucket", "")
        );
        assert_eq!(l.to_string(), "s3:bucket");
        let l = S3Location::parse("s3://bucket/p").unwrap();
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "p"));
        let l = S3Location::parse("s3:https://s3.example.com/b/p").unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("https://s3.example.com"));
    }

    #[test]
    fn bad_locations_are_refused_with_the_reason() {
        for (s, why) in [
            ("s3:", "no bucket"),
            ("s3:http:///b", "no host"),
            ("s3:http://key:secret@host/b", "credentials"),
            ("s3:b/a//c", "empty"),
            ("s3:b/../c", "\"..\""),
            ("s3:b c/p", "not a bucket name"),
            ("s3:http://host:1/", "no bucket"),
        ] {
            let e = S3Location::parse(s).unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
            assert!(!e.contains("secret@"), "{e}");
        }
    }
}
