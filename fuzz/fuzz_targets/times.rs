//! Times read from the repository: the `time` of locks and snapshots (RFC 3339
//! strings written by other hosts, with other clocks and offsets) and the file
//! times a listing gives. Staleness, descriptions, sorting, retention bucketing
//! and schedules must take any of them — far past, far future, leap seconds, odd
//! offsets, garbage — without panicking, and keep their promises: a lock dated
//! in the future is fresh, an unparseable snapshot time is kept by `forget`.
#![no_main]
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn::forget::{self, GroupBy, KeepPolicy, Within};
use cairn::id::{BlobId, LockId, SnapshotId};
use cairn::lock::{Listed, Lock, STALE_AFTER};
use cairn::plan::Interval;
use cairn::plan::state::{is_due, next_due};
use cairn::snapshot::{Snapshot, Summary, sort_oldest_first};
use cairn_fuzz::some_text;
use chrono::{DateTime, FixedOffset};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// An RFC 3339-shaped string with every field chosen by the fuzzer (in range or
/// not), or arbitrary text.
fn time_text(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 4)? {
        return some_text(u, 40);
    }
    let year: u16 = u.arbitrary()?;
    let fields: [u8; 5] = u.arbitrary()?;
    let sep = *u.choose(&['T', 't', ' ', '_'])?;
    let frac = match u.int_in_range(0..=3)? {
        0 => String::new(),
        1 => format!(".{}", u.int_in_range(0..=999_999_999u32)?),
        2 => format!(".{}", "9".repeat(u.int_in_range(1..=40)?)),
        _ => ".".into(),
    };
    let offset = match u.int_in_range(0..=3)? {
        0 => "Z".to_string(),
        1 => "z".to_string(),
        2 => format!(
            "{}{:02}:{:02}",
            if u.arbitrary()? { '+' } else { '-' },
            u.int_in_range(0..=30u8)?,
            u.int_in_range(0..=70u8)?
        ),
        _ => String::new(),
    };
    Ok(format!(
        "{year:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{frac}{offset}",
        fields[0] % 14,
        fields[1] % 33,
        fields[2] % 26,
        fields[3] % 62,
        fields[4] % 62
    ))
}

/// A duration like `1y6m2w3d12h`, with numbers up to the largest that parse, or
/// arbitrary text.
fn duration_text(u: &mut Unstructured) -> Result<String> {
    if u.ratio(1, 4)? {
        return some_text(u, 40);
    }
    let mut text = String::new();
    for _ in 0..u.int_in_range(1..=5)? {
        let n: u32 = if u.arbitrary()? {
            u.arbitrary()?
        } else {
            u.int_in_range(0..=100)?
        };
        text.push_str(&format!("{n}{}", u.choose(&['y', 'm', 'w', 'd', 'h'])?));
    }
    Ok(text)
}

/// A system time anywhere the platform can represent, or near now.
fn system_time(u: &mut Unstructured) -> Result<Option<SystemTime>> {
    let secs: u64 = u.arbitrary()?;
    let nanos = u.int_in_range(0..=999_999_999u32)?;
    let d = Duration::new(secs, nanos);
    Ok(match u.int_in_range(0..=4)? {
        0 => None,
        1 => UNIX_EPOCH.checked_add(d),
        2 => UNIX_EPOCH.checked_sub(d),
        3 => SystemTime::now().checked_add(Duration::from_secs(secs % 100_000)),
        _ => SystemTime::now().checked_sub(Duration::from_secs(secs % 100_000)),
    })
}

fn parsed(t: &str) -> Option<DateTime<FixedOffset>> {
    DateTime::parse_from_rfc3339(t).ok()
}

fn locks(u: &mut Unstructured) -> Result<()> {
    let lock = Lock {
        time: time_text(u)?,
        // Never this host: staleness goes by time alone.
        hostname: "fuzz.invalid".into(),
        username: some_text(u, 16)?,
        pid: u.arbitrary()?,
        exclusive: u.arbitrary()?,
        boot_id: None,
        pid_ns: u.arbitrary()?,
        plan_class: if u.arbitrary()? {
            Some(some_text(u, 16)?)
        } else {
            None
        },
    };
    let file_time = system_time(u)?;
    let stale = lock.stale_reason(file_time);
    let _ = lock.describe(&LockId([1; 32]));
    let listed = Listed {
        id: LockId([2; 32]),
        name: "fuzz".into(),
        modified: file_time,
        lock: Ok(lock.clone()),
    };
    let _ = listed.unreadable_advice();
    let unreadable_stale = listed.unreadable_is_stale();
    // Margins keep the clock's progress during the run out of the verdicts.
    let now = SystemTime::now();
    let margin = Duration::from_secs(3600);
    let file_fresh =
        file_time.is_none_or(|t| now.checked_sub(STALE_AFTER / 2).is_some_and(|n| t > n));
    if file_fresh {
        assert!(!unreadable_stale);
    }
    match parsed(&lock.time).map(SystemTime::from) {
        // Dated well in the future: the holder's clock runs ahead; fresh unless
        // its file says otherwise.
        Some(t) if now.checked_add(margin).is_some_and(|n| t > n) && file_fresh => {
            assert!(stale.is_none(), "a lock dated ahead is stale: {stale:?}")
        }
        // Dated long ago, with no file time to contradict it.
        Some(t)
            if file_time.is_none()
                && now.checked_sub(STALE_AFTER + margin).is_some_and(|n| t < n) =>
        {
            assert!(stale.is_some(), "an old lock is not stale")
        }
        None if file_fresh => assert!(stale.is_none(), "unreadable time, fresh file: {stale:?}"),
        _ => {}
    }
    Ok(())
}

fn snapshots(u: &mut Unstructured) -> Result<()> {
    let n = u.int_in_range(0..=8usize)?;
    let mut list = Vec::with_capacity(n);
    for i in 0..n {
        let mut id = [0u8; 32];
        id[0] = i as u8;
        id[1] = u.arbitrary()?;
        list.push((
            SnapshotId(id),
            Snapshot {
                time: time_text(u)?,
                hostname: u.choose(&["a", "b"])?.to_string(),
                username: String::new(),
                uid: 0,
                gid: 0,
                paths: vec![u.choose(&["/x", "/y"])?.to_string()],
                tags: if u.arbitrary()? {
                    vec!["t".into()]
                } else {
                    vec![]
                },
                tree: BlobId([0; 32]),
                parent: None,
                original: None,
                replaces: None,
                excludes: vec![],
                program_version: String::new(),
                summary: Summary::default(),
                errors: vec![],
                warnings: vec![],
            },
        ));
    }
    // Parents among the list: a replacement with its original's time, or a loop.
    for i in 0..n {
        if u.ratio(1, 3)? {
            let p = u.choose_index(n)?;
            list[i].1.parent = Some(list[p].0);
            if u.arbitrary()? {
                list[i].1.time = list[p].1.time.clone();
            }
        }
    }
    let mut sorted = list.clone();
    sort_oldest_first(&mut sorted);
    for w in sorted.windows(2) {
        assert!(w[0].1.sort_key() <= w[1].1.sort_key());
    }
    let within = if u.arbitrary()? {
        Within::parse(&duration_text(u)?).ok()
    } else {
        None
    };
    let policy = KeepPolicy {
        last: u.int_in_range(0..=3)?,
        hourly: u.int_in_range(0..=3)?,
        daily: u.int_in_range(0..=3)?,
        weekly: u.int_in_range(0..=3)?,
        monthly: u.int_in_range(0..=3)?,
        yearly: u.int_in_range(0..=3)?,
        within,
        tags: if u.arbitrary()? {
            vec!["t".into()]
        } else {
            vec![]
        },
    };
    let group_by = GroupBy {
        host: u.arbitrary()?,
        paths: u.arbitrary()?,
        tags: u.arbitrary()?,
    };
    let groups = forget::plan(list.clone(), &policy, group_by);
    let decided: usize = groups.iter().map(|g| g.decisions.len()).sum();
    assert_eq!(decided, n, "every snapshot decided once");
    for g in &groups {
        for (i, d) in g.decisions.iter().enumerate() {
            if d.snapshot.time_parsed().is_none() || (i as u64) < u64::from(policy.last) {
                assert!(d.keep());
            }
        }
    }
    Ok(())
}

fn schedules(u: &mut Unstructured) -> Result<()> {
    let text = duration_text(u)?;
    let Ok(every) = Interval::parse(&text) else {
        return Ok(());
    };
    let last = parsed(&time_text(u)?);
    let Some(now) = parsed(&time_text(u)?) else {
        return Ok(());
    };
    let due = is_due(last, every, now);
    if next_due(last, every).is_none() {
        assert!(due);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0..=2u8) {
        Ok(0) => locks(&mut u),
        Ok(1) => snapshots(&mut u),
        _ => schedules(&mut u),
    };
});
