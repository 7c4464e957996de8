//! dedup tests.
