//! The stage graph: path resolution, dependency edges, validation, topological order.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::stage::Stage;
use crate::{Error, Result};

/// A stage's paths, resolved against the output root.
#[derive(Debug)]
pub(crate) struct StagePaths {
    /// Declared inputs.
    pub inputs: Vec<PathBuf>,
    /// Outputs of `after` upstreams none of whose outputs is a declared input: fingerprinted as
    /// inputs so a change there still reaches this stage.
    pub implied_inputs: Vec<PathBuf>,
    /// Declared outputs.
    pub outputs: Vec<PathBuf>,
}

/// A validated pipeline: resolved paths, edges and an execution order.
#[derive(Debug)]
pub(crate) struct Plan {
    pub root: PathBuf,
    pub paths: Vec<StagePaths>,
    /// Direct upstream stages of each stage (declared with `after` or implied by inputs), sorted.
    pub upstream: Vec<Vec<usize>>,
    /// Stage indices in execution order: every stage after its upstreams, otherwise in
    /// declaration order.
    pub order: Vec<usize>,
}

/// Lexically normalised `root/path` (`.` dropped), so `./a` and `a` name the same file.
pub(crate) fn resolve(root: &Path, path: &Path) -> PathBuf {
    root.join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl Plan {
    /// Validates the stages and computes edges and order.
    pub fn new(stages: &[Stage<'_>], root: &Path) -> Result<Plan> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, stage) in stages.iter().enumerate() {
            if index.insert(stage.name.as_str(), i).is_some() {
                return Err(Error::DuplicateStage(stage.name.clone()));
            }
        }
        let resolve_all = |paths: &[PathBuf]| -> Vec<PathBuf> {
            paths.iter().map(|p| resolve(root, p)).collect()
        };
        let mut paths: Vec<StagePaths> = stages
            .iter()
            .map(|s| StagePaths {
                inputs: resolve_all(&s.inputs),
                implied_inputs: Vec::new(),
                outputs: resolve_all(&s.outputs),
            })
            .collect();
        check_output_conflicts(stages, &paths)?;

        let mut upstream: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
        let mut implied: Vec<Vec<PathBuf>> = vec![Vec::new(); stages.len()];
        for (j, stage) in stages.iter().enumerate() {
            let mut fed_by = Vec::new();
            for input in &paths[j].inputs {
                match producer(&paths, input) {
                    Some(k) if k == j => {
                        return Err(Error::ReadsOwnOutput {
                            stage: stage.name.clone(),
                            path: input.clone(),
                        });
                    }
                    Some(k) => fed_by.push(k),
                    None => {}
                }
            }
            for name in &stage.after {
                let Some(&k) = index.get(name.as_str()) else {
                    return Err(Error::UnknownUpstream {
                        stage: stage.name.clone(),
                        upstream: name.clone(),
                    });
                };
                if k == j {
                    return Err(Error::Cycle {
                        stages: vec![name.clone(), name.clone()],
                    });
                }
                if !fed_by.contains(&k) {
                    implied[j].extend(paths[k].outputs.iter().cloned());
                }
                upstream[j].push(k);
            }
            upstream[j].extend(fed_by);
            upstream[j].sort_unstable();
            upstream[j].dedup();
        }
        for (p, implied) in paths.iter_mut().zip(implied) {
            p.implied_inputs = implied;
        }
        let order = topological_order(stages, &upstream)?;
        Ok(Plan {
            root: root.to_path_buf(),
            paths,
            upstream,
            order,
        })
    }

    /// The stage whose declared output is `path` or contains it.
    pub fn producer(&self, path: &Path) -> Option<usize> {
        producer(&self.paths, path)
    }

    /// `target` and every stage it transitively depends on.
    pub fn with_ancestors(&self, target: usize) -> Vec<bool> {
        let mut selected = vec![false; self.paths.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !std::mem::replace(&mut selected[i], true) {
                todo.extend(&self.upstream[i]);
            }
        }
        selected
    }

    /// The key a resolved path is recorded under: relative to the root (with `/`) when inside
    /// it, so the record survives moving the output root; absolute otherwise.
    pub fn key(&self, path: &Path) -> String {
        match path.strip_prefix(&self.root) {
            Ok(relative) => relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            Err(_) => path.to_string_lossy().into_owned(),
        }
    }
}

fn producer(paths: &[StagePaths], path: &Path) -> Option<usize> {
    paths
        .iter()
        .position(|p| p.outputs.iter().any(|o| path.starts_with(o)))
}

fn check_output_conflicts(stages: &[Stage<'_>], paths: &[StagePaths]) -> Result<()> {
    for (i, a) in paths.iter().enumerate() {
        for (j, b) in paths.iter().enumerate().skip(i + 1) {
            for x in &a.outputs {
                for y in &b.outputs {
                    if x.starts_with(y) || y.starts_with(x) {
                        return Err(Error::OutputConflict {
                            path: if x.starts_with(y) {
                                x.clone()
                            } else {
                                y.clone()
                            },
                            first: stages[i].name.clone(),
                            second: stages[j].name.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Kahn's algorithm, always taking the lowest-index ready stage, so the order is deterministic
/// and follows declaration order where the graph allows.
fn topological_order(stages: &[Stage<'_>], upstream: &[Vec<usize>]) -> Result<Vec<usize>> {
    let n = stages.len();
    let mut pending: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (j, ups) in upstream.iter().enumerate() {
        for &k in ups {
            downstream[k].push(j);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &downstream[i] {
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every unordered stage has an unordered upstream, so walking upstream edges among them
    // must revisit a stage: that loop is the cycle to report.
    let mut on_path: Vec<usize> = Vec::new();
    let mut current = (0..n)
        .find(|&i| pending[i] > 0)
        .expect("some stage is unordered");
    while !on_path.contains(&current) {
        on_path.push(current);
        current = *upstream[current]
            .iter()
            .find(|&&k| pending[k] > 0)
            .expect("an unordered stage has an unordered upstream");
    }
    let start = on_path.iter().position(|&i| i == current).unwrap_or(0);
    // Walking upstream gives the cycle backwards: report it in execution direction, starting at
    // its first-declared stage so the message does not depend on where the walk began.
    let mut members: Vec<usize> = on_path[start..].iter().rev().copied().collect();
    let first = (0..members.len()).min_by_key(|&k| members[k]).unwrap_or(0);
    members.rotate_left(first);
    members.push(members[0]);
    let cycle = members.iter().map(|&i| stages[i].name.clone()).collect();
    Err(Error::Cycle { stages: cycle })
}
