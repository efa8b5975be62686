//! The store: where a run's artifacts go, laid out as Jepsen's `store.clj`.
//!
//! `store/<test-name>/<YYYYMMDDTHHMMSS.mmm>/` (UTC) holds `history.jsonl`,
//! `history.txt`, `results.json` (`"valid": true|false|"unknown"` plus one
//! object per checker), `test.json` (the test's parameters and measurements),
//! `timeline.html`, `latency-raw.png`, `latency-quantiles.png`, `rate.png`,
//! `clock-skew.png` (if clock faults ran) and the node logs. Symlinks
//! `store/latest` and `store/<test-name>/latest` point at the newest run; they
//! are replaced atomically (rename over), so a reader never sees them missing.
//!
//! Also here: Jepsen's closing lines and exit codes.

pub mod plots;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use crate::checker::{CheckResult, Validity};
use crate::history::History;

/// Exit codes, as Jepsen's `cli.clj`.
pub const EXIT_VALID: i32 = 0;
pub const EXIT_INVALID: i32 = 1;
pub const EXIT_UNKNOWN: i32 = 2;
pub const EXIT_BAD_ARGS: i32 = 254;
pub const EXIT_INTERNAL: i32 = 255;

pub fn exit_code(v: Validity) -> i32 {
    match v {
        Validity::True => EXIT_VALID,
        Validity::False => EXIT_INVALID,
        Validity::Unknown => EXIT_UNKNOWN,
    }
}

/// Jepsen's closing line (`jepsen/core.clj`).
pub fn banner(v: Validity) -> &'static str {
    match v {
        Validity::True => "Everything looks good! ヽ(‘ー`)ノ",
        Validity::False => "Analysis invalid! (ﾉಥ益ಥ）ﾉ ┻━┻",
        Validity::Unknown => "Errors occurred during analysis, but no anomalies found. ಠ~ಠ",
    }
}

/// `YYYYMMDDTHHMMSS.mmm` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// One run's directory in the store.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
    pub path: PathBuf,
}

fn replace_symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    let tmp = link.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("symlink {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("replacing {}", link.display()))?;
    Ok(())
}

impl RunDir {
    /// Creates `root/<test>/<timestamp>/` and points the `latest` links at it.
    pub fn create(root: &Path, test_name: &str, now: SystemTime) -> anyhow::Result<RunDir> {
        anyhow::ensure!(
            !test_name.is_empty() && !test_name.contains('/') && test_name != "latest",
            "bad test name {test_name:?}"
        );
        let ts = timestamp(now);
        let test_dir = root.join(test_name);
        let mut path = test_dir.join(&ts);
        // Two runs in the same millisecond: suffix rather than mix artifacts.
        let mut n = 1;
        while path.exists() {
            path = test_dir.join(format!("{ts}-{n}"));
            n += 1;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let leaf = path
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(&ts));
        replace_symlink(&leaf, &test_dir.join("latest"))?;
        replace_symlink(&Path::new(test_name).join(&leaf), &root.join("latest"))?;
        Ok(RunDir {
            root: root.to_path_buf(),
            path,
        })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Writes history, results and all renderings into `dir`. Rendering failures
/// are returned as warnings (a broken plot must not hide a verdict).
pub fn write_run(
    dir: &Path,
    history: &History,
    results: &CheckResult,
    title: &str,
) -> anyhow::Result<Vec<String>> {
    history.write_jsonl(&dir.join("history.jsonl"))?;
    history.write_txt(&dir.join("history.txt"))?;
    write_results(dir, results)?;
    let mut warnings = Vec::new();
    if let Err(e) = timeline::write(history, &dir.join("timeline.html"), title) {
        warnings.push(format!("timeline.html: {e:#}"));
    }
    if let Err(e) = plots::write_all(history, dir, title) {
        warnings.push(format!("plots: {e:#}"));
    }
    Ok(warnings)
}

pub fn write_results(dir: &Path, results: &CheckResult) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&results.to_json())?;
    std::fs::write(dir.join("results.json"), text + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::F;
    use crate::history::test_support::H;
    use serde_json::{Value, json};
    use std::time::Duration;

    #[test]
    fn timestamps_are_jepsen_shaped_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_785_400_496_789);
        // 2026-07-30T08:34:56.789Z
        assert_eq!(timestamp(t), "20260730T083456.789");
        assert_eq!(timestamp(UNIX_EPOCH), "19700101T000000.000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "20000229T000000.000");
    }

    #[test]
    fn run_dirs_and_latest_links() {
        let store = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let a = RunDir::create(store.path(), "counter-partition", t0).unwrap();
        std::fs::write(a.file("x"), "a").unwrap();
        let b = RunDir::create(store.path(), "counter-partition", t0).unwrap();
        assert_ne!(a.path, b.path, "same millisecond gets a suffix");
        std::fs::write(b.file("x"), "b").unwrap();
        let via_latest = store.path().join("latest").join("x");
        assert_eq!(std::fs::read_to_string(via_latest).unwrap(), "b");
        let via_test_latest = store.path().join("counter-partition/latest/x");
        assert_eq!(std::fs::read_to_string(via_test_latest).unwrap(), "b");
        assert!(RunDir::create(store.path(), "a/b", t0).is_err());
    }

    #[test]
    fn banners_and_exit_codes() {
        assert_eq!(exit_code(Validity::True), 0);
        assert_eq!(exit_code(Validity::False), 1);
        assert_eq!(exit_code(Validity::Unknown), 2);
        assert!(banner(Validity::True).starts_with("Everything looks good!"));
        assert!(banner(Validity::False).starts_with("Analysis invalid!"));
        assert!(banner(Validity::Unknown).starts_with("Errors occurred during analysis"));
    }

    #[test]
    fn write_run_produces_every_artifact() {
        let mut h = H::new();
        h.invoke(0, F::Add, "counter-0", json!(1))
            .ok(0, F::Add, "counter-0", json!(1))
            .nemesis(F::StartPartition, json!("one"))
            .nemesis(F::StartPartition, json!({"grudge": {"n1": ["n2"]}}))
            .invoke(1, F::Read, "counter-0", Value::Null)
            .info(1, F::Read, "counter-0", Value::Null)
            .nemesis(F::BumpClock, json!({"n1": 100}))
            .nemesis(F::BumpClock, json!({"clock-offsets": {"n1": 100, "n2": 0}}))
            .nemesis(F::StopPartition, Value::Null)
            .nemesis(F::StopPartition, json!("network-healed"));
        let dir = tempfile::tempdir().unwrap();
        let res = CheckResult::new(Validity::Unknown).with("x", 1);
        let warnings = write_run(dir.path(), &h.build(), &res, "t").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for f in [
            "history.jsonl",
            "history.txt",
            "results.json",
            "timeline.html",
            "latency-raw.png",
            "latency-quantiles.png",
            "rate.png",
            "clock-skew.png",
        ] {
            let meta = std::fs::metadata(dir.path().join(f)).unwrap();
            assert!(meta.len() > 0, "{f} is empty");
        }
        let results: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(results["valid"], json!("unknown"));
        let png = std::fs::read(dir.path().join("rate.png")).unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
    }
}
