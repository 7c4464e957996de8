//! SIGINT/SIGTERM: the first asks the running command to stop cleanly (no snapshot
//! is committed, written packs are indexed for reuse); the second exits at once.
//! SIGPIPE is ignored: a connection to object storage that breaks must be an
//! error naming the object, not a silent death. Output into a closed pipe
//! (`cairn ls ... | head`) still ends quietly, through [`quiet_broken_pipe`].

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
    // async-signal-safe; SIG_IGN for SIGPIPE turns a write to a broken socket
    // or pipe into an EPIPE error.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    quiet_broken_pipe();
}

/// Exit status of a process that wrote into a closed pipe (128 + SIGPIPE), as if
/// SIGPIPE had ended it.
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// With SIGPIPE ignored, `println!` into a pipe whose reader has gone panics
/// ("failed printing to stdout: Broken pipe"). That is the reader's choice, not
/// an error: exit quietly with the status SIGPIPE would have given. Other
/// panics go to the usual hook.
fn quiet_broken_pipe() {
    let usual = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        usual(info);
    }));
}
