//! The crash harness (issue 13): every command that writes to a repository,
//! SIGKILLed at many moments spread over its run, and after each kill the
//! repository judged: `check` reports no damage the prepared state doesn't
//! explain, every snapshot restores byte for byte what it restored before, and
//! the next run of the same command succeeds and converges — it checks clean
//! with every byte read, and a second run changes nothing.
//!
//! Slow in a debug build and tagged `ignore`, so `cargo test` leaves it out; run
//! it alone, in release:
//!
//! ```sh
//! cargo test --release --features test-hooks --test crash -- --ignored --nocapture
//! ```
//!
//! Each test prints one line: its kill points, how many landed while the
//! operation was still running, and how long the operation takes.

#[path = "../it/common.rs"]
mod common;
mod harness;
mod scenarios;

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn backup() {
    harness::run(&scenarios::backup());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn prune() {
    harness::run(&scenarios::prune());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn forget_prune() {
    harness::run(&scenarios::forget_prune());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn repair_packs() {
    harness::run(&scenarios::repair_packs());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn repair_index() {
    harness::run(&scenarios::repair_index());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn repair_snapshots() {
    harness::run(&scenarios::repair_snapshots());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn key_add() {
    harness::run(&scenarios::key_add());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn key_remove() {
    harness::run(&scenarios::key_remove());
}

#[test]
#[ignore = "the crash harness; run it in release: cargo test --release --features test-hooks --test crash -- --ignored"]
fn copy() {
    harness::run(&scenarios::copy());
}
