//! A notebook's record on disk. Reading never fails nbidle: a record that
//! cannot be read or is too large comes back as a reason, so one bad file
//! costs one notebook, not all of them. Writing is atomic and durable: a
//! power loss leaves the old record or the new one, never an empty file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Far above any record nbidle writes (a few hundred bytes); a larger file
/// is not read into memory.
pub(super) const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// The bytes of the record at `path`; `Ok(None)` when there is none;
/// `Err(reason)` when it exists but cannot be read.
pub(super) fn read(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(format!("larger than {MAX_RECORD_BYTES} bytes"));
    }
    Ok(Some(bytes))
}

/// Writes the records of one directory. Each write goes to a temp file that
/// is synced, renamed over the record, and then the directory is synced so
/// the rename itself is on disk. Concurrent writers share directory syncs:
/// a sync that started after a writer's rename covers that writer, so 1,000
/// stops at once cost far fewer than 1,000 directory syncs.
pub(super) struct RecordDir {
    dir: PathBuf,
    /// Renames completed so far.
    renamed: AtomicU64,
    /// How many renames the last finished directory sync covers.
    synced: Mutex<u64>,
}

impl RecordDir {
    pub(super) fn new(dir: PathBuf) -> Self {
        RecordDir {
            dir,
            renamed: AtomicU64::new(0),
            synced: Mutex::new(0),
        }
    }

    /// Replaces the record at `path` (inside this directory). Blocking.
    /// The caller serializes writes of one record.
    pub(super) fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_data()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let ticket = self.renamed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= ticket {
            return Ok(());
        }
        // Every rename counted by now has completed, so this sync covers it.
        let upto = self.renamed.load(Ordering::SeqCst);
        File::open(&self.dir)?.sync_all()?;
        *synced = upto;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_names_every_failure_and_only_absence_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        assert_eq!(read(&p), Ok(None));
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read(&p), Ok(Some(b"{}".to_vec())));
        std::fs::write(&p, vec![b' '; MAX_RECORD_BYTES as usize + 1]).unwrap();
        assert!(read(&p).unwrap_err().contains("larger than"));
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            e.starts_with("unreadable") && e.contains("directory"),
            "{e}"
        );
    }

    #[test]
    fn write_replaces_whole_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let records = RecordDir::new(dir.path().to_path_buf());
        let p = dir.path().join("a.json");
        records.write(&p, b"first").unwrap();
        records.write(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert!(!dir.path().join("a.json.tmp").exists());
        // A directory in the record's place: the write fails, nothing is left.
        let d = dir.path().join("d.json");
        std::fs::create_dir_all(d.join("x")).unwrap();
        assert!(records.write(&d, b"x").is_err());
        assert!(!dir.path().join("d.json.tmp").exists());
        assert!(d.is_dir());
    }

    #[test]
    fn concurrent_writers_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let records = std::sync::Arc::new(RecordDir::new(dir.path().to_path_buf()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let records = records.clone();
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let p = dir.join(format!("{t}-{i}.json"));
                        records.write(&p, format!("{t}-{i}").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(
            *records.synced.lock().unwrap(),
            160,
            "the last sync covers all"
        );
        for t in 0..8 {
            for i in 0..20 {
                let p = dir.path().join(format!("{t}-{i}.json"));
                assert_eq!(std::fs::read_to_string(p).unwrap(), format!("{t}-{i}"));
            }
        }
    }
}
