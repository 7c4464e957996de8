//! `cairn plan schedule`: a systemd service and timer, or a crontab line, that
//! starts `cairn plan run` often enough for the plan's shortest interval.

use std::path::Path;

use super::{Interval, Plan};

/// Periods a timer can fire at that divide an hour or a day evenly, in minutes.
const PERIODS: [u64; 19] = [
    1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440,
];

/// The shortest interval of anything the plan schedules: backups, checks and
/// drills.
pub fn shortest_interval(plan: &Plan) -> Option<Interval> {
    plan.classes
        .iter()
        .flat_map(|c| {
            [
                Some(c.every),
                c.check.as_ref().map(|k| k.every),
                c.drill.as_ref().map(|d| d.every),
            ]
        })
        .flatten()
        .min()
}

/// How often `plan run` should start, in minutes: a quarter of the shortest
/// interval (so that nothing starts more than a quarter interval late), rounded
/// down to a period that divides an hour or a day, between 1 minute and a day.
pub fn period_minutes(plan: &Plan) -> u64 {
    let shortest = shortest_interval(plan).map_or(1440, |i| i.minutes());
    let want = (shortest / 4).max(1);
    PERIODS
        .iter()
        .copied()
        .filter(|p| *p <= want)
        .max()
        .unwrap_or(1)
}

/// A systemd calendar expression firing every `period` minutes.
pub fn on_calendar(period: u64) -> String {
    if period < 60 {
        format!("*-*-* *:00/{period}:00")
    } else if period < 1440 {
        format!("*-*-* 00/{}:00:00", period / 60)
    } else {
        "*-*-* 00:00:00".into()
    }
}

/// The same for cron's five fields.
pub fn cron_spec(period: u64) -> String {
    if period < 60 {
        format!("*/{period} * * * *")
    } else if period < 1440 {
        format!("0 */{} * * *", period / 60)
    } else {
        "0 0 * * *".into()
    }
}

/// A path as one word for a shell or a systemd command line.
fn quoted(p: &Path) -> String {
    let s = p.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:@".contains(&b))
    {
        s
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

pub struct Units {
    pub service: String,
    pub timer: String,
}

/// The unit files that run `exe plan run --plan plan_file`. `user`: a user
/// unit (`systemctl --user`), else a system one.
pub fn systemd_units(exe: &Path, plan_file: &Path, period: u64, user: bool) -> Units {
    // A randomized delay of up to a quarter of the period (at most 5 minutes)
    // spreads machines that share a NAS without making anything late.
    let delay = (period * 60 / 4).clamp(1, 300);
    let cache = if user {
        "Environment=CAIRN_CACHE_DIR=%C/cairn\n".to_string()
    } else {
        "CacheDirectory=cairn\nEnvironment=CAIRN_CACHE_DIR=%C/cairn\n".to_string()
    };
    let service = format!(
        "[Unit]\n\
         Description=cairn backup plan {plan}\n\
         After=network-online.target local-fs.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={exe} plan run --plan {plan}\n\
         {cache}\
         Nice=10\n\
         IOSchedulingClass=best-effort\n\
         IOSchedulingPriority=7\n",
        exe = quoted(exe).replace('%', "%%"),
        plan = quoted(plan_file).replace('%', "%%"),
    );
    let timer = format!(
        "[Unit]\n\
         Description=Start the cairn backup plan {plan} every {period} min\n\
         \n\
         [Timer]\n\
         OnCalendar={cal}\n\
         Persistent=true\n\
         RandomizedDelaySec={delay}\n\
         AccuracySec=1s\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        plan = quoted(plan_file).replace('%', "%%"),
        cal = on_calendar(period),
    );
    Units { service, timer }
}

/// A crontab line for machines without systemd.
pub fn crontab_line(exe: &Path, plan_file: &Path, period: u64) -> String {
    format!(
        "{} {} plan run --plan {} --quiet",
        cron_spec(period),
        quoted(exe).replace('%', "\\%"),
        quoted(plan_file).replace('%', "\\%")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_expressions() {
        assert_eq!(on_calendar(15), "*-*-* *:00/15:00");
        assert_eq!(on_calendar(120), "*-*-* 00/2:00:00");
        assert_eq!(on_calendar(1440), "*-*-* 00:00:00");
        assert_eq!(cron_spec(15), "*/15 * * * *");
        assert_eq!(cron_spec(360), "0 */6 * * *");
        assert_eq!(quoted(Path::new("/a b/c")), "\"/a b/c\"");
        assert_eq!(quoted(Path::new("/usr/bin/cairn")), "/usr/bin/cairn");
    }

    #[test]
    fn randomized_delay_is_a_quarter_period_at_most_five_minutes() {
        let delay = |period| {
            let u = systemd_units(Path::new("/c"), Path::new("/p"), period, false);
            u.timer
                .lines()
                .find_map(|l| l.strip_prefix("RandomizedDelaySec="))
                .map(str::to_string)
        };
        assert_eq!(delay(1).as_deref(), Some("15"));
        assert_eq!(delay(15).as_deref(), Some("225"));
        assert_eq!(delay(20).as_deref(), Some("300"));
        assert_eq!(delay(360).as_deref(), Some("300"));
    }
}
