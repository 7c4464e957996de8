//! Integration tests, compiled into one binary.

mod cache;
mod cli;
mod common;
mod concurrency;
mod conformance;
mod copy;
mod dedup;
mod drill;
mod errors;
mod fixture;
mod health;
mod hostile;
mod keys;
mod locks;
mod password;
mod plan;
mod plan_run;
mod prune;
mod repair_packs;
mod restore;
mod resume;
mod roundtrip;
mod sources;
mod vectors;
