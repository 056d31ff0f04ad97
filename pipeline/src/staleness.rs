//! Why a stage is stale: the reasons, and the comparisons that produce them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use manifests::{InputRecord, OutputRecord, PathDigest};
use serde_json::Value;

/// Longest rendering of a parameter value in a reason before it is elided.
const MAX_VALUE_CHARS: usize = 60;

/// How an input differs from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputChange {
    /// Same path, different content.
    Content,
    /// Declared now, not recorded.
    Added,
    /// Recorded, no longer declared.
    Removed,
    /// Declared but absent on disk.
    Missing,
}

/// How an output differs from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChange {
    /// Recorded but absent on disk.
    Missing,
    /// Present but its content differs from the record.
    Modified {
        /// Recorded size in bytes.
        old_size: u64,
        /// Current size in bytes.
        new_size: u64,
    },
    /// Declared now, not recorded.
    Added,
    /// Recorded, no longer declared.
    Removed,
}

/// One reason a stage must run. A fresh stage has none.
#[derive(Debug, Clone, PartialEq)]
pub enum StaleReason {
    /// No manifest records the stage.
    NeverRun,
    /// The caller forced the stage to run.
    Forced,
    /// The stage's code version differs from the recorded one.
    CodeVersionChanged {
        /// Recorded version.
        old: String,
        /// Declared version.
        new: String,
    },
    /// A parameter changed, was added or was removed.
    ParamChanged {
        /// JSON path of the parameter, e.g. `params.bins` or `params.sizes[1]`.
        path: String,
        /// Recorded value (`None`: the parameter is new).
        old: Option<Value>,
        /// Declared value (`None`: the parameter was removed).
        new: Option<Value>,
    },
    /// An input changed.
    InputChanged {
        /// The input's recorded key (relative to the output root when inside it).
        path: String,
        /// How it changed.
        change: InputChange,
        /// The stage that writes this input, if any.
        producer: Option<String>,
    },
    /// An output no longer matches the record.
    OutputChanged {
        /// The output's recorded key.
        path: String,
        /// How it changed.
        change: OutputChange,
    },
    /// An upstream stage is stale, so this stage may see new inputs once it runs.
    UpstreamStale {
        /// The upstream stage.
        stage: String,
    },
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StaleReason::NeverRun => write!(f, "never run"),
            StaleReason::Forced => write!(f, "forced"),
            StaleReason::CodeVersionChanged { old, new } => {
                write!(f, "code version changed: {old} → {new}")
            }
            StaleReason::ParamChanged { path, old, new } => match (old, new) {
                (Some(old), Some(new)) => {
                    write!(f, "{path}: {} → {}", short_json(old), short_json(new))
                }
                (None, Some(new)) => write!(f, "{path}: added ({})", short_json(new)),
                (Some(old), None) => write!(f, "{path}: removed (was {})", short_json(old)),
                (None, None) => write!(f, "{path}: changed"),
            },
            StaleReason::InputChanged {
                path,
                change,
                producer,
            } => {
                let what = match change {
                    InputChange::Content => "content changed",
                    InputChange::Added => "added",
                    InputChange::Removed => "removed",
                    InputChange::Missing => "missing",
                };
                write!(f, "input {path}: {what}")?;
                match producer {
                    Some(stage) => write!(f, " (written by `{stage}`)"),
                    None => Ok(()),
                }
            }
            StaleReason::OutputChanged { path, change } => match change {
                OutputChange::Missing => write!(f, "output {path}: missing"),
                OutputChange::Modified { old_size, new_size } if old_size == new_size => {
                    write!(f, "output {path}: modified (same size, different content)")
                }
                OutputChange::Modified { old_size, new_size } => {
                    write!(
                        f,
                        "output {path}: modified (size {old_size} → {new_size} bytes)"
                    )
                }
                OutputChange::Added => write!(f, "output {path}: newly declared"),
                OutputChange::Removed => write!(f, "output {path}: no longer declared"),
            },
            StaleReason::UpstreamStale { stage } => write!(f, "upstream stage `{stage}` is stale"),
        }
    }
}

/// Compact JSON of a value, elided in the middle of long values.
fn short_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_VALUE_CHARS {
        return text;
    }
    let head: String = text.chars().take(MAX_VALUE_CHARS - 1).collect();
    format!("{head}…")
}

/// Appends a [`StaleReason::ParamChanged`] for every leaf where `old` and `new` differ, named by
/// its JSON path below `path`.
///
/// Objects are compared key by key and equal-length arrays element by element; anything else
/// that differs is reported whole.
pub(crate) fn diff_params(old: &Value, new: &Value, path: &str, out: &mut Vec<StaleReason>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_params(x, y, &child, out),
                    (x, y) => out.push(StaleReason::ParamChanged {
                        path: child,
                        old: x.cloned(),
                        new: y.cloned(),
                    }),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_params(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ if old == new => {}
        _ => out.push(StaleReason::ParamChanged {
            path: path.to_owned(),
            old: Some(old.clone()),
            new: Some(new.clone()),
        }),
    }
}

/// Reasons from comparing current input digests (`None`: missing) with the recorded ones.
pub(crate) fn compare_inputs(
    recorded: &BTreeMap<String, InputRecord>,
    current: &BTreeMap<String, Option<PathDigest>>,
    producer: impl Fn(&str) -> Option<String>,
) -> Vec<StaleReason> {
    let mut reasons = Vec::new();
    let mut push = |path: &str, change: InputChange| {
        reasons.push(StaleReason::InputChanged {
            path: path.to_owned(),
            change,
            producer: producer(path),
        })
    };
    for (path, digest) in current {
        match (recorded.get(path), digest) {
            (_, None) => push(path, InputChange::Missing),
            (None, Some(_)) => push(path, InputChange::Added),
            (Some(old), Some(new)) if old.digest != new.digest => push(path, InputChange::Content),
            (Some(_), Some(_)) => {}
        }
    }
    for path in recorded.keys().filter(|p| !current.contains_key(*p)) {
        push(path, InputChange::Removed);
    }
    reasons
}

/// Reasons from comparing current output digests (`None`: missing) with the recorded ones.
pub(crate) fn compare_outputs(
    recorded: &BTreeMap<String, OutputRecord>,
    current: &BTreeMap<String, Option<PathDigest>>,
) -> Vec<StaleReason> {
    let mut reasons = Vec::new();
    let mut push = |path: &str, change: OutputChange| {
        reasons.push(StaleReason::OutputChanged {
            path: path.to_owned(),
            change,
        })
    };
    for (path, digest) in current {
        match (recorded.get(path), digest) {
            (None, _) => push(path, OutputChange::Added),
            (Some(_), None) => push(path, OutputChange::Missing),
            (Some(old), Some(new)) if old.digest != new.digest => push(
                path,
                OutputChange::Modified {
                    old_size: old.size,
                    new_size: new.size,
                },
            ),
            (Some(_), Some(_)) => {}
        }
    }
    for path in recorded.keys().filter(|p| !current.contains_key(*p)) {
        push(path, OutputChange::Removed);
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(old: Value, new: Value) -> Vec<String> {
        let mut out = Vec::new();
        diff_params(&old, &new, "params", &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn param_diff_names_each_changed_leaf() {
        assert_eq!(
            diff(
                json!({"bins": 9, "render": {"sizes": [64, 128], "jitter": 0.1}, "seed": 1}),
                json!({"bins": 12, "render": {"sizes": [64, 96], "jitter": 0.1}, "flip": true})
            ),
            vec![
                "params.bins: 9 → 12",
                "params.flip: added (true)",
                "params.render.sizes[1]: 128 → 96",
                "params.seed: removed (was 1)",
            ]
        );
        assert!(
            diff(
                json!({"a": [1, {"b": null}]}),
                json!({"a": [1, {"b": null}]})
            )
            .is_empty()
        );
        assert_eq!(
            diff(json!({"a": [1]}), json!({"a": [1, 2]})),
            vec!["params.a: [1] → [1,2]"]
        );
    }

    #[test]
    fn long_values_are_elided() {
        let long = Value::String("x".repeat(200));
        let text = diff(json!({"s": "a"}), json!({ "s": long })).remove(0);
        assert!(text.ends_with('…') && text.chars().count() < 100, "{text}");
    }
}
