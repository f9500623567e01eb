//! One nbidle per data dir: an exclusive `flock` on `<data_dir>/lock`, which
//! holds the holder's pid. It is taken before anything else and held for the
//! life of the process; the kernel releases it when the process ends, however
//! it ends, so a stale lock file never blocks a restart. Notebook processes do
//! not inherit it (the file is opened close-on-exec), so notebooks that
//! outlive nbidle do not keep the next nbidle out.

// This module's job is a syscall (flock on the data dir lock); each use says why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};

/// The lock file's name inside the data dir.
pub(super) const LOCK_FILE: &str = "lock";

/// Held while it lives.
#[derive(Debug)]
pub(super) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock or fails at once, naming the data dir and the pid of
    /// the nbidle that holds it. Creates the data dir if needed.
    pub(super) fn acquire(data_dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: flock only locks a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(format!("locking {}", path.display()), e));
            }
            return Err(Error::config(
                "data_dir",
                format!(
                    "{} is in use by another nbidle ({}); only one nbidle may use a data dir: \
                     stop that one, or give this one a data_dir of its own",
                    data_dir.display(),
                    holder(&path)
                ),
            ));
        }
        // Truncate only once the lock is ours: the holder's pid stays readable.
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(DataDirLock { _file: file })
    }
}

/// "pid N" from the lock file; the holder writes it right after locking, so
/// an empty file is read again briefly before giving up on it.
fn holder(path: &Path) -> String {
    for _ in 0..20 {
        let mut text = String::new();
        let read = File::open(path).and_then(|f| f.take(32).read_to_string(&mut text));
        if let Ok(pid) = text.trim().parse::<u32>() {
            return format!("pid {pid}");
        }
        if read.is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    format!("its pid is not recorded in {}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_data_dir_fails_naming_dir_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DataDirLock::acquire(&data).unwrap();
        let text = std::fs::read_to_string(data.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());

        // flock locks belong to an open file: a second open conflicts even
        // within one process, as a second nbidle would.
        let err = DataDirLock::acquire(&data).unwrap_err().to_string();
        assert!(err.contains("data_dir"), "{err}");
        assert!(err.contains(&data.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // A failed attempt leaves the holder's pid in place.
        let text = std::fs::read_to_string(data.join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());

        drop(held);
        // A process spawned meanwhile (by a test running beside this one)
        // holds a copy of the descriptor, and so the lock, until its exec
        // closes it.
        let again = (0..100).find_map(|_| {
            DataDirLock::acquire(&data)
                .inspect_err(|_| std::thread::sleep(Duration::from_millis(10)))
                .ok()
        });
        assert!(again.is_some(), "free again once the holder is gone");
    }

    #[test]
    fn a_stale_lock_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\n").unwrap();
        DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
    }
}
