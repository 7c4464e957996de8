//! Integration tests, compiled into one binary.

mod batches;
mod cache;
mod cli;
mod common;
mod concurrency;
mod conformance;
mod copy;
mod dedup;
mod descriptors;
mod drill;
mod errors;
mod faults;
mod faulty;
mod fixture;
mod full_disk;
#[cfg(feature = "s3")]
mod garage;
mod generate;
mod health;
mod hostile;
mod inspect;
mod json;
mod keys;
mod locks;
mod mount;
mod password;
mod plan;
mod plan_run;
mod prune;
mod rebackup;
mod repair_packs;
mod restore;
mod resume;
mod rewrite;
mod rollback;
mod roundtrip;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
mod s3_cluster;
#[cfg(feature = "s3")]
mod s3_faults;
#[cfg(feature = "s3")]
mod s3proxy;
mod source_trouble;
mod sources;
mod vectors;
