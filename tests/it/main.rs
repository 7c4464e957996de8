//! Integration tests, compiled into one binary.

mod cache;
mod cli;
mod common;
mod conformance;
mod copy;
mod dedup;
mod drill;
mod errors;
mod faults;
mod faulty;
mod fixture;
mod full_disk;
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
