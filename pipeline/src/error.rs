//! The crate's error type.

use std::path::PathBuf;

use crate::stage::BoxError;

/// Errors of declaring and running a pipeline. Each names the stage (and path) concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing fingerprints, the record, the stat cache or the run lock failed.
    #[error(transparent)]
    Manifest(#[from] manifests::Error),
    /// Fingerprinting or recording one stage's files failed.
    #[error("stage `{stage}`: {source}")]
    StageIo {
        /// The stage.
        stage: String,
        /// What failed, with the file.
        #[source]
        source: manifests::Error,
    },
    /// The directory for a stage's output cannot be created.
    #[error("stage `{stage}`: cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The stage.
        stage: String,
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The output root cannot be resolved or created.
    #[error("cannot use output root {}: {source}", root.display())]
    Root {
        /// The output root as given.
        root: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Two stages share a name.
    #[error("two stages are named `{0}`")]
    DuplicateStage(String),
    /// A stage names an upstream stage that is not declared.
    #[error("stage `{stage}` runs after `{upstream}`, which is not a declared stage")]
    UnknownUpstream {
        /// The declaring stage.
        stage: String,
        /// The unknown name.
        upstream: String,
    },
    /// `until` or `force` names a stage that is not declared.
    #[error("no stage is named `{name}` (stages: {known})")]
    UnknownStage {
        /// The unknown name.
        name: String,
        /// The declared names, comma-separated.
        known: String,
    },
    /// The dependencies form a cycle.
    #[error("the stages form a cycle: {}", stages.join(" → "))]
    Cycle {
        /// The stages on the cycle, first repeated at the end.
        stages: Vec<String>,
    },
    /// Two stages declare the same output, or one's output lies inside the other's.
    #[error("stages `{first}` and `{second}` both write {}", path.display())]
    OutputConflict {
        /// The overlapping path.
        path: PathBuf,
        /// One stage.
        first: String,
        /// The other stage.
        second: String,
    },
    /// A stage declares one of its own outputs as an input.
    #[error("stage `{stage}` reads its own output {}", path.display())]
    ReadsOwnOutput {
        /// The stage.
        stage: String,
        /// The path.
        path: PathBuf,
    },
    /// An input of a stage about to run does not exist.
    #[error("stage `{stage}` cannot run: input {} does not exist", path.display())]
    InputMissing {
        /// The stage.
        stage: String,
        /// The missing input.
        path: PathBuf,
    },
    /// The stage's closure returned an error; its previous manifest (if any) is kept.
    #[error("stage `{stage}` failed: {source}")]
    StageFailed {
        /// The stage.
        stage: String,
        /// The stage's error.
        #[source]
        source: BoxError,
    },
    /// The stage returned success without writing one of its declared outputs.
    #[error("stage `{stage}` finished without writing its output {}", path.display())]
    OutputNotWritten {
        /// The stage.
        stage: String,
        /// The missing output.
        path: PathBuf,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
