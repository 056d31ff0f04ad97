//! How long `status` takes over a stage with 10 000 unchanged input files (the cheap check: one
//! `stat` per file against the stat cache), compared with the first run and with `--verify`.
//!
//! Run: `cargo test -p pipeline --bench status` (dev profile) or `cargo bench -p pipeline`.

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use pipeline::{HashPolicy, Pipeline, RunOptions, Stage, StageReport};

const FILES: usize = 10_000;
const FILE_BYTES: usize = 4096;
const REPEATS: usize = 5;

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let images = dir.path().join("images");
    fs::create_dir(&images).expect("images dir");
    let long_ago = SystemTime::now() - Duration::from_secs(86_400);
    let inputs: Vec<_> = (0..FILES)
        .map(|i| {
            let path = images.join(format!("{i:05}.jpg"));
            let bytes: Vec<u8> = (0..FILE_BYTES).map(|k| (k * 7 + i) as u8).collect();
            fs::write(&path, bytes).expect("write input");
            // Source images are old files; fresh ones are re-hashed until they settle.
            let file = fs::File::options().write(true).open(&path).expect("open");
            file.set_modified(long_ago).expect("set mtime");
            path
        })
        .collect();
    let mut pipeline = Pipeline::new(dir.path().join("out")).with(
        Stage::new("ingest", "1", |ctx| {
            manifests::write_atomic(&ctx.outputs()[0], b"table")?;
            Ok(StageReport::new().rows("faces", ctx.inputs().len() as u64))
        })
        .inputs(&inputs)
        .output("faces.parquet"),
    );

    let started = Instant::now();
    pipeline
        .run(&RunOptions::default(), &|_| {})
        .expect("first run");
    let first_run = started.elapsed();

    let time_status = |policy| {
        let mut times: Vec<Duration> = (0..REPEATS)
            .map(|_| {
                let started = Instant::now();
                let status = pipeline.status(policy).expect("status");
                assert!(status.all_fresh(), "{status}");
                started.elapsed()
            })
            .collect();
        times.sort();
        times[REPEATS / 2]
    };
    let cheap = time_status(HashPolicy::TrustStat);
    let verify = time_status(HashPolicy::Rehash);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{FILES} inputs of {FILE_BYTES} B, {} threads available",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("first run (hash all + record):   {:8.1} ms", ms(first_run));
    println!("status, cheap check (median):    {:8.1} ms", ms(cheap));
    println!("status --verify (median):        {:8.1} ms", ms(verify));
}
