//! Writing one shard file whose bytes arrive at fixed offsets in any order (rows finish on any
//! thread). The file is assembled in aligned blocks; each block is hashed and written the moment
//! its last byte arrives, with direct I/O where the file system allows it. So a shard is never
//! read back to be hashed, and its bytes never fill the page cache (allocating fresh page-cache
//! pages costs more than rendering the crops on some virtual machines: 1.5 ms a MB measured on
//! the project's CI-like VM, see bench/README.md).
//!
//! The digest is blake3 of the whole file, computed from per-block chaining values merged along
//! blake3's own tree (blocks are power-of-two multiples of blake3's chunk, so every block is a
//! complete subtree): it equals `blake3::hash` of the file's bytes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use super::shard::{ShardDigest, io_err};
use super::{RenderError, Result};

/// Bytes per block: a power-of-two multiple of blake3's 1 KiB chunk and of the direct-I/O
/// alignment.
const BLOCK: usize = 256 << 10;

/// Alignment of direct-I/O buffers, offsets and lengths (covers 512-byte and 4 KiB sectors).
const ALIGN: usize = 4096;

/// Complete blocks waiting for the writer thread (bounds the memory they hold: 16 MiB).
const WRITE_QUEUE_BLOCKS: usize = 64;

/// Blocks being filled at once, at most (1 GiB). Rows arrive roughly in file order, so few
/// blocks are open; where they do not (faces of one image far apart in the plan), further
/// blocks go straight to the file through the page cache and are read back to be hashed.
const FILLING_BLOCKS: usize = 4096;

/// Reused block buffers, shared by every shard of a render (after the first blocks, no memory
/// is freshly allocated), and optionally a thread that writes complete blocks, so that the
/// threads rendering crops never wait for the disk.
#[derive(Debug)]
pub struct BlockPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Blocks being filled now, and the most there may be.
    filling: AtomicUsize,
    max_filling: usize,
    queue: Option<SyncSender<BlockWrite>>,
    writer: Option<JoinHandle<()>>,
}

impl Default for BlockPool {
    /// A pool without a writer thread: the thread that completes a block writes it.
    fn default() -> Self {
        BlockPool {
            free: Arc::default(),
            filling: AtomicUsize::new(0),
            max_filling: FILLING_BLOCKS,
            queue: None,
            writer: None,
        }
    }
}

/// A complete block on its way to the writer thread.
#[derive(Debug)]
struct BlockWrite {
    sink: Arc<Sink>,
    offset: u64,
    buf: Vec<u8>,
    len: usize,
}

impl BlockPool {
    /// A pool whose complete blocks are written by a thread of their own (by the thread that
    /// completes them if that thread cannot be started).
    pub fn with_writer_thread() -> Self {
        let free: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let (queue, blocks) = sync_channel(WRITE_QUEUE_BLOCKS);
        let returned = Arc::clone(&free);
        match std::thread::Builder::new()
            .name("shard-writer".to_owned())
            .spawn(move || write_blocks(blocks, &returned))
        {
            Ok(writer) => BlockPool {
                free,
                filling: AtomicUsize::new(0),
                max_filling: FILLING_BLOCKS,
                queue: Some(queue),
                writer: Some(writer),
            },
            Err(_) => BlockPool::default(),
        }
    }

    /// A block buffer (`BLOCK + ALIGN` bytes, so that an aligned `BLOCK` fits), holding
    /// whatever its last block held.
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        reused.unwrap_or_else(|| vec![0; BLOCK + ALIGN])
    }

    fn give(&self, buf: Vec<u8>) {
        give(&self.free, buf);
    }

    /// The pool with at most `blocks` blocks being filled at once.
    #[cfg(test)]
    fn with_max_filling(mut self, blocks: usize) -> Self {
        self.max_filling = blocks;
        self
    }

    /// A buffer for a block to be filled, or `None` when `max_filling` blocks already are.
    fn start_block(&self) -> Option<Vec<u8>> {
        if self.filling.fetch_add(1, Ordering::AcqRel) >= self.max_filling {
            self.filling.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(self.take())
    }

    /// Write the first `len` bytes of the aligned block in `buf` at `offset` of `sink`: on the
    /// writer thread when there is one.
    fn write(&self, sink: &Arc<Sink>, offset: u64, mut buf: Vec<u8>, len: usize) -> Result<()> {
        if let Some(queue) = &self.queue {
            *sink.pending.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            let write = BlockWrite {
                sink: Arc::clone(sink),
                offset,
                buf,
                len,
            };
            match queue.send(write) {
                Ok(()) => return Ok(()),
                // The writer thread is gone: write here.
                Err(returned) => {
                    sink.written_one();
                    buf = returned.0.buf;
                }
            }
        }
        let written = sink.write(aligned(&mut buf), offset, len);
        self.give(buf);
        written.map_err(io_err(&sink.path))
    }
}

impl Drop for BlockPool {
    fn drop(&mut self) {
        // Closing the queue ends the writer thread once it has written every queued block.
        self.queue = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn give(free: &Mutex<Vec<Vec<u8>>>, buf: Vec<u8>) {
    free.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
}

/// The writer thread: writes queued blocks until the queue closes.
fn write_blocks(blocks: Receiver<BlockWrite>, free: &Mutex<Vec<Vec<u8>>>) {
    for mut block in blocks {
        let written = block
            .sink
            .write(aligned(&mut block.buf), block.offset, block.len);
        if let Err(e) = written {
            let mut error = block.sink.error.lock().unwrap_or_else(|e| e.into_inner());
            error.get_or_insert(e);
        }
        give(free, block.buf);
        block.sink.written_one();
    }
}

/// The open handles of a shard file, and the writes still queued for it.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    /// The file opened for direct I/O, when the file system allows it.
    direct: Option<File>,
    /// Set once a direct write was refused: later blocks go through the page cache at once.
    direct_refused: AtomicBool,
    buffered: File,
    /// Blocks queued for the writer thread and not yet written.
    pending: Mutex<usize>,
    all_written: Condvar,
    /// The first error the writer thread met.
    error: Mutex<Option<std::io::Error>>,
}

impl Sink {
    /// Write `data[..len]` at `offset`: the whole of `data` (zero-padded to whole sectors)
    /// with direct I/O, or `len` bytes through the page cache where direct I/O is refused.
    fn write(&self, data: &[u8], offset: u64, len: usize) -> std::io::Result<()> {
        let padded = len.next_multiple_of(ALIGN);
        if let Some(file) = &self.direct
            && !self.direct_refused.load(Ordering::Relaxed)
        {
            match file.write_all_at(&data[..padded], offset) {
                Ok(()) => return Ok(()),
                // This file system's direct-I/O alignment rules differ: write through the cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct_refused.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(&data[..len], offset)
    }

    fn written_one(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending -= 1;
        if *pending == 0 {
            self.all_written.notify_all();
        }
    }

    /// Wait for the queued writes, and return the first error of any.
    fn wait(&self) -> std::io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while *pending > 0 {
            pending = self
                .all_written
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The `BLOCK` bytes of `buf` that start at an `ALIGN`-aligned address.
fn aligned(buf: &mut [u8]) -> &mut [u8] {
    let start = buf.as_ptr().align_offset(ALIGN);
    &mut buf[start..start + BLOCK]
}

#[derive(Debug)]
enum BlockState {
    /// No byte written yet.
    Empty,
    /// Some bytes written (`filled` of them).
    Filling { buf: Vec<u8>, filled: usize },
    /// Opened when too many blocks were being filled: its bytes go straight to the file
    /// through the page cache (`filled` of them so far).
    Spilled { filled: usize },
    /// Complete, being hashed by the thread that completed it.
    Flushing,
    /// Hashed and handed to be written; its chaining value (the file's hash when the file is
    /// one block).
    Written(ChainingValue),
}

/// A shard file being written: see the module documentation.
#[derive(Debug)]
pub struct ShardFile {
    sink: Arc<Sink>,
    len: u64,
    blocks: Vec<Mutex<BlockState>>,
}

impl ShardFile {
    /// Open (or create) the file at `path`, which will hold `len` bytes.
    pub fn open(path: &Path, len: u64) -> Result<Self> {
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err(path))?;
        // Not every file system takes O_DIRECT (the buffered handle then writes every block).
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        // At full length from the start, so only the last block's write extends the file.
        buffered.set_len(len).map_err(io_err(path))?;
        let count = len.div_ceil(BLOCK as u64).max(1) as usize;
        Ok(ShardFile {
            sink: Arc::new(Sink {
                path: path.to_owned(),
                direct,
                direct_refused: AtomicBool::new(false),
                buffered,
                pending: Mutex::new(0),
                all_written: Condvar::new(),
                error: Mutex::new(None),
            }),
            len,
            blocks: (0..count).map(|_| Mutex::new(BlockState::Empty)).collect(),
        })
    }

    fn block_len(&self, block: usize) -> usize {
        (self.len - (block * BLOCK) as u64).min(BLOCK as u64) as usize
    }

    /// Write `bytes` at `offset`. Every byte of the file is written exactly once (`finish`
    /// checks it); a block is hashed and written to disk when its last byte arrives.
    pub fn write_at(&self, pool: &BlockPool, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset + bytes.len() as u64 > self.len {
            return Err(self.misuse(format!(
                "{} bytes at offset {offset} run past the file's {} bytes",
                bytes.len(),
                self.len
            )));
        }
        let mut done = 0;
        while done < bytes.len() {
            let at = offset + done as u64;
            let block = (at / BLOCK as u64) as usize;
            let within = (at % BLOCK as u64) as usize;
            let block_len = self.block_len(block);
            let n = (bytes.len() - done).min(block_len - within);
            let complete = {
                let mut state = self.blocks[block].lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*state, BlockState::Empty) {
                    *state = match pool.start_block() {
                        Some(buf) => BlockState::Filling { buf, filled: 0 },
                        None => BlockState::Spilled { filled: 0 },
                    };
                }
                let piece = &bytes[done..done + n];
                let filled = match &mut *state {
                    BlockState::Filling { buf, filled } => {
                        aligned(buf)[within..within + n].copy_from_slice(piece);
                        *filled += n;
                        *filled
                    }
                    BlockState::Spilled { filled } => {
                        self.sink
                            .buffered
                            .write_all_at(piece, at)
                            .map_err(io_err(&self.sink.path))?;
                        *filled += n;
                        *filled
                    }
                    _ => {
                        return Err(
                            self.misuse(format!("block {block} written after it completed"))
                        );
                    }
                };
                if filled > block_len {
                    return Err(self.misuse(format!("block {block} written twice")));
                }
                if filled == block_len {
                    Some(std::mem::replace(&mut *state, BlockState::Flushing))
                } else {
                    None
                }
            };
            match complete {
                Some(BlockState::Filling { buf, .. }) => {
                    pool.filling.fetch_sub(1, Ordering::AcqRel);
                    self.flush(pool, block, buf)?;
                }
                Some(_) => self.hash_spilled(pool, block)?,
                None => {}
            }
            done += n;
        }
        Ok(())
    }

    fn misuse(&self, reason: String) -> RenderError {
        RenderError::Io {
            path: self.sink.path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
        }
    }

    /// The chaining value of block `block` (the file's hash when the file is one block).
    fn chaining_value(&self, block: usize, data: &[u8]) -> ChainingValue {
        if self.blocks.len() == 1 {
            *blake3::hash(data).as_bytes()
        } else {
            blake3::Hasher::new()
                .set_input_offset((block * BLOCK) as u64)
                .update(data)
                .finalize_non_root()
        }
    }

    /// Hash a complete spilled block, reading it back from the file.
    fn hash_spilled(&self, pool: &BlockPool, block: usize) -> Result<()> {
        let block_len = self.block_len(block);
        let mut buf = pool.take();
        let data = &mut buf[..block_len];
        let read = self
            .sink
            .buffered
            .read_exact_at(data, (block * BLOCK) as u64);
        let cv = read.map(|()| self.chaining_value(block, data));
        pool.give(buf);
        let cv = cv.map_err(io_err(&self.sink.path))?;
        *self.blocks[block].lock().unwrap_or_else(|e| e.into_inner()) = BlockState::Written(cv);
        Ok(())
    }

    /// Hash a complete block and hand it to be written.
    fn flush(&self, pool: &BlockPool, block: usize, mut buf: Vec<u8>) -> Result<()> {
        let block_len = self.block_len(block);
        let data = aligned(&mut buf);
        let offset = (block * BLOCK) as u64;
        let cv = self.chaining_value(block, &data[..block_len]);
        // Direct I/O writes whole sectors: the last block is padded with zeros, and `finish`
        // cuts the file back to its length.
        data[block_len..block_len.next_multiple_of(ALIGN)].fill(0);
        *self.blocks[block].lock().unwrap_or_else(|e| e.into_inner()) = BlockState::Written(cv);
        pool.write(&self.sink, offset, buf, block_len)
    }

    /// Check that every byte was written, set the file's length, and return its blake3 (hex)
    /// and length. The caller then commits the file.
    pub fn finish(&self) -> Result<ShardDigest> {
        self.sink.wait().map_err(io_err(&self.sink.path))?;
        let mut cvs = Vec::with_capacity(self.blocks.len());
        for (block, state) in self.blocks.iter().enumerate() {
            match &*state.lock().unwrap_or_else(|e| e.into_inner()) {
                BlockState::Written(cv) => cvs.push(*cv),
                BlockState::Filling { filled, .. } | BlockState::Spilled { filled } => {
                    return Err(self.misuse(format!(
                        "{} bytes of block {block} never written",
                        self.block_len(block) - filled
                    )));
                }
                BlockState::Empty | BlockState::Flushing => {
                    return Err(self.misuse(format!("block {block} never written")));
                }
            }
        }
        self.sink
            .buffered
            .set_len(self.len)
            .map_err(io_err(&self.sink.path))?;
        let root = if cvs.len() == 1 {
            cvs[0]
        } else {
            let left = left_subtree_len(self.len);
            *merge_subtrees_root(
                &subtree(&cvs, 0, left),
                &subtree(&cvs, left, self.len - left),
                Mode::Hash,
            )
            .as_bytes()
        };
        Ok((
            blake3::Hash::from_bytes(root).to_hex().to_string(),
            self.len,
        ))
    }
}

/// The chaining value of the subtree over `len` bytes at `start` (a multiple of `BLOCK`), from
/// the blocks' chaining values, split the way blake3 splits.
fn subtree(cvs: &[ChainingValue], start: u64, len: u64) -> ChainingValue {
    if len <= BLOCK as u64 {
        return cvs[(start / BLOCK as u64) as usize];
    }
    let left = left_subtree_len(len);
    merge_subtrees_non_root(
        &subtree(cvs, start, left),
        &subtree(cvs, start + left, len - left),
        Mode::Hash,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Write `data` through a `ShardFile` in the given piece order; return its digest and the
    /// file's bytes.
    fn write_pieces(
        pool: &BlockPool,
        data: &[u8],
        cuts: &[usize],
        order: &[usize],
    ) -> (String, u64, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.safetensors");
        let file = ShardFile::open(&path, data.len() as u64).unwrap();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.extend([0, data.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let mut idx: Vec<usize> = (0..pieces.len()).collect();
        idx.sort_by_key(|&i| order.get(i).copied().unwrap_or(i));
        for i in idx {
            let (a, b) = pieces[i];
            file.write_at(pool, a as u64, &data[a..b]).unwrap();
        }
        let (digest, len) = file.finish().unwrap();
        (digest, len, std::fs::read(&path).unwrap())
    }

    #[test]
    fn digest_is_blake3_of_the_file_at_block_edges() {
        for len in [
            1,
            1023,
            1024,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 17,
            5 * BLOCK - 4096,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            // Blocks written by the thread that completes them, and by a writer thread.
            for pool in [BlockPool::default(), BlockPool::with_writer_thread()] {
                let (digest, n, bytes) =
                    write_pieces(&pool, &data, &[len / 3, len / 2 + 5], &[2, 0, 1]);
                assert_eq!(bytes, data, "len {len}");
                assert_eq!(n, len as u64);
                assert_eq!(
                    digest,
                    blake3::hash(&data).to_hex().to_string(),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn a_file_with_bytes_never_written_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let pool = BlockPool::default();
        let file = ShardFile::open(&path, (2 * BLOCK + 100) as u64).unwrap();
        file.write_at(&pool, 0, &vec![1; BLOCK + 10]).unwrap();
        let err = file.finish().unwrap_err().to_string();
        assert!(err.contains("never written"), "{err}");
    }

    #[test]
    fn writes_past_the_end_or_twice_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let pool = BlockPool::default();
        let file = ShardFile::open(&path, 10).unwrap();
        assert!(file.write_at(&pool, 8, b"abc").is_err());
        file.write_at(&pool, 0, b"0123456789").unwrap();
        let err = file.write_at(&pool, 0, b"x").unwrap_err().to_string();
        assert!(err.contains("after it completed"), "{err}");
    }

    #[test]
    fn blocks_past_the_filling_limit_go_through_the_page_cache_and_hash_alike() {
        let len = 6 * BLOCK + 777;
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        for max_filling in [0, 1, 2] {
            let pool = BlockPool::with_writer_thread().with_max_filling(max_filling);
            // Every block is opened before any completes.
            let cuts: Vec<usize> = (0..7).map(|b| b * BLOCK + 100).collect();
            let (digest, _, bytes) = write_pieces(&pool, &data, &cuts, &[1, 3, 5, 7, 0, 2, 4, 6]);
            assert!(bytes == data, "max_filling {max_filling}");
            assert_eq!(digest, blake3::hash(&data).to_hex().to_string());
            assert_eq!(pool.filling.load(Ordering::Acquire), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_order_of_pieces_gives_the_file_and_its_blake3(
            len in 1usize..(4 * BLOCK + 3000),
            cuts in proptest::collection::vec(0usize..(4 * BLOCK + 3000), 0..12),
            order in proptest::collection::vec(0usize..100, 0..13),
            seed in any::<u8>(),
            max_filling in 0usize..6,
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let pool = BlockPool::with_writer_thread().with_max_filling(max_filling);
            let (digest, _, bytes) = write_pieces(&pool, &data, &cuts, &order);
            prop_assert!(bytes == data);
            prop_assert_eq!(digest, blake3::hash(&data).to_hex().to_string());
        }
    }
}
