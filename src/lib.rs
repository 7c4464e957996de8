//! cairn: content-addressed, deduplicating, encrypted backups.
//!
//! The stored format is specified in `format-spec/README.md`; modules point at its
//! sections rather than repeating layouts.

pub mod archiver;
pub mod backend;
pub mod cache;
pub mod check;
pub mod chunker;
pub mod clock;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod drill;
pub mod error;
pub mod forget;
pub mod format;
pub mod id;
pub mod index;
pub mod inspect;
pub mod keyfile;
pub mod keys;
pub mod leftovers;
pub mod lock;
pub mod mount;
pub mod pack;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod readahead;
pub mod record;
pub mod remedy;
pub mod repair;
pub mod repair_packs;
pub mod repository;
pub mod restorer;
pub mod rewrite;
pub mod seen;
pub mod select;
pub mod snapshot;
pub mod text;
pub mod tree;
pub mod walk;

pub use error::{Error, Result};
