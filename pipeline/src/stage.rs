//! Stage declarations and what a running stage sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use manifests::Digest;
use serde_json::Value;

use crate::runner::Event;

/// The error type a stage's closure returns: anything, as long as it can cross threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stage's work: reads its inputs, writes its outputs (atomically), reports row counts.
pub(crate) type RunFn<'a> = Box<dyn FnMut(&StageContext<'_>) -> Result<StageReport, BoxError> + 'a>;

/// One node of the DAG.
///
/// Paths may be relative (to the pipeline's output root) or absolute. Inputs may be outputs of
/// other stages (this adds the dependency edge automatically) or external files such as source
/// images, possibly thousands of them; an input or output may be a directory tree.
pub struct Stage<'a> {
    pub(crate) name: String,
    pub(crate) code_version: String,
    pub(crate) params: Value,
    pub(crate) inputs: Vec<PathBuf>,
    pub(crate) outputs: Vec<PathBuf>,
    pub(crate) after: Vec<String>,
    pub(crate) run: RunFn<'a>,
}

impl<'a> Stage<'a> {
    /// A stage named `name` whose logic is at `code_version` (bump it whenever the code would
    /// write different outputs for the same inputs and parameters) and whose work is `run`.
    pub fn new(
        name: impl Into<String>,
        code_version: impl Into<String>,
        run: impl FnMut(&StageContext<'_>) -> Result<StageReport, BoxError> + 'a,
    ) -> Stage<'a> {
        Stage {
            name: name.into(),
            code_version: code_version.into(),
            params: Value::Null,
            inputs: Vec::new(),
            outputs: Vec::new(),
            after: Vec::new(),
            run: Box::new(run),
        }
    }

    /// Sets the parameters; a change in any of them makes the stage stale, reported by JSON path.
    pub fn params(mut self, params: Value) -> Self {
        self.params = params;
        self
    }

    /// Adds an input path.
    pub fn input(mut self, path: impl Into<PathBuf>) -> Self {
        self.inputs.push(path.into());
        self
    }

    /// Adds input paths.
    pub fn inputs(mut self, paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.inputs.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Adds an output path (a file, or a directory the stage fills).
    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.outputs.push(path.into());
        self
    }

    /// Adds output paths.
    pub fn outputs(mut self, paths: impl IntoIterator<Item = impl Into<PathBuf>>) -> Self {
        self.outputs.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Runs this stage after `upstream`.
    ///
    /// If none of this stage's inputs lies among `upstream`'s outputs, all of `upstream`'s outputs
    /// count as inputs of this stage, so a change there still makes it stale. Declare the precise
    /// inputs instead where only some of them matter.
    pub fn after(mut self, upstream: impl Into<String>) -> Self {
        self.after.push(upstream.into());
        self
    }

    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for Stage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name)
            .field("code_version", &self.code_version)
            .field("params", &self.params)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

/// What a stage's closure reports on success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageReport {
    /// Row counts by name (e.g. `faces`, `samples`), recorded in the manifest and shown in the
    /// summary.
    pub rows: BTreeMap<String, u64>,
    /// Output files with the blake3 the stage computed from the bytes it wrote (or had just
    /// read to check them): the runner does not read them back to digest the outputs (while
    /// their stat is unchanged).
    pub written: Vec<(PathBuf, Digest)>,
}

impl StageReport {
    /// An empty report.
    pub fn new() -> StageReport {
        StageReport::default()
    }

    /// Adds a row count.
    pub fn rows(mut self, name: impl Into<String>, count: u64) -> Self {
        self.rows.insert(name.into(), count);
        self
    }

    /// Records an output file's digest, computed by the stage from the bytes it wrote (or had
    /// just read to check them).
    pub fn written_file(mut self, path: impl Into<PathBuf>, digest: Digest) -> Self {
        self.written.push((path.into(), digest));
        self
    }
}

/// What a running stage sees: its parameters, its resolved paths and a progress channel.
///
/// It is `Sync`, so the stage may share it with worker threads (e.g. to report progress from a
/// rayon loop).
pub struct StageContext<'s> {
    pub(crate) name: &'s str,
    pub(crate) root: &'s Path,
    pub(crate) params: &'s Value,
    pub(crate) inputs: &'s [PathBuf],
    pub(crate) outputs: &'s [PathBuf],
    pub(crate) events: &'s (dyn Fn(&Event<'_>) + Sync),
}

impl StageContext<'_> {
    /// The stage's name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The pipeline's output root (absolute).
    pub fn root(&self) -> &Path {
        self.root
    }

    /// The stage's parameters, as declared.
    pub fn params(&self) -> &Value {
        self.params
    }

    /// The declared inputs, resolved against the output root, in declaration order.
    pub fn inputs(&self) -> &[PathBuf] {
        self.inputs
    }

    /// The declared outputs, resolved against the output root, in declaration order. Their parent
    /// directories exist when the stage starts.
    pub fn outputs(&self) -> &[PathBuf] {
        self.outputs
    }

    /// Reports progress (`done` of `total` units) to the pipeline's event callback.
    pub fn progress(&self, done: u64, total: u64) {
        (self.events)(&Event::Progress {
            stage: self.name,
            done,
            total,
        });
    }
}
