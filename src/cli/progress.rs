//! Showing a long operation's progress: a bar on a terminal (files and bytes done,
//! rate, ETA, current file), JSON status lines once a second with `--json`, and
//! nothing otherwise (`--quiet`, or output to a file or pipe, where the command's
//! summary line is the record).

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn::progress::{Progress, ProgressView};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{GlobalArgs, output};

/// Runs until dropped. Dropping the sender wakes the display thread at once, so
/// a short command doesn't wait out a display tick before exiting.
pub struct Display {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Display {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `start` would show anything: when not, a backup skips the scan that
/// only computes the totals for the display.
pub fn shown(g: &GlobalArgs) -> bool {
    !g.quiet && (g.json || std::io::stderr().is_terminal())
}

/// Starts showing `progress` for `action` ("backup", "restore"), or returns None
/// when nothing should be shown.
pub fn start(g: &GlobalArgs, action: &'static str, progress: &Arc<Progress>) -> Option<Display> {
    if !shown(g) {
        return None;
    }
    let (stop, s) = channel::<()>();
    let p = Arc::clone(progress);
    let thread = if g.json {
        std::thread::spawn(move || json_lines(action, &p, &s))
    } else if std::io::stderr().is_terminal() {
        std::thread::spawn(move || bar(action, &p, &s))
    } else {
        return None;
    };
    Some(Display {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Sleeps up to `total`; returns true as soon as the display is dropped.
fn wait(stop: &Receiver<()>, total: Duration) -> bool {
    !matches!(stop.recv_timeout(total), Err(RecvTimeoutError::Timeout))
}

fn json_lines(action: &str, p: &Progress, stop: &Receiver<()>) {
    let start = Instant::now();
    while !wait(stop, Duration::from_secs(1)) {
        let v = p.view();
        let secs = start.elapsed().as_secs_f64();
        let _ = output::print_json(&serde_json::json!({
            "message_type": "status",
            "action": action,
            "seconds_elapsed": secs,
            "files_done": v.files_done,
            "bytes_done": v.bytes_done,
            "files_total": v.files_total,
            "bytes_total": v.bytes_total,
            "totals_final": v.totals_final,
            "percent_done": percent(&v),
            "bytes_per_second": if secs > 0.0 { v.bytes_done as f64 / secs } else { 0.0 },
            "current_file": v.current_file,
        }));
    }
}

fn percent(v: &ProgressView) -> f64 {
    if v.bytes_total == 0 {
        0.0
    } else {
        (100.0 * v.bytes_done as f64 / v.bytes_total as f64).min(100.0)
    }
}

fn bar(action: &str, p: &Progress, stop: &Receiver<()>) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
    let style = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}\n{msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(action.to_string());
    loop {
        let v = p.view();
        bar.set_length(v.bytes_total.max(v.bytes_done));
        bar.set_position(v.bytes_done);
        let total = if v.totals_final {
            v.files_total.to_string()
        } else {
            format!("{}+", v.files_total)
        };
        bar.set_message(format!(
            "{} / {total} files  {}",
            v.files_done,
            super::output::printable(&shorten(&v.current_file, 70))
        ));
        if wait(stop, Duration::from_millis(200)) {
            break;
        }
    }
    bar.finish_and_clear();
}

/// The end of a long path, which is the informative part.
fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let tail: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}
