//! The stat cache: `(path, size, mtime, ctime, inode) → blake3`, so unchanged files are not
//! re-hashed.
//!
//! A lookup costs one `stat`; only files whose stat changed are read again. A file whose mtime
//! alone changed is re-hashed and yields the same digest, so nothing downstream becomes stale.
//!
//! The cache is shared by reference between threads (`&StatCache` is `Sync`), and
//! [`StatCache::digest_files`] hashes a batch on all cores with scoped threads.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::atomic::{is_temp_file_name, write_atomic};
use crate::digest::{Digest, digest_file};
use crate::{Error, Result, STAT_CACHE_FILE_NAME, STATE_DIR_NAME};

/// On-disk format version of the stat cache.
const FORMAT_VERSION: u32 = 1;

/// A file modified less than this long before we started hashing it is not cached: a second write
/// within the same timestamp tick would leave its stat unchanged. Two seconds covers the coarsest
/// common file systems (FAT, HFS+ at 1 s, NFS clock skew); ext4/xfs ticks are milliseconds.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// How many times to re-read a file that keeps changing while it is hashed.
const MAX_HASH_ATTEMPTS: usize = 3;

/// Batches smaller than this per thread are not worth a thread.
const FILES_PER_THREAD_MIN: usize = 8;

/// Whether a lookup may trust an unchanged stat or must read the file again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPolicy {
    /// Re-hash only files whose stat differs from the cached one (the cheap check).
    TrustStat,
    /// Re-hash every file (`--verify`); the cache is refreshed with the results.
    Rehash,
}

/// The digest of one regular file together with the stat it was taken under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// blake3 of the contents.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

/// What a digested path turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PathKind {
    /// A regular file.
    File,
    /// A directory tree (temporary files excluded).
    Dir {
        /// Number of regular files in the tree.
        files: u64,
    },
}

/// The digest of a file or a directory tree.
///
/// A directory's digest is blake3 over its sorted list of (relative path, file digest), so it
/// changes when any file's contents change or a file is added, removed or renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathDigest {
    /// File or directory.
    pub kind: PathKind,
    /// The digest.
    pub digest: Digest,
    /// Size in bytes (a directory: the sum over its files).
    pub size: u64,
    /// Modification time in ns since the epoch (a directory: the latest over its files).
    pub mtime_ns: i64,
}

/// The stat fields a cached digest is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileStat {
    size: u64,
    mtime_ns: i64,
    /// The inode-change time catches a content edit that restored the old mtime (`cp -p`).
    ctime_ns: i64,
    inode: u64,
}

impl FileStat {
    fn of(meta: &Metadata) -> FileStat {
        FileStat {
            size: meta.len(),
            mtime_ns: meta.modified().map(system_time_ns).unwrap_or(0),
            ctime_ns: ctime_ns(meta),
            inode: inode(meta),
        }
    }
}

#[cfg(unix)]
fn ctime_ns(meta: &Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

#[cfg(not(unix))]
fn ctime_ns(_meta: &Metadata) -> i64 {
    0
}

#[cfg(unix)]
fn inode(meta: &Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_meta: &Metadata) -> u64 {
    0
}

/// Nanoseconds since the Unix epoch, saturating (negative before 1970).
fn system_time_ns(t: SystemTime) -> i64 {
    let ns = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    };
    ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Entry {
    #[serde(flatten)]
    stat: FileStat,
    digest: Digest,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: BTreeMap<String, Entry>,
}

/// A thread-safe map from file stat to blake3 digest, optionally persisted as JSON.
#[derive(Debug, Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: Mutex<HashMap<PathBuf, Entry>>,
    /// Digests that a writer computed from the bytes it wrote ([`note_written`]), for this
    /// process only: never saved, so the racy-window rule of saved entries still holds.
    ///
    /// [`note_written`]: StatCache::note_written
    written: Mutex<HashMap<PathBuf, Entry>>,
    hashes: AtomicU64,
    dirty: AtomicBool,
}

impl StatCache {
    /// An empty cache that is never persisted.
    pub fn in_memory() -> StatCache {
        StatCache::default()
    }

    /// The cache of an output root: `<root>/.wingflow/stat-cache.json`.
    pub fn for_root(root: &Path) -> Result<StatCache> {
        StatCache::load(root.join(STATE_DIR_NAME).join(STAT_CACHE_FILE_NAME))
    }

    /// Loads the cache persisted at `file`; [`save`](Self::save) writes back there.
    ///
    /// A missing file gives an empty cache. So does an unreadable format (corrupt, or written by
    /// another version): the cache only saves work, so discarding it costs re-hashing, never
    /// correctness.
    pub fn load(file: impl Into<PathBuf>) -> Result<StatCache> {
        let file = file.into();
        let entries = match fs::read(&file) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(cache) if cache.format == FORMAT_VERSION => cache
                    .entries
                    .into_iter()
                    .map(|(path, entry)| (PathBuf::from(path), entry))
                    .collect(),
                _ => HashMap::new(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(Error::io("read stat cache", file, e)),
        };
        Ok(StatCache {
            file: Some(file),
            entries: Mutex::new(entries),
            ..StatCache::default()
        })
    }

    /// Records that the file at `path` holds bytes whose blake3 is `digest`, as computed by the
    /// code that wrote them (or had just read them): until its stat changes, [`HashPolicy::TrustStat`] lookups in this
    /// process return `digest` instead of reading the file. A file that cannot be stat-ed is not
    /// recorded (it is hashed, or reported missing, as usual).
    pub fn note_written(&self, path: &Path, digest: Digest) {
        let (Ok(key), Ok(meta)) = (std::path::absolute(path), fs::metadata(path)) else {
            return;
        };
        let entry = Entry {
            stat: FileStat::of(&meta),
            digest,
        };
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, entry);
    }

    /// Writes the cache back atomically if anything changed since it was loaded.
    pub fn save(&self) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let entries: BTreeMap<String, Entry> = self
            .lock()
            .iter()
            // A non-UTF-8 path cannot be a JSON key; such files are simply re-hashed next run.
            .filter_map(|(path, entry)| Some((path.to_str()?.to_owned(), *entry)))
            .collect();
        let bytes = serde_json::to_vec(&CacheFile {
            format: FORMAT_VERSION,
            entries,
        })
        .map_err(|source| Error::Serialize {
            what: "the stat cache",
            source,
        })?;
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        write_atomic(file, &bytes)
    }

    /// How many files this cache has read and hashed since it was created (a counter for tests
    /// and progress reports).
    pub fn hash_count(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of one regular file, from the cache when its stat is unchanged.
    pub fn digest_file(&self, path: &Path, policy: HashPolicy) -> Result<FileDigest> {
        let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        self.digest_file_with(path, &meta, policy)
    }

    /// [`digest_file`](Self::digest_file) for a caller that has just stat-ed the file.
    fn digest_file_with(
        &self,
        path: &Path,
        meta: &Metadata,
        policy: HashPolicy,
    ) -> Result<FileDigest> {
        let key = std::path::absolute(path).map_err(|e| Error::io("resolve", path, e))?;
        if !meta.is_file() {
            return Err(Error::io(
                "hash",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let mut stat = FileStat::of(meta);
        let written = || {
            let noted = self.written.lock().unwrap_or_else(|p| p.into_inner());
            noted.get(&key).copied()
        };
        if policy == HashPolicy::TrustStat
            && let Some(entry) = self.lock().get(&key).copied().or_else(written)
            && entry.stat == stat
        {
            return Ok(FileDigest {
                digest: entry.digest,
                size: stat.size,
                mtime_ns: stat.mtime_ns,
            });
        }
        for attempt in 1..=MAX_HASH_ATTEMPTS {
            let started_ns = system_time_ns(SystemTime::now()) as i128;
            let digest = digest_file(&key)?;
            self.hashes.fetch_add(1, Ordering::Relaxed);
            let after = fs::metadata(&key).map_err(|e| Error::io("stat", path, e))?;
            let stat_after = FileStat::of(&after);
            let unchanged = stat_after == stat;
            if unchanged || attempt == MAX_HASH_ATTEMPTS {
                let settled = started_ns - stat.mtime_ns as i128 >= RACY_WINDOW_NS;
                let mut entries = self.lock();
                if unchanged && settled {
                    entries.insert(key, Entry { stat, digest });
                } else {
                    // Recently written or still changing: a later edit could keep this stat, so
                    // the next lookup must read the file again.
                    entries.remove(&key);
                }
                self.dirty.store(true, Ordering::SeqCst);
                return Ok(FileDigest {
                    digest,
                    size: stat_after.size,
                    mtime_ns: stat_after.mtime_ns,
                });
            }
            stat = stat_after;
        }
        unreachable!("the last attempt always returns")
    }

    /// Digests of many files, hashed in parallel on all available cores; results are in the
    /// order of `paths`.
    pub fn digest_files(&self, paths: &[PathBuf], policy: HashPolicy) -> Vec<Result<FileDigest>> {
        parallel_map(paths, |path| self.digest_file(path, policy))
    }

    /// Digests of many files or directory trees, in the order of `paths`; `Ok(None)` for a path
    /// that does not exist. Files are hashed in parallel.
    pub fn digest_paths(
        &self,
        paths: &[PathBuf],
        policy: HashPolicy,
    ) -> Vec<Result<Option<PathDigest>>> {
        parallel_map(paths, |path| match fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
            Ok(meta) if meta.is_dir() => self.digest_path(path, policy).map(Some),
            Ok(meta) => self.digest_file_with(path, &meta, policy).map(|d| {
                Some(PathDigest {
                    kind: PathKind::File,
                    digest: d.digest,
                    size: d.size,
                    mtime_ns: d.mtime_ns,
                })
            }),
        })
    }

    /// The digest of a file or of a directory tree (see [`PathDigest`]).
    pub fn digest_path(&self, path: &Path, policy: HashPolicy) -> Result<PathDigest> {
        let meta = fs::metadata(path).map_err(|e| Error::io("stat", path, e))?;
        if !meta.is_dir() {
            let file = self.digest_file(path, policy)?;
            return Ok(PathDigest {
                kind: PathKind::File,
                digest: file.digest,
                size: file.size,
                mtime_ns: file.mtime_ns,
            });
        }
        let mut files = Vec::new();
        list_tree(path, "", &mut files)?;
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let absolute: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
        let digests = self.digest_files(&absolute, policy);
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"wingflow-dir-v1\0");
        let (mut size, mut mtime_ns) = (0u64, i64::MIN);
        for ((relative, _), digest) in files.iter().zip(digests) {
            let digest = digest?;
            hasher.update(relative.as_bytes());
            hasher.update(&[0]);
            hasher.update(digest.digest.as_bytes());
            size += digest.size;
            mtime_ns = mtime_ns.max(digest.mtime_ns);
        }
        Ok(PathDigest {
            kind: PathKind::Dir {
                files: files.len() as u64,
            },
            digest: hasher.finalize().into(),
            size,
            mtime_ns: if files.is_empty() { 0 } else { mtime_ns },
        })
    }
}

impl StatCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // A panic while holding the lock cannot leave a half-updated entry (inserts are single
        // calls), so a poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `f` over `items` on all available cores, results in input order.
///
/// Files differ wildly in size, so threads pull the next index instead of taking fixed chunks.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().div_ceil(FILES_PER_THREAD_MIN))
        .max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(done) => {
                    for (i, result) in done {
                        results[i] = Some(result);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every index is claimed by exactly one worker"))
        .collect()
}

/// Collects `(relative path with '/' separators, path)` of every regular file under `dir`,
/// following symlinks and skipping wingflow temporary files.
fn list_tree(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        let relative = format!("{prefix}{name}");
        if meta.is_dir() {
            list_tree(&path, &format!("{relative}/"), out)?;
        } else if meta.is_file() && !is_temp_file_name(&name) {
            out.push((relative, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::digest_bytes;
    use std::time::Duration;

    /// Moves a file's mtime an hour into the past, as if it had been written long ago, so the
    /// racy-timestamp guard lets the cache keep it.
    fn age(path: &Path) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }

    #[test]
    fn unchanged_file_is_hashed_once_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("img.jpg");
        fs::write(&file, b"pixels").unwrap();
        age(&file);

        let cache = StatCache::for_root(dir.path()).unwrap();
        let first = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        let second = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        assert_eq!(first, second);
        assert_eq!(first.digest, digest_bytes(b"pixels"));
        assert_eq!(cache.hash_count(), 1);
        cache.save().unwrap();

        let reloaded = StatCache::for_root(dir.path()).unwrap();
        assert_eq!(reloaded.len(), 1);
        reloaded.digest_file(&file, HashPolicy::TrustStat).unwrap();
        assert_eq!(reloaded.hash_count(), 0, "persisted entry avoids re-hash");
        reloaded.digest_file(&file, HashPolicy::Rehash).unwrap();
        assert_eq!(reloaded.hash_count(), 1, "Rehash ignores the cache");
    }

    #[test]
    fn same_size_content_change_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.pts");
        fs::write(&file, b"AAAA").unwrap();
        age(&file);
        let cache = StatCache::in_memory();
        let before = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        // Same size, and the mtime moved back to the same old value: only ctime tells.
        let old_mtime = fs::metadata(&file).unwrap().modified().unwrap();
        fs::write(&file, b"BBBB").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old_mtime)
            .unwrap();
        let after = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        assert_eq!(after.size, before.size);
        assert_eq!(after.digest, digest_bytes(b"BBBB"));
        assert_eq!(cache.hash_count(), 2);
    }

    #[test]
    fn recently_written_file_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fresh.bin");
        fs::write(&file, b"1111").unwrap();
        let cache = StatCache::in_memory();
        cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        // Within one timestamp tick a rewrite may keep size, mtime and inode: it must still show.
        fs::write(&file, b"2222").unwrap();
        let after = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        assert_eq!(after.digest, digest_bytes(b"2222"));
        assert_eq!(cache.hash_count(), 2);
    }

    #[test]
    fn mtime_only_change_rehashes_to_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        fs::write(&file, b"same").unwrap();
        age(&file);
        let cache = StatCache::in_memory();
        let before = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let after = cache.digest_file(&file, HashPolicy::TrustStat).unwrap();
        assert_eq!(cache.hash_count(), 2);
        assert_eq!(before.digest, after.digest);
        assert_ne!(before.mtime_ns, after.mtime_ns);
    }

    #[test]
    fn parallel_batch_matches_sequential_and_reports_errors_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths: Vec<PathBuf> = (0..100)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                fs::write(&p, format!("content {i}")).unwrap();
                age(&p);
                p
            })
            .collect();
        paths.insert(50, dir.path().join("missing"));
        let cache = StatCache::in_memory();
        let results = cache.digest_files(&paths, HashPolicy::TrustStat);
        assert_eq!(results.len(), 101);
        for (i, (path, result)) in paths.iter().zip(&results).enumerate() {
            if i == 50 {
                let err = result.as_ref().unwrap_err().to_string();
                assert!(err.contains("missing"), "{err}");
            } else {
                let expected = digest_bytes(&fs::read(path).unwrap());
                assert_eq!(result.as_ref().unwrap().digest, expected);
            }
        }
        assert_eq!(cache.hash_count(), 100);
        cache.digest_files(&paths, HashPolicy::TrustStat);
        assert_eq!(cache.hash_count(), 100, "second pass is all cache hits");
    }

    #[test]
    fn directory_digest_tracks_contents_names_and_skips_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("shards");
        fs::create_dir_all(tree.join("train")).unwrap();
        fs::write(tree.join("train/shard-0"), b"s0").unwrap();
        fs::write(tree.join("index.json"), b"{}").unwrap();
        let cache = StatCache::in_memory();
        let base = cache.digest_path(&tree, HashPolicy::TrustStat).unwrap();
        assert_eq!(base.kind, PathKind::Dir { files: 2 });
        assert_eq!(base.size, 4);

        fs::write(tree.join("train/.shard-1.tmp-99-0"), b"partial").unwrap();
        let with_temp = cache.digest_path(&tree, HashPolicy::TrustStat).unwrap();
        assert_eq!(with_temp, base, "temporary files are not outputs");

        fs::rename(tree.join("train/shard-0"), tree.join("train/shard-1")).unwrap();
        let renamed = cache.digest_path(&tree, HashPolicy::TrustStat).unwrap();
        assert_ne!(renamed.digest, base.digest);

        fs::rename(tree.join("train/shard-1"), tree.join("train/shard-0")).unwrap();
        fs::write(tree.join("train/shard-0"), b"S0").unwrap();
        let edited = cache.digest_path(&tree, HashPolicy::TrustStat).unwrap();
        assert_ne!(edited.digest, base.digest);
        fs::write(tree.join("train/shard-0"), b"s0").unwrap();
        assert_eq!(
            cache
                .digest_path(&tree, HashPolicy::TrustStat)
                .unwrap()
                .digest,
            base.digest
        );
    }

    #[test]
    fn digest_paths_mixes_files_directories_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let tree = dir.path().join("t");
        fs::write(&file, b"f").unwrap();
        fs::create_dir(&tree).unwrap();
        fs::write(tree.join("g"), b"g").unwrap();
        let cache = StatCache::in_memory();
        let paths = [file.clone(), dir.path().join("absent"), tree.clone()];
        let results: Vec<Option<PathDigest>> = cache
            .digest_paths(&paths, HashPolicy::TrustStat)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(results[0].unwrap().digest, digest_bytes(b"f"));
        assert_eq!(results[1], None);
        assert_eq!(results[2].unwrap().kind, PathKind::Dir { files: 1 });
        assert_eq!(
            results[2],
            Some(cache.digest_path(&tree, HashPolicy::TrustStat).unwrap())
        );
    }

    #[test]
    fn corrupt_cache_file_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(STATE_DIR_NAME);
        fs::create_dir_all(&state).unwrap();
        fs::write(state.join(STAT_CACHE_FILE_NAME), b"{ not json").unwrap();
        assert!(StatCache::for_root(dir.path()).unwrap().is_empty());
    }
}
