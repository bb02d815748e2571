//! The data directory: created 0700, held under an exclusive lock for the
//! life of the process so two servers never share one SQLite file, and the
//! home of secret files written 0600.

use std::fs::{self, DirBuilder, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

const LOCK_FILE: &str = "fleetmq.lock";

/// An open, locked data directory. The lock is released when this is dropped
/// (or the process dies: the OS drops `flock` locks with the descriptor).
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if missing (0700), tightens an existing one that
    /// others can read, and takes the exclusive lock.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let err = |action, source| Error::DataDir {
            path: path.to_owned(),
            action,
            source,
        };
        match fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(err(
                    "use it",
                    std::io::Error::other("it is not a directory"),
                ));
            }
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    // Keys will live here: nobody but the owner may list or read it.
                    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                        .map_err(|e| err("restrict its permissions to 0700", e))?;
                    tracing::info!(path = %path.display(), "data dir permissions tightened to 0700");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| err("create it", e))?;
            }
            Err(e) => return Err(err("read it", e)),
        }

        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| err("open its lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = lock.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = (!holder.is_empty() && holder.len() < 16).then(|| holder.to_owned());
                return Err(Error::DataDirInUse {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(err("lock it", e)),
        }
        // Record who holds it, for the message a second process prints.
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(lock, "{}", std::process::id()))
            .map_err(|e| err("write its lock file", e))?;
        Ok(DataDir {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a secret (a key) readable by the owner only. The file is created
    /// 0600 before any byte is written, so there is no window where it is open
    /// to others, and replaced atomically.
    pub fn write_secret(&self, name: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
        let target = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older file created with other permissions keeps them on open.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_directory_0700_and_locks_it() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("a/b/data");
        let dir = DataDir::open(&path).unwrap();
        assert_eq!(mode(&path), 0o700);
        let again = DataDir::open(&path).unwrap_err();
        assert!(matches!(again, Error::DataDirInUse { .. }), "{again}");
        let msg = again.to_string();
        assert!(
            msg.contains("already in use") && msg.contains(&std::process::id().to_string()),
            "{msg}"
        );
        drop(dir);
        DataDir::open(&path).unwrap();
    }

    #[test]
    fn tightens_an_open_directory() {
        let root = tempfile::tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let _dir = DataDir::open(root.path()).unwrap();
        assert_eq!(mode(root.path()), 0o700);
    }

    #[test]
    fn a_file_is_not_a_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, b"x").unwrap();
        let msg = DataDir::open(&file).unwrap_err().to_string();
        assert!(
            msg.contains("not a directory") && msg.contains("--data-dir"),
            "{msg}"
        );
    }

    #[test]
    fn secrets_are_0600() {
        let root = tempfile::tempdir().unwrap();
        let dir = DataDir::open(root.path()).unwrap();
        let path = dir.write_secret("root-ca.key", b"secret").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        let path = dir.write_secret("root-ca.key", b"rotated").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"rotated");
    }
}
