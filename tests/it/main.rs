//! Integration tests, compiled into one binary.

mod common;
mod dedup;
mod errors;
mod fixture;
mod health;
mod roundtrip;
mod vectors;
