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
        let _ = output::print_json(&status(action, &p.view(), start.elapsed().as_secs_f64()));
    }
}

/// One `status` line. Until the totals are counted they are `null`, and so is
/// the share done: a total still growing would make a percentage that jumps
/// back and an ETA that means nothing.
fn status(action: &str, v: &ProgressView, secs: f64) -> serde_json::Value {
    let known = |n: u64| v.totals_final.then_some(n);
    serde_json::json!({
        "message_type": "status",
        "action": action,
        "seconds_elapsed": secs,
        "files_done": v.files_done,
        "bytes_done": v.bytes_done,
        "files_total": known(v.files_total),
        "bytes_total": known(v.bytes_total),
        "totals_final": v.totals_final,
        "percent_done": v.totals_final.then(|| percent(v)),
        "bytes_per_second": if secs > 0.0 { v.bytes_done as f64 / secs } else { 0.0 },
        "current_file": v.current_file,
    })
}

fn percent(v: &ProgressView) -> f64 {
    if v.bytes_total == 0 {
        100.0
    } else {
        (100.0 * v.bytes_done as f64 / v.bytes_total as f64).min(100.0)
    }
}

/// What the terminal line shows: a spinner with counters while the totals are
/// being counted (a bar would be full, with an ETA of 0, whenever the work
/// outruns the count), then a bar with an ETA once they are known.
fn template(totals_final: bool) -> &'static str {
    if totals_final {
        "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}\n{msg}"
    } else {
        "{spinner} {prefix} [{elapsed_precise}] {bytes} {bytes_per_sec}, counting the total…\n{msg}"
    }
}

fn files_text(v: &ProgressView) -> String {
    if v.totals_final {
        format!(
            "{} / {}",
            v.files_done,
            output::count(v.files_total, "file", "files")
        )
    } else {
        output::count(v.files_done, "file", "files")
    }
}

fn bar(action: &str, p: &Progress, stop: &Receiver<()>) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
    let style = |known| {
        ProgressStyle::with_template(template(known))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
    };
    bar.set_style(style(false));
    bar.set_prefix(action.to_string());
    let mut known = false;
    loop {
        let v = p.view();
        if v.totals_final && !known {
            known = true;
            bar.set_style(style(true));
        }
        if known {
            bar.set_length(v.bytes_total.max(v.bytes_done));
        }
        bar.set_position(v.bytes_done);
        bar.tick();
        bar.set_message(format!(
            "{}  {}",
            files_text(&v),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(totals_final: bool) -> ProgressView {
        ProgressView {
            files_done: 1,
            bytes_done: 500,
            files_total: 1,
            bytes_total: 500,
            totals_final,
            current_file: "/data/a".into(),
        }
    }

    /// Issue #11, item 15: a total still being counted is not shown as a full bar
    /// with an ETA of 0, nor as a number in JSON.
    #[test]
    fn totals_being_counted_are_not_shown_as_known() {
        let counting = view(false);
        let t = template(false);
        assert!(
            !t.contains("bar}") && !t.contains("{eta") && !t.contains("{total"),
            "{t}"
        );
        assert!(t.contains("{spinner}"), "{t}");
        assert_eq!(files_text(&counting), "1 file");
        let s = status("backup", &counting, 1.0);
        assert!(
            s["bytes_total"].is_null() && s["files_total"].is_null(),
            "{s}"
        );
        assert!(s["percent_done"].is_null(), "{s}");
        assert_eq!(s["totals_final"], false);

        let known = view(true);
        assert!(template(true).contains("{wide_bar}") && template(true).contains("{eta}"));
        assert_eq!(files_text(&known), "1 / 1 file");
        let s = status("backup", &known, 1.0);
        assert_eq!(s["bytes_total"], 500);
        assert_eq!(s["files_total"], 1);
        assert_eq!(s["percent_done"], 100.0);
    }
}
