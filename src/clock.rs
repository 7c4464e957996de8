//! The time recorded in snapshots and records, and against which plans decide
//! what is due.
//!
//! `CAIRN_NOW` (an RFC 3339 time) replaces the system clock here, so that tests
//! can run a plan over months of simulated time. It is deliberately not in
//! `--help`: nothing but snapshot times, record times and plan decisions follow
//! it. Locks, the cache and temporary-file ages keep the real clock, because
//! they are about other processes running now.

use chrono::{DateTime, FixedOffset, SecondsFormat};

use crate::error::{Error, Result};

/// The environment variable read by [`now`].
pub const ENV: &str = "CAIRN_NOW";

/// The current time: `CAIRN_NOW` if set, else the system clock in the local
/// offset.
pub fn now() -> Result<DateTime<FixedOffset>> {
    match std::env::var(ENV) {
        Ok(v) if !v.is_empty() => DateTime::parse_from_rfc3339(&v)
            .map_err(|e| Error::invalid(format!("{ENV}={v:?} is not an RFC 3339 time: {e}"))),
        _ => Ok(chrono::Local::now().fixed_offset()),
    }
}

/// [`now`] as stored in snapshots and records. An unusable `CAIRN_NOW` falls
/// back to the system clock here; commands that act on the time call [`now`]
/// first and report it.
pub fn now_rfc3339() -> String {
    let t = now().unwrap_or_else(|_| chrono::Local::now().fixed_offset());
    t.to_rfc3339_opts(SecondsFormat::Nanos, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        let t = now_rfc3339();
        assert!(DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
    }
}
