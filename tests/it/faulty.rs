//! A storage backend that fails one chosen call: the tests' fault injection for
//! every storage operation (format-spec §16 says what each failure may leave).
//!
//! Calls are numbered in the order they reach the backend. A counting run (no
//! fault) lists a small operation's calls; the tests then run the operation again
//! once per call and per fault that call can meet, each time on a fresh copy of
//! the repository, so that every failure point is exercised.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn::backend::{Backend, Entry, FileType, LocalBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Read,
    ReadRange,
    Write,
    List,
    Remove,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// EIO before anything happens.
    Eio,
    /// A read that returns fewer bytes than the file (or the range) holds.
    Short,
    /// A write whose rename never happened: part of the data is left in a
    /// temporary file, nothing under the name, and the call fails.
    Torn,
    /// The write or remove happened, but the call fails (the directory's fsync
    /// failing after the rename, say): the caller can't know it is done.
    Unacked,
}

impl Op {
    pub fn faults(self) -> &'static [Fault] {
        match self {
            Op::Read | Op::ReadRange => &[Fault::Eio, Fault::Short],
            Op::Write => &[Fault::Eio, Fault::Torn, Fault::Unacked],
            Op::List => &[Fault::Eio],
            Op::Remove => &[Fault::Eio, Fault::Unacked],
        }
    }
}

/// One call that reached the backend.
#[derive(Clone, Debug)]
pub struct Call {
    pub op: Op,
    pub t: FileType,
    pub name: String,
    /// The fault injected into this call, if any.
    pub fault: Option<Fault>,
    /// Whether the call returned Ok.
    pub ok: bool,
}

pub struct FaultyBackend {
    pub inner: LocalBackend,
    calls: AtomicUsize,
    plan: Option<(usize, Fault)>,
    log: Mutex<Vec<Call>>,
}

impl FaultyBackend {
    /// Fails call number `n` (0-based) with `fault`, if that call can meet it.
    pub fn new(repo: &Path, plan: Option<(usize, Fault)>) -> Self {
        Self {
            inner: LocalBackend::new(repo),
            calls: AtomicUsize::new(0),
            plan,
            log: Mutex::new(Vec::new()),
        }
    }

    pub fn log(&self) -> Vec<Call> {
        self.log.lock().expect("log").clone()
    }

    /// The call that was faulted.
    pub fn faulted(&self) -> Option<Call> {
        self.log().into_iter().find(|c| c.fault.is_some())
    }

    /// Numbers the call and says which fault, if any, it meets.
    fn arrive(&self, op: Op) -> Option<Fault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.plan {
            Some((at, f)) if at == n && op.faults().contains(&f) => Some(f),
            _ => None,
        }
    }

    fn record<T>(
        &self,
        op: Op,
        t: FileType,
        name: &str,
        fault: Option<Fault>,
        r: cairn::Result<T>,
    ) -> cairn::Result<T> {
        self.log.lock().expect("log").push(Call {
            op,
            t,
            name: name.to_string(),
            fault,
            ok: r.is_ok(),
        });
        r
    }

    fn eio(&self, t: FileType, name: &str) -> cairn::Error {
        cairn::Error::io(
            self.path_of(t, name),
            std::io::Error::from_raw_os_error(libc::EIO),
        )
    }

    fn path_of(&self, t: FileType, name: &str) -> PathBuf {
        if name.is_empty() {
            self.inner.root().join(t.dir())
        } else {
            self.inner.path(t, name)
        }
    }
}

impl Backend for FaultyBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn create(&self) -> cairn::Result<()> {
        self.inner.create()
    }
    fn is_repository(&self) -> cairn::Result<bool> {
        self.inner.is_repository()
    }
    fn list(&self, t: FileType) -> cairn::Result<Vec<Entry>> {
        let f = self.arrive(Op::List);
        let r = match f {
            Some(_) => Err(self.eio(t, "")),
            None => self.inner.list(t),
        };
        self.record(Op::List, t, "", f, r)
    }
    fn read(&self, t: FileType, name: &str, max: u64) -> cairn::Result<Vec<u8>> {
        let f = self.arrive(Op::Read);
        let r = match f {
            Some(Fault::Short) => self.inner.read(t, name, max).map(|mut v| {
                v.truncate(v.len() / 2);
                v
            }),
            Some(_) => Err(self.eio(t, name)),
            None => self.inner.read(t, name, max),
        };
        self.record(Op::Read, t, name, f, r)
    }
    fn read_range(&self, t: FileType, name: &str, off: u64, len: u64) -> cairn::Result<Vec<u8>> {
        let f = self.arrive(Op::ReadRange);
        let r = match f {
            // Against the trait's promise (exactly `len` bytes), as a network
            // storage might answer: callers must not take it for the range.
            Some(Fault::Short) => self.inner.read_range(t, name, off, len).map(|mut v| {
                v.truncate(v.len() / 2);
                v
            }),
            Some(_) => Err(self.eio(t, name)),
            None => self.inner.read_range(t, name, off, len),
        };
        self.record(Op::ReadRange, t, name, f, r)
    }
    fn write(&self, t: FileType, name: &str, data: &[u8]) -> cairn::Result<()> {
        let f = self.arrive(Op::Write);
        let r = match f {
            Some(Fault::Torn) => {
                let dest = self.inner.path(t, name);
                let tmp = dest.parent().expect("parent").join(format!(
                    ".tmp-{}",
                    &hex::encode(blake3::hash(data).as_bytes())[..16]
                ));
                std::fs::write(&tmp, &data[..data.len() / 2]).expect("torn write");
                Err(self.eio(t, name))
            }
            Some(Fault::Unacked) => self
                .inner
                .write(t, name, data)
                .and_then(|()| Err(self.eio(t, name))),
            Some(_) => Err(self.eio(t, name)),
            None => self.inner.write(t, name, data),
        };
        self.record(Op::Write, t, name, f, r)
    }
    fn remove(&self, t: FileType, name: &str) -> cairn::Result<()> {
        let f = self.arrive(Op::Remove);
        let r = match f {
            Some(Fault::Unacked) => self
                .inner
                .remove(t, name)
                .and_then(|()| Err(self.eio(t, name))),
            Some(_) => Err(self.eio(t, name)),
            None => self.inner.remove(t, name),
        };
        self.record(Op::Remove, t, name, f, r)
    }
    fn list_temporary(&self) -> cairn::Result<Vec<Entry>> {
        let f = self.arrive(Op::List);
        let r = match f {
            Some(_) => Err(self.eio(FileType::Pack, "")),
            None => self.inner.list_temporary(),
        };
        self.record(Op::List, FileType::Pack, "", f, r)
    }
    fn remove_temporary(&self, name: &str) -> cairn::Result<()> {
        let f = self.arrive(Op::Remove);
        let r = match f {
            Some(_) => Err(cairn::Error::io(
                self.inner.root().join(name),
                std::io::Error::from_raw_os_error(libc::EIO),
            )),
            None => self.inner.remove_temporary(name),
        };
        self.record(Op::Remove, FileType::Pack, name, f, r)
    }
    fn free_space(&self) -> cairn::Result<Option<u64>> {
        self.inner.free_space()
    }
}

/// An error and the errors that caused it, as one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
