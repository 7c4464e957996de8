//! Integration tests, compiled into one binary.

mod cache;
mod common;
mod dedup;
mod errors;
mod fixture;
mod health;
mod keys;
mod locks;
mod roundtrip;
mod vectors;
