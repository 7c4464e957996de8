//! SIGINT/SIGTERM: the first asks the running command to stop cleanly (no snapshot
//! is committed, written packs are indexed for reuse); the second exits at once.
//! SIGPIPE gets its default action, so `cairn ls ... | head` ends quietly.

use std::sync::atomic::{AtomicBool, Ordering};

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // Second signal: only async-signal-safe calls here.
        unsafe { libc::_exit(130) };
    }
}

pub fn install() {
    // SAFETY: the handler only touches an atomic and calls _exit, both
    // async-signal-safe; SIG_DFL for SIGPIPE restores the usual Unix behaviour.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
