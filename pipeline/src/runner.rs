//! Executing a pipeline (`run`) and inspecting it (`status`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use manifests::{
    HashPolicy, InputRecord, OutputRecord, PathDigest, Record, RunLock, STATE_DIR_NAME,
    StageManifest, StatCache, digest_value, remove_stale_temp_files,
};

use crate::graph::{Plan, resolve};
use crate::stage::{Stage, StageContext};
use crate::staleness::{StaleReason, compare_inputs, compare_outputs, diff_params};
use crate::{Error, Result};

/// Something that happened during a run, for progress displays and logs.
#[derive(Debug)]
pub enum Event<'e> {
    /// Stale temporary files of a killed run were removed before any stage ran.
    TempFilesRemoved {
        /// The removed files.
        paths: &'e [PathBuf],
    },
    /// The stage's fingerprint is being computed (inputs hashed where their stat changed).
    Checking {
        /// The stage.
        stage: &'e str,
    },
    /// The stage is fresh and will not run.
    Fresh {
        /// The stage.
        stage: &'e str,
    },
    /// The stage is not needed for the requested target (`until`).
    Skipped {
        /// The stage.
        stage: &'e str,
    },
    /// The stage starts running.
    Started {
        /// The stage.
        stage: &'e str,
        /// Why it runs.
        reasons: &'e [StaleReason],
    },
    /// The running stage reported progress.
    Progress {
        /// The stage.
        stage: &'e str,
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
    },
    /// The stage finished and its manifest is recorded.
    Finished {
        /// The stage.
        stage: &'e str,
        /// Wall time of the stage's closure.
        duration: Duration,
        /// Row counts it reported.
        rows: &'e BTreeMap<String, u64>,
    },
    /// The stage failed; the run stops and the stage's previous manifest is kept.
    Failed {
        /// The stage.
        stage: &'e str,
        /// The stage's error.
        error: &'e (dyn std::error::Error + Send + Sync + 'static),
    },
}

/// What [`Pipeline::run`] should do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run only this stage and the stages it depends on.
    pub until: Option<String>,
    /// Run these stages even if fresh.
    pub force: Vec<String>,
    /// [`HashPolicy::Rehash`] re-hashes every input and output instead of trusting unchanged
    /// stats (`--verify`).
    pub policy: HashPolicy,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            until: None,
            force: Vec::new(),
            policy: HashPolicy::TrustStat,
        }
    }
}

/// What happened to one stage in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Fresh: not run, its recorded outputs stand.
    Fresh,
    /// Ran, for these reasons.
    Ran {
        /// Why it ran.
        reasons: Vec<StaleReason>,
    },
    /// Not needed for the requested target.
    Skipped,
}

/// One row of a [`RunSummary`].
#[derive(Debug, Clone, PartialEq)]
pub struct StageOutcome {
    /// The stage.
    pub stage: String,
    /// Fresh, ran or skipped.
    pub outcome: Outcome,
    /// Row counts: reported now if it ran, recorded earlier if fresh, none if skipped.
    pub rows: BTreeMap<String, u64>,
    /// Wall time, if it ran.
    pub duration: Option<Duration>,
}

/// The result of a run, in execution order; `Display` renders it as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// One entry per stage.
    pub stages: Vec<StageOutcome>,
}

impl RunSummary {
    /// The outcome of a stage by name.
    pub fn get(&self, stage: &str) -> Option<&StageOutcome> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// Names of the stages that ran.
    pub fn ran(&self) -> Vec<&str> {
        self.stages
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Ran { .. }))
            .map(|s| s.stage.as_str())
            .collect()
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 4]> = self
            .stages
            .iter()
            .map(|s| {
                let result = match s.outcome {
                    Outcome::Fresh => "fresh",
                    Outcome::Ran { .. } => "ran",
                    Outcome::Skipped => "skipped",
                };
                let counts = s
                    .rows
                    .iter()
                    .map(|(name, n)| format!("{name}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let duration = s
                    .duration
                    .map_or_else(|| "-".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()));
                [s.stage.clone(), result.to_owned(), counts, duration]
            })
            .collect();
        write_table(f, ["stage", "result", "rows", "duration"], &rows)
    }
}

/// Whether one stage is fresh, and if not, why.
#[derive(Debug, Clone, PartialEq)]
pub struct StageStatus {
    /// The stage.
    pub stage: String,
    /// Why it is stale; empty when fresh.
    pub reasons: Vec<StaleReason>,
}

impl StageStatus {
    /// Whether the stage is fresh.
    pub fn is_fresh(&self) -> bool {
        self.reasons.is_empty()
    }
}

/// The result of [`Pipeline::status`], in execution order; `Display` lists each stale stage's
/// reasons.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    /// One entry per stage.
    pub stages: Vec<StageStatus>,
}

impl StatusReport {
    /// The status of a stage by name.
    pub fn get(&self, stage: &str) -> Option<&StageStatus> {
        self.stages.iter().find(|s| s.stage == stage)
    }

    /// Whether every stage is fresh.
    pub fn all_fresh(&self) -> bool {
        self.stages.iter().all(StageStatus::is_fresh)
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.stages.iter().map(|s| s.stage.len()).max().unwrap_or(0);
        for status in &self.stages {
            if status.is_fresh() {
                writeln!(f, "{:width$}  fresh", status.stage)?;
                continue;
            }
            for (i, reason) in status.reasons.iter().enumerate() {
                let (name, state) = if i == 0 {
                    (status.stage.as_str(), "stale")
                } else {
                    ("", "")
                };
                writeln!(f, "{name:width$}  {state:5}  {reason}")?;
            }
        }
        Ok(())
    }
}

fn write_table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    header: [&str; N],
    rows: &[[String; N]],
) -> fmt::Result {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

/// A stage's current fingerprint and how it compares with the record.
struct Check {
    reasons: Vec<StaleReason>,
    params_digest: manifests::Digest,
    /// (key, resolved path, digest or `None` when missing), declared then implied inputs.
    inputs: Vec<(String, PathBuf, Option<PathDigest>)>,
}

/// What the stages of one run share.
struct Session<'r> {
    plan: &'r Plan,
    record: Record,
    record_path: PathBuf,
    cache: StatCache,
    policy: HashPolicy,
    on_event: &'r (dyn Fn(&Event<'_>) + Sync),
}

/// A set of stages over one output root.
///
/// The pipeline holds no state besides its stages: everything it knows about past runs is read
/// from the output root (`wingflow.lock`, the stat cache) when `run` or `status` is called.
pub struct Pipeline<'a> {
    root: PathBuf,
    stages: Vec<Stage<'a>>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline writing under `root` (created by the first run).
    pub fn new(root: impl Into<PathBuf>) -> Pipeline<'a> {
        Pipeline {
            root: root.into(),
            stages: Vec::new(),
        }
    }

    /// Adds a stage. The graph is validated by `run` and `status` (unknown upstreams, cycles,
    /// duplicate names, overlapping outputs).
    pub fn add(&mut self, stage: Stage<'a>) -> &mut Self {
        self.stages.push(stage);
        self
    }

    /// Adds a stage, builder style.
    pub fn with(mut self, stage: Stage<'a>) -> Self {
        self.stages.push(stage);
        self
    }

    /// The output root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stage names in declaration order.
    pub fn stage_names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name.as_str()).collect()
    }

    /// Each stage's freshness and reasons, in execution order, without running anything or
    /// taking the run lock.
    ///
    /// Reading is safe during a concurrent run because the record is replaced atomically. The
    /// stat cache is saved afterwards on a best-effort basis: a read-only output root still
    /// gets its status, only without the saved hashing work.
    pub fn status(&self, policy: HashPolicy) -> Result<StatusReport> {
        let plan = self.plan()?;
        let record = Record::load(&Record::path_in(&plan.root))?;
        let cache = StatCache::for_root(&plan.root)?;
        let mut stale = vec![false; self.stages.len()];
        let mut stages = Vec::with_capacity(self.stages.len());
        for &i in &plan.order {
            let name = &self.stages[i].name;
            let mut reasons = match record.stage(name) {
                // Nothing to compare against, so no reason to hash the inputs.
                None => vec![StaleReason::NeverRun],
                Some(manifest) => {
                    self.check(&plan, i, Some(manifest), &cache, policy)?
                        .reasons
                }
            };
            for &k in &plan.upstream[i] {
                if stale[k] {
                    reasons.push(StaleReason::UpstreamStale {
                        stage: self.stages[k].name.clone(),
                    });
                }
            }
            stale[i] = !reasons.is_empty();
            stages.push(StageStatus {
                stage: name.clone(),
                reasons,
            });
        }
        let _ = cache.save();
        Ok(StatusReport { stages })
    }

    /// Runs the stale stages in topological order (all of them, or those `options.until` needs),
    /// recording each stage's manifest in `wingflow.lock` as soon as its outputs are complete.
    ///
    /// Holds the output root's run lock throughout; a concurrent run fails with
    /// "another wingflow run holds …". A failing stage stops the run with an error naming it;
    /// its previous manifest is kept, as are the manifests of the stages that ran before it.
    pub fn run(
        &mut self,
        options: &RunOptions,
        on_event: &(dyn Fn(&Event<'_>) + Sync),
    ) -> Result<RunSummary> {
        let plan = self.plan()?;
        let selected = match &options.until {
            Some(name) => plan.with_ancestors(self.index_of(name)?),
            None => vec![true; self.stages.len()],
        };
        let mut forced = vec![false; self.stages.len()];
        for name in &options.force {
            forced[self.index_of(name)?] = true;
        }
        let _lock = RunLock::acquire(&plan.root)?;
        let removed = remove_stale_temps(&plan, &selected)?;
        if !removed.is_empty() {
            on_event(&Event::TempFilesRemoved { paths: &removed });
        }
        let record_path = Record::path_in(&plan.root);
        let mut session = Session {
            plan: &plan,
            record: Record::load(&record_path)?,
            record_path,
            cache: StatCache::for_root(&plan.root)?,
            policy: options.policy,
            on_event,
        };

        let mut stages = Vec::with_capacity(self.stages.len());
        let mut result = Ok(());
        for &i in &plan.order {
            if !selected[i] {
                let stage = self.stages[i].name.clone();
                on_event(&Event::Skipped { stage: &stage });
                stages.push(StageOutcome {
                    stage,
                    outcome: Outcome::Skipped,
                    rows: BTreeMap::new(),
                    duration: None,
                });
                continue;
            }
            match self.run_stage(&mut session, i, forced[i]) {
                Ok(outcome) => stages.push(outcome),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Keep the hashing work even when a stage failed; the stage's error matters more than
        // a failure to save the cache.
        let saved = session.cache.save();
        result?;
        saved?;
        Ok(RunSummary { stages })
    }

    fn plan(&self) -> Result<Plan> {
        let root = std::path::absolute(&self.root).map_err(|source| Error::Root {
            root: self.root.clone(),
            source,
        })?;
        Plan::new(&self.stages, &root)
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::UnknownStage {
                name: name.to_owned(),
                known: self.stage_names().join(", "),
            })
    }

    /// Computes stage `i`'s fingerprint and compares it (and its outputs) with `manifest`.
    fn check(
        &self,
        plan: &Plan,
        i: usize,
        manifest: Option<&StageManifest>,
        cache: &StatCache,
        policy: HashPolicy,
    ) -> Result<Check> {
        let stage = &self.stages[i];
        let paths = &plan.paths[i];
        let stage_io = |source| Error::StageIo {
            stage: stage.name.clone(),
            source,
        };
        let params_digest = digest_value(&stage.params).map_err(stage_io)?;
        let input_paths: Vec<PathBuf> = paths
            .inputs
            .iter()
            .chain(&paths.implied_inputs)
            .cloned()
            .collect();
        let digests = cache.digest_paths(&input_paths, policy);
        let mut inputs = Vec::with_capacity(input_paths.len());
        for (path, digest) in input_paths.into_iter().zip(digests) {
            inputs.push((plan.key(&path), path, digest.map_err(stage_io)?));
        }
        let Some(manifest) = manifest else {
            return Ok(Check {
                reasons: vec![StaleReason::NeverRun],
                params_digest,
                inputs,
            });
        };

        let mut reasons = Vec::new();
        if manifest.code_version != stage.code_version {
            reasons.push(StaleReason::CodeVersionChanged {
                old: manifest.code_version.clone(),
                new: stage.code_version.clone(),
            });
        }
        if manifest.params_digest != params_digest {
            let before = reasons.len();
            diff_params(&manifest.params, &stage.params, "params", &mut reasons);
            if reasons.len() == before {
                // Equal as JSON values yet different digests: only possible if the recorded
                // params were edited by hand; report the whole value.
                reasons.push(StaleReason::ParamChanged {
                    path: "params".to_owned(),
                    old: Some(manifest.params.clone()),
                    new: Some(stage.params.clone()),
                });
            }
        }
        let current_inputs: BTreeMap<String, Option<PathDigest>> = inputs
            .iter()
            .map(|(key, _, digest)| (key.clone(), *digest))
            .collect();
        reasons.extend(compare_inputs(&manifest.inputs, &current_inputs, |key| {
            plan.producer(&resolve(&plan.root, Path::new(key)))
                .map(|k| self.stages[k].name.clone())
        }));
        let mut current_outputs = BTreeMap::new();
        for (path, digest) in paths
            .outputs
            .iter()
            .zip(cache.digest_paths(&paths.outputs, policy))
        {
            current_outputs.insert(plan.key(path), digest.map_err(stage_io)?);
        }
        reasons.extend(compare_outputs(&manifest.outputs, &current_outputs));
        Ok(Check {
            reasons,
            params_digest,
            inputs,
        })
    }

    /// Checks stage `i` and runs it if stale (or forced), recording its manifest on success.
    fn run_stage(
        &mut self,
        session: &mut Session<'_>,
        i: usize,
        forced: bool,
    ) -> Result<StageOutcome> {
        let Session {
            plan,
            record,
            record_path,
            cache,
            policy,
            on_event,
        } = session;
        let (plan, cache, policy, on_event) = (*plan, &*cache, *policy, *on_event);
        let name = self.stages[i].name.clone();
        on_event(&Event::Checking { stage: &name });
        let check = self.check(plan, i, record.stage(&name), cache, policy)?;
        let mut reasons = check.reasons;
        if forced {
            reasons.insert(0, StaleReason::Forced);
        }
        if reasons.is_empty() {
            on_event(&Event::Fresh { stage: &name });
            return Ok(StageOutcome {
                rows: record
                    .stage(&name)
                    .map(|m| m.rows.clone())
                    .unwrap_or_default(),
                stage: name,
                outcome: Outcome::Fresh,
                duration: None,
            });
        }
        if let Some((_, path, _)) = check.inputs.iter().find(|(_, _, d)| d.is_none()) {
            return Err(Error::InputMissing {
                stage: name,
                path: path.clone(),
            });
        }
        let paths = &plan.paths[i];
        for output in &paths.outputs {
            if let Some(parent) = output.parent() {
                fs::create_dir_all(parent).map_err(|source| Error::CreateDir {
                    stage: name.clone(),
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
        }

        on_event(&Event::Started {
            stage: &name,
            reasons: &reasons,
        });
        let Stage {
            code_version,
            params,
            run,
            ..
        } = &mut self.stages[i];
        let context = StageContext {
            name: &name,
            root: &plan.root,
            params,
            inputs: &paths.inputs,
            outputs: &paths.outputs,
            events: on_event,
        };
        let started = Instant::now();
        let result = run(&context);
        let duration = started.elapsed();
        let report = match result {
            Ok(report) => report,
            Err(source) => {
                on_event(&Event::Failed {
                    stage: &name,
                    error: source.as_ref(),
                });
                return Err(Error::StageFailed {
                    stage: name,
                    source,
                });
            }
        };

        for (path, digest) in &report.written {
            cache.note_written(path, *digest);
        }
        let mut outputs = BTreeMap::new();
        for (path, digest) in paths
            .outputs
            .iter()
            .zip(cache.digest_paths(&paths.outputs, HashPolicy::TrustStat))
        {
            let stage_io = |source| Error::StageIo {
                stage: name.clone(),
                source,
            };
            let Some(digest) = digest.map_err(stage_io)? else {
                return Err(Error::OutputNotWritten {
                    stage: name,
                    path: path.clone(),
                });
            };
            outputs.insert(
                plan.key(path),
                OutputRecord {
                    kind: digest.kind,
                    digest: digest.digest,
                    size: digest.size,
                    mtime_ns: digest.mtime_ns,
                },
            );
        }
        let inputs = check
            .inputs
            .into_iter()
            .filter_map(|(key, _, digest)| {
                digest.map(|d| {
                    (
                        key,
                        InputRecord {
                            digest: d.digest,
                            size: d.size,
                        },
                    )
                })
            })
            .collect();
        record.insert(StageManifest {
            stage: name.clone(),
            code_version: code_version.clone(),
            params_digest: check.params_digest,
            params: params.clone(),
            inputs,
            outputs,
            rows: report.rows.clone(),
            duration_s: duration.as_secs_f64(),
        });
        record.save(record_path).map_err(|source| Error::StageIo {
            stage: name.clone(),
            source,
        })?;
        on_event(&Event::Finished {
            stage: &name,
            duration,
            rows: &report.rows,
        });
        Ok(StageOutcome {
            stage: name,
            outcome: Outcome::Ran { reasons },
            rows: report.rows,
            duration: Some(duration),
        })
    }
}

impl fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("root", &self.root)
            .field("stages", &self.stages)
            .finish()
    }
}

/// Removes temporary files a killed run left where the selected stages write. Called under the
/// run lock, so no live writer owns them.
fn remove_stale_temps(plan: &Plan, selected: &[bool]) -> Result<Vec<PathBuf>> {
    let mut dirs: BTreeSet<(PathBuf, bool)> = BTreeSet::new();
    dirs.insert((plan.root.clone(), false));
    dirs.insert((plan.root.join(STATE_DIR_NAME), false));
    for (paths, _) in plan.paths.iter().zip(selected).filter(|(_, s)| **s) {
        for output in &paths.outputs {
            if let Some(parent) = output.parent() {
                dirs.insert((parent.to_path_buf(), false));
            }
            if output.is_dir() {
                dirs.insert((output.clone(), true));
            }
        }
    }
    let mut removed = Vec::new();
    for (dir, recursive) in dirs {
        removed.extend(remove_stale_temp_files(&dir, recursive)?);
    }
    Ok(removed)
}
