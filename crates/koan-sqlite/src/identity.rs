//! The store's file, as it was opened: a write is refused once the file, or its
//! write-ahead log, is no longer the one at its path. SQLite goes on writing to a
//! file deleted or replaced under it: every write is then answered as stored and
//! lost at the next start (a probe answered 202 to 100 jobs after an `rm` of the
//! database, and none of them was there after a restart; 181 of 200 after the
//! `-wal` file was deleted and the process killed).

use std::path::{Path, PathBuf};

/// A file's device and inode (nothing on systems without them: no check there).
#[cfg(unix)]
fn id_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn id_of(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// The database file and its write-ahead log as opened.
#[derive(Debug)]
pub(crate) struct Identity {
    path: PathBuf,
    wal: PathBuf,
    main: Option<(u64, u64)>,
    log: Option<(u64, u64)>,
}

impl Identity {
    /// The files at `path` now (the connection open, in WAL mode: its log exists).
    pub(crate) fn of(path: &Path) -> Identity {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        Identity {
            main: id_of(path),
            log: id_of(&wal),
            path: path.to_owned(),
            wal,
        }
    }

    /// Why a write now would be lost: the file or its log deleted or replaced
    /// since it was opened. Two `stat`s a batch of commands.
    pub(crate) fn moved(&self) -> Option<String> {
        for (path, opened, what) in [
            (&self.path, self.main, "the database file"),
            (&self.wal, self.log, "its write-ahead log"),
        ] {
            let Some(opened) = opened else { continue };
            match id_of(path) {
                Some(now) if now == opened => {}
                found => {
                    return Some(format!(
                        "{what} {} was {} while in use: what is written now would be lost; nothing was written — restart the host to open the file at that path",
                        path.display(),
                        if found.is_none() {
                            "deleted"
                        } else {
                            "replaced"
                        }
                    ));
                }
            }
        }
        None
    }
}
