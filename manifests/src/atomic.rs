//! Atomic file writes: a temporary file beside the destination, fsync, rename, fsync the directory.
//! Folders written whole are swapped in with [`commit_temp_dir`] (no moment without one on
//! Linux), and [`link_atomic`] gives a file a second name (an export) the same way.
//!
//! Temporary files are named `.<name>.tmp-<pid>-<n>`, so a run that is killed leaves only files
//! that are recognisably temporary: they are never taken for outputs (directory digests skip
//! them) and a later run removes them with [`remove_stale_temp_files`].

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Infix that marks wingflow's temporary files.
const TEMP_INFIX: &str = ".tmp-";

/// A file being written that appears at its destination only on [`AtomicFile::commit`].
///
/// Dropping it without committing removes the temporary file and leaves any previous file at the
/// destination untouched.
#[derive(Debug)]
pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    temp_path: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    /// Creates a new temporary file in `dest`'s directory (which must exist).
    pub fn create(dest: impl AsRef<Path>) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        let (file, temp_path) = create_temp(&dest)?;
        Ok(AtomicFile {
            writer: Some(BufWriter::with_capacity(1 << 16, file)),
            temp_path,
            dest,
        })
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// The temporary file's path (where the bytes are until [`commit`](Self::commit)).
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Flushes, fsyncs, renames the temporary file onto the destination and fsyncs the directory,
    /// so after this returns the new contents survive a crash.
    pub fn commit(mut self) -> Result<()> {
        let writer = self
            .writer
            .take()
            .expect("writer is present until commit or drop");
        let file = writer
            .into_inner()
            .map_err(|e| Error::io("write", &self.temp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync", &self.temp_path, e))?;
        drop(file);
        if let Err(e) = fs::rename(&self.temp_path, &self.dest) {
            let _ = fs::remove_file(&self.temp_path);
            return Err(Error::io("rename into place", &self.dest, e));
        }
        sync_dir(parent_dir(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer_mut().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer_mut().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer_mut().flush()
    }
}

impl AtomicFile {
    fn writer_mut(&mut self) -> &mut BufWriter<File> {
        self.writer
            .as_mut()
            .expect("writer is present until commit or drop")
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Not committed: the bytes must never become visible.
            drop(writer);
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// Creates an empty temporary file for `dest` in its directory (which must exist), named by the
/// one rule (`.<name>.tmp-<pid>-<n>`), for writers that fill it by path — e.g. several threads
/// writing at fixed offsets, or a library that opens files itself (sqlite). Finish with
/// [`commit_temp`]; on failure the caller removes it (a later run's
/// [`remove_stale_temp_files`] also does).
pub fn create_temp(dest: &Path) -> Result<(File, PathBuf)> {
    unique_temp(dest, "create temporary file", |path| {
        OpenOptions::new().write(true).create_new(true).open(path)
    })
}

/// Create `dest`'s temporary sibling `.<name>.tmp-<pid>-<n>` with `create` (`what` names the
/// operation in an error), which must fail
/// with `AlreadyExists` when the name is taken (`create_new`, `create_dir`): that makes the
/// name ours alone, and a leftover from a dead process with the same pid (or a concurrent
/// writer in this process) just moves us to the next number.
fn unique_temp<T>(
    dest: &Path,
    what: &'static str,
    create: impl Fn(&Path) -> std::io::Result<T>,
) -> Result<(T, PathBuf)> {
    let name = dest.file_name().ok_or_else(|| {
        Error::io(
            "find the name of",
            dest,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
        )
    })?;
    let dir = parent_dir(dest);
    let pid = std::process::id();
    for n in 0u64.. {
        let temp = dir.join(format!(".{}{TEMP_INFIX}{pid}-{n}", name.to_string_lossy()));
        match create(&temp) {
            Ok(made) => return Ok((made, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(what, temp, e)),
        }
    }
    unreachable!("u64 temporary-name counter exhausted")
}

/// Fsyncs a temporary file made by [`create_temp`] and written by path, renames it onto `dest`
/// and fsyncs the directory: after this returns the new contents survive a crash. On failure
/// the temporary file is removed.
pub fn commit_temp(temp: &Path, dest: &Path) -> Result<()> {
    let synced = OpenOptions::new()
        .write(true)
        .open(temp)
        .and_then(|f| f.sync_all());
    if let Err(e) = synced {
        let _ = fs::remove_file(temp);
        return Err(Error::io("fsync", temp, e));
    }
    if let Err(e) = fs::rename(temp, dest) {
        let _ = fs::remove_file(temp);
        return Err(Error::io("rename into place", dest, e));
    }
    sync_dir(parent_dir(dest))
}

/// Creates an empty temporary folder for `dest` in its parent (which must exist), named by the
/// one rule (`.<name>.tmp-<pid>-<n>`): a folder written whole (a checkpoint generation, a
/// training run) and swapped in with [`commit_temp_dir`]. A killed writer's leftover is removed
/// whole by [`remove_stale_temp_files`].
pub fn create_temp_dir(dest: &Path) -> Result<PathBuf> {
    unique_temp(dest, "create temporary folder", |path| fs::create_dir(path)).map(|((), path)| path)
}

/// Replaces the folder `dest` (if any) with the finished folder `temp` (a training run's work
/// folder, a checkpoint generation) and fsyncs their parent, so that a folder is at `dest` at
/// every moment: the old one, then the new one, never none and never a partial one.
///
/// On Linux the two are swapped in one step (`renameat2` with `RENAME_EXCHANGE`) and the old
/// folder, now under `temp`'s name, is removed (a crash before that leaves it there; under a
/// temporary name from [`create_temp_dir`], [`remove_stale_temp_files`] removes it). Where the
/// exchange is unsupported (another OS, a file system without it) the old folder is first
/// renamed aside under a temporary name and the new one renamed in: a crash between the two
/// renames leaves no folder at `dest` (the old one survives under its temporary name until
/// [`remove_stale_temp_files`]). `temp` should be a sibling of `dest` (renames do not cross
/// file systems).
pub fn commit_temp_dir(temp: &Path, dest: &Path) -> Result<()> {
    let dest_parent = parent_dir(dest);
    match exchange(temp, dest) {
        Exchange::Swapped => {
            sync_dir(dest_parent)?;
            if parent_dir(temp) != dest_parent {
                sync_dir(parent_dir(temp))?;
            }
            // `temp` now names the old folder.
            fs::remove_dir_all(temp).map_err(|e| Error::io("remove the previous folder", temp, e))
        }
        Exchange::NoDestination => {
            fs::rename(temp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
            sync_dir(dest_parent)
        }
        Exchange::Unsupported => replace_by_renames(temp, dest),
        Exchange::Failed(e) => Err(Error::io("swap into place", dest, e)),
    }
}

/// [`commit_temp_dir`] where folders cannot be swapped: the old folder is renamed aside under
/// a temporary name (a placeholder folder reserves the name; renaming a folder onto an empty one
/// replaces it), the new one renamed in, the parent fsynced, the old one removed.
fn replace_by_renames(temp: &Path, dest: &Path) -> Result<()> {
    let aside = create_temp_dir(dest)?;
    if let Err(e) = fs::rename(dest, &aside) {
        let _ = fs::remove_dir(&aside);
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(Error::io("move the previous folder aside", dest, e));
        }
    }
    fs::rename(temp, dest).map_err(|e| Error::io("rename into place", dest, e))?;
    sync_dir(parent_dir(dest))?;
    match fs::remove_dir_all(&aside) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove the previous folder", aside, e)),
    }
}

/// What an attempt to swap two folders in one step did.
enum Exchange {
    /// `temp` and `dest` swapped names.
    Swapped,
    /// Nothing is at `dest`: a plain rename does.
    NoDestination,
    /// The OS or the file system cannot swap.
    Unsupported,
    /// Another error (permissions, `temp` missing, …).
    Failed(std::io::Error),
}

/// Swap `temp` and `dest` with `renameat2(RENAME_EXCHANGE)`.
#[cfg(target_os = "linux")]
fn exchange(temp: &Path, dest: &Path) -> Exchange {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(from), Ok(to)) = (
        CString::new(temp.as_os_str().as_bytes()),
        CString::new(dest.as_os_str().as_bytes()),
    ) else {
        return Exchange::Failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path contains a NUL byte",
        ));
    };
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Exchange::Swapped;
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // ENOENT: `dest` does not exist (a missing `temp` fails the plain rename the same way).
        Some(libc::ENOENT) => Exchange::NoDestination,
        // EINVAL: the file system does not take the flag; ENOSYS: a kernel before 3.15.
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => Exchange::Unsupported,
        _ => Exchange::Failed(e),
    }
}

/// No atomic exchange outside Linux: rename aside, then into place.
#[cfg(not(target_os = "linux"))]
fn exchange(_temp: &Path, dest: &Path) -> Exchange {
    if dest.exists() {
        Exchange::Unsupported
    } else {
        Exchange::NoDestination
    }
}

/// Makes `dest` the file `src` (a checkpoint's export: the same bytes under a second name)
/// atomically: a hard link to `src` under `dest`'s temporary name, renamed over `dest`, then the
/// directory fsynced; where the file system refuses the link, a copy (fsynced) takes its place.
/// A reader of `dest` sees the old file or the new one, never a partial one.
pub fn link_atomic(src: &Path, dest: &Path) -> Result<()> {
    let temp = match unique_temp(dest, "link", |temp| fs::hard_link(src, temp)) {
        Ok(((), temp)) => temp,
        Err(_) => {
            let (mut file, temp) = create_temp(dest)?;
            let copied = File::open(src)
                .and_then(|mut from| std::io::copy(&mut from, &mut file))
                .and_then(|_| file.sync_all());
            if let Err(e) = copied {
                let _ = fs::remove_file(&temp);
                return Err(Error::io("copy", src, e));
            }
            temp
        }
    };
    if let Err(e) = fs::rename(&temp, dest) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("rename into place", dest, e));
    }
    sync_dir(parent_dir(dest))
}

/// Like [`write_atomic`], but leaves the file (and its mtime) alone when it already holds
/// `bytes`, so digests and stat caches see no change. Returns whether it wrote.
pub fn write_if_changed(path: impl AsRef<Path>, bytes: &[u8]) -> Result<bool> {
    let path = path.as_ref();
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    write_atomic(path, bytes)?;
    Ok(true)
}

/// Writes `bytes` to `path` atomically (see [`AtomicFile`]).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes)
        .map_err(|e| Error::io("write", file.temp_path(), e))?;
    file.commit()
}

/// Whether a file name is one of wingflow's temporary names, `.<name>.tmp-<pid>-<n>`.
pub fn is_temp_file_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((stem, suffix)) = rest.rsplit_once(TEMP_INFIX) else {
        return false;
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !stem.is_empty()
        && suffix
            .split_once('-')
            .is_some_and(|(pid, n)| all_digits(pid) && all_digits(n))
}

/// Removes wingflow temporary files in `dir` (and below it when `recursive`), returning what was
/// removed. A missing `dir` is not an error.
///
/// Call this only while holding the [`RunLock`](crate::RunLock): then no other run can be
/// writing, so every temporary file found is the leftover of a killed run.
pub fn remove_stale_temp_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    remove_temps_into(dir, recursive, &mut removed)?;
    Ok(removed)
}

fn remove_temps_into(dir: &Path, recursive: bool, removed: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
        let temp = is_temp_file_name(&entry.file_name().to_string_lossy());
        if file_type.is_dir() && temp {
            // A folder written whole and swapped in (a training run): a leftover is removed
            // whole.
            match fs::remove_dir_all(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove stale temporary folder", path, e)),
            }
        } else if file_type.is_dir() {
            if recursive {
                remove_temps_into(&path, true, removed)?;
            }
        } else if temp {
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove stale temporary file", path, e)),
            }
        }
    }
    Ok(())
}

/// The directory a path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Windows cannot open a directory as a file; NTFS journals the rename itself.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn commit_replaces_destination_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("faces.parquet");
        fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, b"new contents").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new contents");
        assert_eq!(names_in(dir.path()), vec!["faces.parquet"]);
    }

    #[test]
    fn drop_without_commit_removes_temp_and_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("plan.parquet");
        fs::write(&dest, b"previous").unwrap();
        {
            let mut file = AtomicFile::create(&dest).unwrap();
            file.write_all(b"half-written").unwrap();
            file.flush().unwrap();
            assert!(file.temp_path().exists());
            let temp_name = file.temp_path().file_name().unwrap().to_string_lossy();
            assert!(is_temp_file_name(&temp_name), "{temp_name}");
        }
        assert_eq!(fs::read(&dest).unwrap(), b"previous");
        assert_eq!(names_in(dir.path()), vec!["plan.parquet"]);

        let fresh = dir.path().join("never-committed");
        drop(AtomicFile::create(&fresh).unwrap());
        assert!(!fresh.exists());
        assert_eq!(names_in(dir.path()), vec!["plan.parquet"]);
    }

    #[test]
    fn concurrent_writers_to_one_destination_get_distinct_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        let a = AtomicFile::create(&dest).unwrap();
        let b = AtomicFile::create(&dest).unwrap();
        assert_ne!(a.temp_path(), b.temp_path());
    }

    #[test]
    fn temp_name_recognition() {
        assert!(is_temp_file_name(".faces.parquet.tmp-123-0"));
        assert!(is_temp_file_name(".a.tmp-1-99"));
        assert!(!is_temp_file_name("faces.parquet.tmp-123-0"));
        assert!(!is_temp_file_name(".faces.parquet"));
        assert!(!is_temp_file_name(".x.tmp-12a-0"));
        assert!(!is_temp_file_name(".x.tmp-12-"));
        assert!(!is_temp_file_name("..tmp-1-2"));
    }

    #[test]
    fn stale_temp_files_are_removed_recursively_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("shards");
        fs::create_dir(&sub).unwrap();
        // What a SIGKILLed writer leaves behind: the temp file, never renamed.
        let top = AtomicFile::create(dir.path().join("index.json")).unwrap();
        let top_temp = top.temp_path().to_path_buf();
        std::mem::forget(top);
        let inner = AtomicFile::create(sub.join("shard-00000.safetensors")).unwrap();
        let inner_temp = inner.temp_path().to_path_buf();
        std::mem::forget(inner);
        fs::write(dir.path().join("keep.txt"), b"k").unwrap();

        assert_eq!(
            remove_stale_temp_files(dir.path(), false).unwrap(),
            vec![top_temp]
        );
        assert!(inner_temp.exists());
        assert_eq!(
            remove_stale_temp_files(dir.path(), true).unwrap(),
            vec![inner_temp]
        );
        assert_eq!(names_in(dir.path()), vec!["keep.txt", "shards"]);
        assert!(
            remove_stale_temp_files(&dir.path().join("absent"), true)
                .unwrap()
                .is_empty()
        );
    }

    /// Set in the child process of [`a_writer_killed_midway_leaves_no_file_under_its_name`]:
    /// the destination it writes to.
    const KILL_DEST: &str = "WINGFLOW_ATOMIC_KILL_DEST";

    /// The child's part: write half a file through `AtomicFile`, flush it to the temporary
    /// file, then wait to be killed. Runs only when the parent test starts it.
    #[test]
    #[ignore = "run as a child process by a_writer_killed_midway_leaves_no_file_under_its_name"]
    fn writer_that_is_killed() {
        let Some(dest) = std::env::var_os(KILL_DEST) else {
            return;
        };
        let mut file = AtomicFile::create(PathBuf::from(dest)).unwrap();
        file.write_all(&[7u8; 1 << 20]).unwrap();
        file.flush().unwrap();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    #[test]
    fn a_writer_killed_midway_leaves_no_file_under_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("faces.parquet");
        fs::write(&dest, b"the previous, complete output").unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "atomic::tests::writer_that_is_killed"])
            .args(["--ignored", "--test-threads=1"])
            .env(KILL_DEST, &dest)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the child has written its first megabyte into the temporary file.
        let temp = loop {
            let written = names_in(dir.path()).into_iter().find(|n| {
                is_temp_file_name(n)
                    && fs::metadata(dir.path().join(n)).is_ok_and(|m| m.len() == 1 << 20)
            });
            if let Some(name) = written {
                break dir.path().join(name);
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "the writer exited early"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup in the child.
        child.wait().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"the previous, complete output");
        assert!(
            temp.exists(),
            "the killed writer's temporary file stays behind"
        );
        let removed = remove_stale_temp_files(dir.path(), false).unwrap();
        assert_eq!(removed, vec![temp]);
        assert_eq!(names_in(dir.path()), ["faces.parquet"]);
    }

    #[test]
    fn a_finished_folder_replaces_an_existing_one_and_the_old_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("last-000000020");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("old.safetensors"), b"old").unwrap();
        fs::create_dir(dest.join("nested")).unwrap();
        fs::write(dest.join("nested/x"), b"x").unwrap();
        let temp = create_temp_dir(&dest).unwrap();
        let temp_name = temp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(is_temp_file_name(&temp_name), "{temp_name}");
        assert!(temp_name.starts_with(".last-000000020.tmp-"), "{temp_name}");
        fs::write(temp.join("new.safetensors"), b"new").unwrap();
        commit_temp_dir(&temp, &dest).unwrap();
        assert_eq!(names_in(&dest), ["new.safetensors"]);
        assert_eq!(fs::read(dest.join("new.safetensors")).unwrap(), b"new");
        // Neither the old folder nor the temporary name is left.
        assert_eq!(names_in(dir.path()), ["last-000000020"]);
        // Into an empty place, too.
        let fresh = dir.path().join("best-000000003");
        let temp = create_temp_dir(&fresh).unwrap();
        commit_temp_dir(&temp, &fresh).unwrap();
        assert_eq!(names_in(dir.path()), ["best-000000003", "last-000000020"]);
        // A missing temporary folder is an error naming the destination, and changes nothing.
        let err = commit_temp_dir(&dir.path().join(".gone.tmp-1-0"), &dest).unwrap_err();
        assert!(err.to_string().contains("last-000000020"), "{err}");
        assert_eq!(names_in(&dest), ["new.safetensors"]);
    }

    #[test]
    fn without_an_exchange_the_old_folder_is_renamed_aside_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("stage1");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("old.txt"), b"old").unwrap();
        let temp = create_temp_dir(&dest).unwrap();
        fs::write(temp.join("new.txt"), b"new").unwrap();
        replace_by_renames(&temp, &dest).unwrap();
        assert_eq!(names_in(&dest), ["new.txt"]);
        assert_eq!(names_in(dir.path()), ["stage1"]);
        let absent = dir.path().join("stage2");
        let temp = create_temp_dir(&absent).unwrap();
        replace_by_renames(&temp, &absent).unwrap();
        assert_eq!(names_in(dir.path()), ["stage1", "stage2"]);
    }

    #[test]
    fn an_export_is_the_same_file_under_a_second_name() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("gen.safetensors");
        let dest = dir.path().join("last.safetensors");
        fs::write(&src, b"weights at step 4").unwrap();
        link_atomic(&src, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"weights at step 4");
        // Replacing the export leaves the old source untouched.
        let next = dir.path().join("next.safetensors");
        fs::write(&next, b"weights at step 8").unwrap();
        link_atomic(&next, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"weights at step 8");
        assert_eq!(fs::read(&src).unwrap(), b"weights at step 4");
        fs::remove_file(&next).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"weights at step 8");
        assert_eq!(
            names_in(dir.path()),
            ["gen.safetensors", "last.safetensors"]
        );
        let err = link_atomic(&dir.path().join("absent"), &dest).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
        assert_eq!(fs::read(&dest).unwrap(), b"weights at step 8");
    }

    #[test]
    fn a_finished_folder_is_swapped_in_and_a_temporary_one_removed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("stage1");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("old.txt"), b"old").unwrap();
        let work = dir.path().join(".stage1.partial");
        fs::create_dir(&work).unwrap();
        fs::write(work.join("new.txt"), b"new").unwrap();
        commit_temp_dir(&work, &dest).unwrap();
        assert_eq!(names_in(&dest), ["new.txt"]);
        // A folder under a temporary name (a killed writer's) is removed whole by the cleanup.
        let leftover = dir.path().join(".stage1.tmp-1-0");
        fs::create_dir(&leftover).unwrap();
        fs::write(leftover.join("half.safetensors"), b"x").unwrap();
        assert_eq!(
            remove_stale_temp_files(dir.path(), false).unwrap(),
            vec![leftover]
        );
        assert_eq!(names_in(dir.path()), ["stage1"]);
    }
}
