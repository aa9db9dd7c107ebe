//! The process's limit of open files. A run keeps one descriptor open for each small file staged
//! in the target without a name (`target::staged`), up to a quarter of this limit, so it raises
//! its soft limit to the hard one once at start (at most [`WANTED`]), as systemd's documentation
//! asks of programs that do not use `select()`, and as Go's runtime does for every Go program
//! (rclone among them). The hard limit is never raised: that needs privilege, and is the
//! administrator's to set.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Open files a run can use well: four times the unnamed staged files it may hold.
pub const WANTED: u64 = 1 << 16;

/// Raise the soft limit of open files towards the hard limit, to at most [`WANTED`]; never
/// lowers it. Returns the soft limit in force afterwards (`None`: unlimited). A failure leaves
/// the limit as it was: the run works within it (staged files get names past it).
pub fn raise() -> Option<u64> {
    let now = getrlimit(Resource::Nofile);
    match raised(&now) {
        Some(to) => match setrlimit(Resource::Nofile, to) {
            Ok(()) => to.current,
            Err(_) => now.current,
        },
        None => now.current,
    }
}

/// The limits to set instead of `now`, if the soft limit is to rise.
fn raised(now: &Rlimit) -> Option<Rlimit> {
    let target = now.maximum.map_or(WANTED, |hard| hard.min(WANTED));
    match now.current {
        Some(soft) if soft < target => Some(Rlimit {
            current: Some(target),
            maximum: now.maximum,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(soft: Option<u64>, hard: Option<u64>) -> Rlimit {
        Rlimit {
            current: soft,
            maximum: hard,
        }
    }

    #[test]
    fn the_soft_limit_rises_to_the_hard_one_up_to_what_a_run_wants() {
        // A login shell's 1,024 under systemd's hard 524,288.
        let up = raised(&limits(Some(1024), Some(524_288))).expect("raised");
        assert_eq!((up.current, up.maximum), (Some(WANTED), Some(524_288)));
        // A hard limit below what a run wants: up to it, and no further.
        let up = raised(&limits(Some(1024), Some(4096))).expect("raised");
        assert_eq!((up.current, up.maximum), (Some(4096), Some(4096)));
        // No hard limit.
        let up = raised(&limits(Some(1024), None)).expect("raised");
        assert_eq!((up.current, up.maximum), (Some(WANTED), None));
    }

    #[test]
    fn a_soft_limit_already_high_enough_is_left_alone() {
        assert!(raised(&limits(Some(4096), Some(4096))).is_none());
        assert!(raised(&limits(Some(1 << 20), Some(1 << 20))).is_none());
        assert!(raised(&limits(None, None)).is_none());
    }

    #[test]
    fn raising_leaves_this_process_at_least_as_free_as_before() {
        let before = getrlimit(Resource::Nofile);
        let after = raise();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, after);
        assert_eq!(now.maximum, before.maximum);
        assert!(now.current.unwrap_or(u64::MAX) >= before.current.unwrap_or(u64::MAX));
    }
}
