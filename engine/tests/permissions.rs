//! S7: everything the engine keeps is private to its user, whatever the
//! process umask: the data directory and every directory under it 0700,
//! every file 0600 (the log, CHECKPOINT, IDENTITY, CLEAN, LOCK and sled's
//! own files). This binary holds this one test because it sets the
//! process-wide umask to 0 (the most permissive) first.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use meridian_engine::Op;

fn walk(path: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) {
    let meta = std::fs::metadata(path).unwrap();
    out.push((
        path.to_path_buf(),
        meta.permissions().mode() & 0o777,
        meta.is_dir(),
    ));
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            walk(&entry.unwrap().path(), out);
        }
    }
}

#[test]
fn files_and_directories_are_private_whatever_the_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("data");
    let e = open_with(&dir, |c| c.segment_bytes = 4096);
    for i in 0..200 {
        apply(&e, &counter_key(&format!("k{}", i % 7)), Op::Incr(1));
        apply(&e, &set_key("s"), Op::Add(members(&[&format!("m{i}")])));
    }
    e.checkpoint().unwrap();
    e.close().unwrap();
    drop(e);
    // Reopening (and an unclean stop) creates and rewrites files again.
    let e = open(&dir);
    apply(&e, &register_key("r"), Op::Put(b"v".to_vec()));
    e.checkpoint().unwrap();
    drop(e);
    let e = open(&dir);
    e.close().unwrap();
    drop(e);

    let mut seen = Vec::new();
    walk(root.path().join("nested").as_path(), &mut seen);
    let (dirs, files): (Vec<_>, Vec<_>) = seen.iter().partition(|(_, _, d)| *d);
    assert!(files.len() > 5, "{files:?}");
    for (p, mode, _) in dirs {
        assert_eq!(*mode, 0o700, "{} is {mode:o}", p.display());
    }
    for (p, mode, _) in files {
        assert_eq!(*mode, 0o600, "{} is {mode:o}", p.display());
    }
    let names: Vec<String> = seen
        .iter()
        .filter_map(|(p, _, _)| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in ["CHECKPOINT", "IDENTITY", "CLEAN", "LOCK", "objects", "log"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not found in {names:?}"
        );
    }
}
