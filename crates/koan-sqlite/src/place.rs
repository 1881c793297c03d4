//! Where the file goes: a path whose file cannot be made is refused, naming why
//! and what would do. SQLite said only "unable to open database file" for a
//! directory that did not exist, one that could not be written and a path under
//! a regular file alike (a probe).

use std::io::ErrorKind;
use std::path::Path;

use crate::fail::Failure;

/// Makes the (empty) file at `path` unless it exists, as SQLite would, so that a
/// refusal names the operating system's reason. An empty file is an empty
/// database to SQLite; one made meanwhile by another host opening it is left as
/// it is.
pub(crate) fn make(path: &Path) -> Result<(), Failure> {
    if !a_file(path) {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(found) if found.is_dir() => {
            return Err(Failure::store(
                "use the file",
                format!(
                    "{} is a directory; give the path of a file (made when missing) in a \
                     directory this process can write",
                    path.display()
                ),
            ));
        }
        Ok(_) => return Ok(()),
        // Why, the directory tells (below).
        Err(_) => {}
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(found) if found.is_dir() => {}
        Ok(_) => {
            return Err(refuse(format!(
                "{} is not a directory; give a path in a directory this process can write",
                dir.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(refuse(format!(
                "its directory {} does not exist; create it, or give a path in a directory \
                 that exists and this process can write",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(refuse(format!(
                "its directory {} cannot be read ({e}); give a path in a directory this \
                 process can write",
                dir.display()
            )));
        }
    }
    match new_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(refuse(format!(
            "cannot create it in {} ({e}); give a path in a directory this process can \
             write (SQLite writes `-wal` and `-shm` files beside it too)",
            dir.display()
        ))),
    }
}

/// Whether SQLite reads `path` as a file's: not a URI (`file:…?mode=ro`), an
/// in-memory database (`:memory:`) or a temporary one (empty), which it opens its
/// own way.
fn a_file(path: &Path) -> bool {
    let name = path.to_string_lossy();
    !(name.is_empty() || name == ":memory:" || name.starts_with("file:"))
}

/// Creates the file at `path`, failing when it exists: with SQLite's
/// permissions on Unix (`rw-r--r--`, less the umask).
fn new_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
    options.open(path).map(drop)
}

fn refuse(why: String) -> Failure {
    Failure::store("create the file", why)
}
