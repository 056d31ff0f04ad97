//! Progress display for pipeline runs: one bar per running stage (hidden when stderr is not a
//! terminal) and a line per stage event, so logs of batch jobs still say what happened.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pipeline::Event;

/// Draws pipeline events; pass [`RunProgress::on_event`] to `Pipeline::run`.
pub struct RunProgress {
    bar: Mutex<Option<ProgressBar>>,
}

/// The bar style shared by every long-running command.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>10} [{bar:40.cyan/blue}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// A progress bar of `total` units labelled `prefix`.
pub fn bar(prefix: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(bar_style());
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

impl RunProgress {
    /// A display with no bar yet.
    pub fn new() -> RunProgress {
        RunProgress {
            bar: Mutex::new(None),
        }
    }

    /// Handle one pipeline event.
    pub fn on_event(&self, event: &Event<'_>) {
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::TempFilesRemoved { paths } => {
                eprintln!(
                    "removed {} temporary file(s) left by an interrupted run",
                    paths.len()
                );
            }
            Event::Checking { .. } | Event::Skipped { .. } => {}
            Event::Fresh { stage } => eprintln!("{stage:>10}  fresh"),
            Event::Started { stage, reasons } => {
                let why = reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>();
                eprintln!("{stage:>10}  running: {}", why.join("; "));
            }
            Event::Progress { stage, done, total } => {
                let bar = slot.get_or_insert_with(|| bar(stage, *total));
                bar.set_length(*total);
                bar.set_position(*done);
            }
            Event::Finished {
                stage,
                duration,
                rows,
            } => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
                let counts = rows
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                eprintln!(
                    "{stage:>10}  done in {:.2}s  {counts}",
                    duration.as_secs_f64()
                );
            }
            Event::Failed { stage, error } => {
                if let Some(bar) = slot.take() {
                    bar.abandon();
                }
                eprintln!("{stage:>10}  FAILED: {error}");
            }
        }
    }
}
