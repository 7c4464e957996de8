//! The settings of one class that need more than their schema: its interval,
//! retention, check and drill schedules, commands, compression and tags.

use std::ops::Range;

use toml::Spanned;

use super::config::{RawCheck, RawClass, RawDrill, RawKeep};
use super::validate::Ctx;
use super::{
    CheckSchedule, Class, DrillSample, DrillSchedule, Interval, MIN_INTERVAL, Severity, Sources,
};
use crate::check::ReadData;
use crate::forget::KeepPolicy;

pub(super) fn class(
    cx: &mut Ctx<'_>,
    name: &Spanned<String>,
    raw: &RawClass,
    sources: Option<Sources>,
    lost: &dyn Fn(&str) -> bool,
) -> Option<Class> {
    let before = errors(cx);
    let (at, name) = (name.span(), name.get_ref().as_str());
    let every = match &raw.every {
        Some(e) => {
            let every = *e.get_ref();
            if every < MIN_INTERVAL {
                cx.error(
                    e.span(),
                    format!(
                        "class {name:?}: every = \"{every}\" is shorter than the minimum, \
                         {MIN_INTERVAL}"
                    ),
                );
            }
            Some(every)
        }
        None if lost("every") => None,
        None => {
            cx.error(
                at,
                format!("class {name:?} has no every = INTERVAL (like \"1h\" or \"7d\")"),
            );
            None
        }
    };
    let tags: Vec<String> = raw.tags.iter().map(|t| t.get_ref().clone()).collect();
    for t in &raw.tags {
        let s = t.get_ref();
        if s.trim().is_empty() || s.contains(',') || s.starts_with("class=") {
            cx.error(
                t.span(),
                format!(
                    "class {name:?}: tag {s:?} is not allowed (empty, with ',' or starting \
                     with \"class=\", which marks the class's snapshots)"
                ),
            );
        }
    }
    let keep = match &raw.keep {
        Some(k) if !lost("keep") => keep(cx, name, k, &tags),
        _ => None,
    };
    let check = raw
        .check
        .as_ref()
        .filter(|_| !lost("check"))
        .and_then(|c| check(cx, name, c, every));
    let drill = raw
        .drill
        .as_ref()
        .filter(|_| !lost("drill"))
        .and_then(|d| drill(cx, name, d, every));
    for cmd in raw.before.iter().chain(&raw.after) {
        if cmd.get_ref().trim().is_empty() {
            cx.error(
                cmd.span(),
                format!("class {name:?}: an empty before/after command"),
            );
        }
    }
    if let Some(c) = &raw.compression {
        let level = *c.get_ref();
        if !(-7..=22).contains(&level) {
            cx.error(
                c.span(),
                format!("class {name:?}: compression {level} is not a zstd level (-7 to 22)"),
            );
        }
    }
    if errors(cx) != before {
        return None;
    }
    Some(Class {
        name: name.to_string(),
        sources: sources?,
        exclude: raw.exclude.iter().map(|e| e.get_ref().clone()).collect(),
        every: every?,
        keep,
        repository: raw.repository.as_ref()?.get_ref().clone(),
        copy_to: raw.copy_to.iter().map(|c| c.get_ref().clone()).collect(),
        check,
        drill,
        before: raw.before.iter().map(|c| c.get_ref().clone()).collect(),
        after: raw.after.iter().map(|c| c.get_ref().clone()).collect(),
        compression: raw.compression.as_ref().map(|c| *c.get_ref()),
        tags,
    })
}

/// The `every` of a check or drill: present, and at least the minimum.
fn sub_every(
    cx: &mut Ctx<'_>,
    name: &str,
    what: &str,
    every: Option<&Spanned<Interval>>,
    at: Range<usize>,
) -> Option<Spanned<Interval>> {
    let Some(e) = every else {
        cx.error(at, format!("class {name:?}: {what} needs every = INTERVAL"));
        return None;
    };
    if *e.get_ref() < MIN_INTERVAL {
        cx.error(
            e.span(),
            format!(
                "class {name:?}: {what} every = \"{}\" is shorter than the minimum, {MIN_INTERVAL}",
                e.get_ref()
            ),
        );
        return None;
    }
    Some(e.clone())
}

fn check(
    cx: &mut Ctx<'_>,
    name: &str,
    c: &Spanned<RawCheck>,
    every: Option<Interval>,
) -> Option<CheckSchedule> {
    let e = sub_every(cx, name, "check", c.get_ref().every.as_ref(), c.span())?;
    let (span, e) = (e.span(), *e.get_ref());
    if let Some(every) = every.filter(|every| e < *every) {
        cx.warn(
            span,
            format!(
                "class {name:?}: a check every {e} is more often than a backup (every \
                 {every}): most checks would find nothing new"
            ),
        );
    }
    Some(CheckSchedule {
        every: e,
        read_data: c.get_ref().read_data_subset.unwrap_or(ReadData::None),
    })
}

fn errors(cx: &Ctx<'_>) -> usize {
    cx.problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count()
}

/// The class's retention as `forget` applies it, to the class's snapshots only
/// (all tagged `class=NAME` and the class's tags).
fn keep(cx: &mut Ctx<'_>, name: &str, k: &Spanned<RawKeep>, tags: &[String]) -> Option<KeepPolicy> {
    let r = k.get_ref();
    let policy = KeepPolicy {
        last: r.last,
        hourly: r.hourly,
        daily: r.daily,
        weekly: r.weekly,
        monthly: r.monthly,
        yearly: r.yearly,
        within: r.within.filter(|w| w.months != 0 || w.hours != 0),
        tags: r.tags.clone(),
    };
    let counts = [r.last, r.hourly, r.daily, r.weekly, r.monthly, r.yearly];
    let own_tag = format!("class={name}");
    let tag_keeps = r.tags.iter().any(|t| *t == own_tag || tags.contains(t));
    if counts.iter().all(|c| *c == 0) && policy.within.is_none() && !tag_keeps {
        let why = if r.tags.is_empty() {
            String::new()
        } else {
            format!(" (its snapshots are tagged {own_tag:?} and {tags:?}, none of keep.tags)")
        };
        cx.error(
            k.span(),
            format!(
                "class {name:?}: these keep rules keep nothing{why}; every snapshot would be \
                 forgotten. Give a count (last, hourly, daily, weekly, monthly, yearly) or \
                 within, or leave keep out to keep every snapshot"
            ),
        );
        return None;
    }
    Some(policy)
}

fn drill(
    cx: &mut Ctx<'_>,
    name: &str,
    d: &Spanned<RawDrill>,
    every: Option<Interval>,
) -> Option<DrillSchedule> {
    let (at, d) = (d.span(), d.get_ref());
    let e = sub_every(cx, name, "drill", d.every.as_ref(), at.clone());
    if let (Some(e), Some(every)) = (&e, every) {
        if *e.get_ref() < every {
            cx.error(
                e.span(),
                format!(
                    "class {name:?}: a drill every {} is more often than a backup (every \
                     {every}): it would rehearse the same snapshot again",
                    e.get_ref()
                ),
            );
        }
    }
    let sample = match (&d.files, &d.percent) {
        (Some(f), None) if *f.get_ref() == 0 => {
            cx.error(
                f.span(),
                format!("class {name:?}: drill files = 0 restores nothing"),
            );
            return None;
        }
        (Some(f), None) => DrillSample::Files(*f.get_ref()),
        (None, Some(p)) => {
            let v = *p.get_ref();
            if !(v > 0.0 && v <= 100.0) {
                cx.error(
                    p.span(),
                    format!("class {name:?}: drill percent = {v} is not in (0, 100]"),
                );
                return None;
            }
            DrillSample::Percent(v)
        }
        (Some(_), Some(p)) => {
            cx.error(
                p.span(),
                format!("class {name:?}: drill takes files or percent, not both"),
            );
            return None;
        }
        (None, None) => {
            cx.error(
                at,
                format!(
                    "class {name:?}: drill needs files = N or percent = X (100 restores everything)"
                ),
            );
            return None;
        }
    };
    Some(DrillSchedule {
        every: *e?.get_ref(),
        sample,
    })
}
