//! snapd's side of running etcd from the snap, as layer-etcd does it: the
//! `snapd_refresh` option sets the machine's snap refresh timer, the leader
//! choosing the value every unit applies (leader setting `snapd_refresh`).
//! snapd still refreshes the etcd snap on that timer, on each machine
//! independently, as it did under layer-etcd (README, Status).

use super::HookContext;
use crate::install::Installed;
use crate::juju::{LogLevel, Settings};
use crate::timefmt::UtcTime;

/// Leader setting: the resolved timer every unit applies (layer-etcd's).
pub const TIMER: &str = "snapd_refresh";
/// Leader setting: the option value the timer was resolved from.
const FROM: &str = "snapd-refresh-option";
/// State files: the timer this unit applied, and one snapd refused (not
/// retried until the leader's value changes).
const APPLIED: &str = "snapd-refresh-applied";
const REFUSED: &str = "snapd-refresh-refused";
/// Leader settings cannot hold an empty value (leader-set deletes the
/// key), and "" is a timer (snapd's default): the option is kept prefixed.
const KEPT: &str = "option:";

const DAYS: [&str; 7] = ["thu", "fri", "sat", "sun", "mon", "tue", "wed"];

/// layer-etcd's "max": a monthly timer on the weekday of yesterday, in the
/// week of the month it fell in (`thu2`: the second Thursday); snapd's
/// longest interval is a month. Other values are snapd timers, as given.
pub fn resolve(option: &str, now: UtcTime) -> String {
    if option.trim() != "max" {
        return option.trim().to_string();
    }
    let yesterday = UtcTime::from_unix(now.unix.saturating_sub(86_400));
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((yesterday.unix / 86_400) % 7) as usize];
    format!("{weekday}{}", yesterday.day / 7 + 1)
}

fn snap(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("snap")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(crate::error::command_failure(&out))
    }
}

/// Applies the leader's refresh timer when it changed. A timer snapd
/// refuses is logged once and retried only when the leader's value
/// changes: neither is a reason to stop managing etcd.
pub fn follow(
    ctx: &HookContext,
    inst: &Installed,
    option: &str,
    leader: bool,
    settings: &mut Settings,
) {
    if inst.source != "snap" {
        return;
    }
    let kept = format!("{KEPT}{option}");
    if leader && settings.get(FROM) != Some(&kept) {
        let timer = resolve(option, UtcTime::now());
        let pairs = [(TIMER, timer.clone()), (FROM, kept.clone())];
        if ctx.tools.leader_set(&pairs).is_ok() {
            settings.insert(TIMER.into(), timer);
            settings.insert(FROM.into(), kept);
        }
    }
    // No value yet from this charm's leader: nothing to apply. A value
    // recorded with an empty timer (deleted by leader-set) is "".
    if !settings.contains_key(FROM) {
        return;
    }
    let timer = settings.get(TIMER).cloned().unwrap_or_default();
    let state = ctx.paths.state_dir();
    let read = |name: &str| std::fs::read_to_string(state.join(name)).ok();
    if read(APPLIED).as_deref() == Some(timer.as_str())
        || read(REFUSED).as_deref() == Some(timer.as_str())
    {
        return;
    }
    match snap(&["set", "core", &format!("refresh.timer={timer}")]) {
        Ok(()) => {
            let _ = std::fs::write(state.join(APPLIED), &timer);
        }
        Err(e) => {
            let _ = std::fs::write(state.join(REFUSED), &timer);
            ctx.log_at(
                LogLevel::Warning,
                &format!("cannot set snapd's refresh timer to {timer:?} ({e}); check the snapd_refresh option"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_is_yesterdays_weekday_and_week_as_layer_etcd_computes_it() {
        // 2026-11-24 is a Tuesday: yesterday, Monday the 23rd, 4th week.
        let now = UtcTime::from_unix(1_795_521_600);
        assert_eq!((now.year, now.month, now.day), (2026, 11, 24));
        assert_eq!(resolve("max", now), "mon4");
        // 2026-11-01: yesterday was Saturday the 31st of October.
        let now = UtcTime::from_unix(1_793_491_200);
        assert_eq!((now.month, now.day), (11, 1));
        assert_eq!(resolve("max", now), "sat5");
        assert_eq!(resolve(" fri5 ", now), "fri5");
        assert_eq!(resolve("", now), "");
    }
}
