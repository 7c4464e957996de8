//! Integration tests, compiled into one binary.

mod cache;
mod common;
mod conformance;
mod dedup;
mod errors;
mod fixture;
mod health;
mod hostile;
mod keys;
mod locks;
mod password;
mod restore;
mod roundtrip;
mod vectors;
