//! Integration tests, compiled into one binary.

mod cache;
mod common;
mod dedup;
mod errors;
mod fixture;
mod health;
mod keys;
mod password;
mod roundtrip;
mod vectors;
