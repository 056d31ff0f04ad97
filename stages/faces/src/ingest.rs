//! The ingest stage: read every configured source into one list of [`FaceRecord`]s (written
//! to `faces.parquet` by [`crate::faces_table`]), validate them, and report what was skipped.
//!
//! Sources come from `[[sources]]` tables of `wingflow.toml` ([`SourceConfig`]); the policy
//! for invalid records from the ingest section ([`IngestPolicy`]). Under `on_invalid = "fail"`
//! the first invalid record aborts with its message; under `"skip"` every invalid record is
//! left out and listed, with file, line/row and reason, in the [`IngestReport`]
//! (`ingest-report.json`). A source that cannot be read at all (missing file, bad CSV header,
//! not a database) is an error under both policies.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{BufRead as _, Read as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::face::FaceRecord;
use crate::formats::aflw::{self, AflwSqlite};
use crate::formats::coco::{self, CocoField, CocoJson, CocoVisibility};
use crate::formats::hrnet_csv::{self, HrnetCsv};
use crate::formats::wflw::{self, WflwList};
use crate::formats::{
    Entries, Origin, PixelOrigin, ReadError, SourcedFace, split_from_file_name, w300,
};
use crate::{MESSAGE_EXCERPT, escaped_path, excerpt};
use contract::scheme::{self, Scheme, UnknownScheme};

/// The kind of an annotation source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceKind {
    /// A 300W folder tree (`.pts` beside images); splits come from the folders.
    #[serde(rename = "300w")]
    W300,
    /// An HRNet-style CSV file (300W, AFLW, WFLW or COFW).
    #[serde(rename = "hrnet-csv")]
    HrnetCsv,
    /// A WFLW list file (`list_98pt_rect_attr_*.txt`).
    #[serde(rename = "wflw")]
    Wflw,
    /// The AFLW database `aflw.sqlite`.
    #[serde(rename = "aflw-sqlite")]
    AflwSqlite,
    /// A COCO-style keypoint JSON file (mmpose's face files, COCO-WholeBody).
    #[serde(rename = "coco")]
    Coco,
}

impl SourceKind {
    /// The dataset name a source of this kind always has (`None`: hrnet-csv and coco take
    /// `dataset`, defaulting to the scheme's).
    pub fn fixed_dataset(self) -> Option<&'static str> {
        match self {
            SourceKind::W300 => Some("300w"),
            SourceKind::Wflw => Some("wflw"),
            SourceKind::AflwSqlite => Some("aflw"),
            SourceKind::HrnetCsv | SourceKind::Coco => None,
        }
    }

    /// One line on what a source of this kind is (the comment `wingflow init` writes above it).
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::W300 => "300W tree: afw, helen, lfpw, ibug, Test; splits from the folders",
            SourceKind::HrnetCsv => {
                "HRNet-style CSV; `images` is the folder `image_name` is relative to"
            }
            SourceKind::Wflw => "WFLW list file; `images` is the WFLW_images folder",
            SourceKind::AflwSqlite => {
                "AFLW database; scheme aflw19 (no ears) or aflw21; `images` is flickr/"
            }
            SourceKind::Coco => {
                "COCO keypoint JSON; `images` is the folder `file_name` is relative to"
            }
        }
    }

    /// What the `path` of a source of this kind names, in words.
    pub fn path_kind(self) -> &'static str {
        match self {
            SourceKind::W300 => "300W folder",
            SourceKind::HrnetCsv => "HRNet CSV file",
            SourceKind::Wflw => "WFLW list file",
            SourceKind::AflwSqlite => "aflw.sqlite file",
            SourceKind::Coco => "COCO keypoint JSON file",
        }
    }

    /// The name used in `wingflow.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::W300 => "300w",
            SourceKind::HrnetCsv => "hrnet-csv",
            SourceKind::Wflw => "wflw",
            SourceKind::AflwSqlite => "aflw-sqlite",
            SourceKind::Coco => "coco",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[sources]]` table of `wingflow.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// What the source is.
    pub kind: SourceKind,
    /// The 300W root folder, the CSV file, the WFLW list file, the `aflw.sqlite` file or the
    /// COCO JSON file.
    pub path: PathBuf,
    /// Landmark scheme. Defaults: `ibug68` (300w, and coco with `field = "face"`), `wflw98`
    /// (wflw), `aflw19` (aflw-sqlite), and for hrnet-csv the scheme with the header's point
    /// count (68 → `ibug68`, 19 → `aflw19`, 21 → `aflw21`, 98 → `wflw98`, 29 → `cofw29`).
    /// Required for a coco `keypoints` file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Dataset name, first part of the sample ids (hrnet-csv and coco only; default from the
    /// scheme: `300w`, `aflw`, `wflw`, `cofw`). The other kinds always use `300w`, `wflw`,
    /// `aflw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Image root. Defaults: hrnet-csv — `images/` beside the CSV if it exists, else the CSV's
    /// folder; wflw — the first `WFLW_images/` found beside the list or above it, else the
    /// list's folder; aflw-sqlite — `flickr/` beside the database; coco — `images/` beside the
    /// JSON, else `images/` beside its folder (mmpose's `annotations/` layout), else the JSON's
    /// folder. Not used by 300w.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<PathBuf>,
    /// Split of every face (not for 300w, whose folders say the split). Default: `train`,
    /// `test` or `val` when the file name says so (`…_test.csv`), else `train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// coco only: which member holds the face, `keypoints` (default) or WholeBody's `face`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<CocoField>,
    /// coco only, required: the pixel rule of the file's values (`one-based`, `zero-based`,
    /// `continuous`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<PixelOrigin>,
    /// coco only, required: what the `v` flags mean (`coco` or `labelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<CocoVisibility>,
}

/// How to choose `origin` for a coco source (the problem text of a missing `origin`).
pub const ORIGIN_HELP: &str = "required for kind = \"coco\", no default: \"one-based\" (the .pts rule: \
    mmpose's 300W and 300W-LP files), \"zero-based\" (the COCO rule: COCO, COCO-WholeBody, \
    mmpose's AFLW, WFLW and COFW files) or \"continuous\" (wingflow's own); `wingflow init` \
    recognises mmpose's files and writes it";

/// How to choose `visibility` for a coco source (the problem text of a missing `visibility`).
pub const VISIBILITY_HELP: &str = "required for kind = \"coco\", no default: \"coco\" (2 visible, 1 \
    labelled but occluded: COFW, COCO) or \"labelled\" (every point with v > 0 labelled and not \
    occluded: mmpose's 300W, AFLW, WFLW files, 300W-LP); `wingflow init` recognises mmpose's \
    files and writes it";

impl SourceConfig {
    /// A source of `kind` at `path` with every other key left to its default.
    pub fn new(kind: SourceKind, path: PathBuf) -> Self {
        SourceConfig {
            kind,
            path,
            scheme: None,
            dataset: None,
            images: None,
            split: None,
            field: None,
            origin: None,
            visibility: None,
        }
    }

    /// The landmark scheme of this source (the `index`-th of the configuration): `scheme` when
    /// set, else the kind's default; hrnet-csv reads its header for the point count.
    pub fn scheme(&self, index: usize) -> Result<&'static Scheme, IngestError> {
        let scheme_name = match (&self.scheme, self.kind) {
            (Some(s), _) => s.clone(),
            (None, SourceKind::W300) => "ibug68".into(),
            (None, SourceKind::Wflw) => "wflw98".into(),
            (None, SourceKind::AflwSqlite) => "aflw19".into(),
            (None, SourceKind::Coco) if self.field == Some(CocoField::Face) => "ibug68".into(),
            (None, SourceKind::Coco) => {
                return Err(IngestError::Config {
                    index,
                    kind: self.kind,
                    path: self.path.clone(),
                    problem: COCO_SCHEME_HELP.into(),
                });
            }
            (None, SourceKind::HrnetCsv) => {
                let n = hrnet_csv::header_point_count(&self.path)?;
                scheme_for_point_count(n)
                    .ok_or_else(|| IngestError::Config {
                        index,
                        kind: self.kind,
                        path: self.path.clone(),
                        problem: format!("no scheme has {n} points; set `scheme`"),
                    })?
                    .into()
            }
        };
        scheme::by_name(&scheme_name).map_err(|source| IngestError::UnknownScheme { index, source })
    }

    /// What is wrong with the keys that only some kinds take, as (key, problem): a coco source
    /// without `origin` or `visibility` (or, for its `keypoints` field, `scheme`); `field`,
    /// `origin` or `visibility` on another kind. `wingflow.toml` is checked with this at load;
    /// ingest refuses the first problem.
    pub fn setting_problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.kind == SourceKind::Coco {
            if self.origin.is_none() {
                out.push(("origin", ORIGIN_HELP.to_owned()));
            }
            if self.visibility.is_none() {
                out.push(("visibility", VISIBILITY_HELP.to_owned()));
            }
            if self.scheme.is_none() && self.field != Some(CocoField::Face) {
                out.push(("scheme", COCO_SCHEME_HELP.to_owned()));
            }
        } else {
            for (key, set) in [
                ("field", self.field.is_some()),
                ("origin", self.origin.is_some()),
                ("visibility", self.visibility.is_some()),
            ] {
                if set {
                    out.push((key, "only kind = \"coco\" takes it; remove it".to_owned()));
                }
            }
        }
        if let (Some(fixed), Some(dataset)) = (self.kind.fixed_dataset(), &self.dataset)
            && dataset != fixed
        {
            out.push((
                "dataset",
                format!(
                    "`{}` (allowed: `{fixed}`, always, for this kind; or remove it)",
                    crate::excerpt(dataset, 200)
                ),
            ));
        }
        if self.kind == SourceKind::W300 {
            if self.split.is_some() {
                out.push((
                    "split",
                    "300w splits come from its folders; remove it".into(),
                ));
            }
            if self.images.is_some() {
                out.push((
                    "images",
                    "300w images lie beside the .pts files; remove it".into(),
                ));
            }
        }
        out
    }

    /// The same source with relative paths taken relative to `base` (the folder of
    /// `wingflow.toml`).
    pub fn resolved(&self, base: &Path) -> SourceConfig {
        SourceConfig {
            path: base.join(&self.path),
            images: self.images.as_ref().map(|p| base.join(p)),
            ..self.clone()
        }
    }
}

/// The problem text of a coco `keypoints` source without `scheme`.
const COCO_SCHEME_HELP: &str = "required for a kind = \"coco\" keypoints file (the point count \
    says it: ibug68 for 300W and 300W-LP, aflw19, wflw98, cofw29); `wingflow init` writes it";

/// What to do with a record that cannot be read or fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Abort the stage with the first invalid record's message.
    #[default]
    Fail,
    /// Leave the record out and list it in the report.
    Skip,
}

/// The ingest section of `wingflow.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestPolicy {
    /// What to do with invalid records.
    pub on_invalid: OnInvalid,
    /// A point lying farther outside the image than this fraction of the image's width
    /// (for x) or height (for y) makes the record invalid.
    pub max_outside_fraction: f32,
}

impl Default for IngestPolicy {
    fn default() -> Self {
        IngestPolicy {
            on_invalid: OnInvalid::Fail,
            max_outside_fraction: 0.5,
        }
    }
}

/// A record that was read but breaks the data model.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRecord {
    /// The annotation file.
    pub path: PathBuf,
    /// Where in it, in words (`line 12`, `face_id 3`, `whole file`).
    pub location: String,
    /// The record's sample id.
    pub sample_id: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for InvalidRecord {
    /// `file, location: sample id: problem`, bounded ([`excerpt`], [`escaped_path`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}: {}: {}",
            escaped_path(&self.path),
            self.location,
            excerpt(&self.sample_id, MESSAGE_EXCERPT),
            excerpt(&self.problem, MESSAGE_EXCERPT)
        )
    }
}

/// Why the ingest stage failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No `[[sources]]` configured.
    #[error("no sources configured")]
    NoSources,
    /// A source's configuration is inconsistent.
    #[error("source {index} ({kind} {}): {problem}", escaped_path(path))]
    Config {
        /// 1-based position among the sources.
        index: usize,
        /// The source's kind.
        kind: SourceKind,
        /// The source's path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A scheme name is unknown.
    #[error("source {index}: {source}")]
    UnknownScheme {
        /// 1-based position among the sources.
        index: usize,
        /// The lookup error.
        source: UnknownScheme,
    },
    /// Two sources use different landmark schemes.
    #[error(
        "sources use different landmark schemes: `{first}` ({}) and `{second}` ({}); \
         one run ingests one scheme",
        escaped_path(first_path),
        escaped_path(second_path)
    )]
    MixedSchemes {
        /// The first source's scheme.
        first: String,
        /// Its path.
        first_path: PathBuf,
        /// The differing scheme.
        second: String,
        /// Its path.
        second_path: PathBuf,
    },
    /// A source or record could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A record breaks the data model (under `on_invalid = "fail"`).
    #[error("{0}")]
    Invalid(InvalidRecord),
    /// The report could not be written (the message names the file).
    #[error(transparent)]
    Report(#[from] manifests::Error),
    /// The report could not be serialised.
    #[error("the ingest report cannot be written as JSON: {0}")]
    ReportJson(#[source] serde_json::Error),
}

/// A record left out under `on_invalid = "skip"`. Its texts are bounded: the reason is the
/// error's message (which shows input only as excerpts), the sample id an [`excerpt`], and a
/// file name that is not UTF-8 is written with its bytes escaped ([`escaped_path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// The annotation file.
    #[serde(serialize_with = "serialize_escaped")]
    pub file: PathBuf,
    /// Where in it (`line 12`, `face_id 3`, `whole file`).
    pub location: String,
    /// The sample id, when the record got as far as having one.
    pub sample_id: Option<String>,
    /// Why it was skipped (the full message).
    pub reason: String,
}

/// A path as JSON text: exact when it is UTF-8, else with its other bytes escaped.
fn serialize_escaped<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&escaped_path(path))
}

impl SkippedRecord {
    fn invalid(r: &InvalidRecord) -> Self {
        SkippedRecord {
            file: r.path.clone(),
            location: r.location.clone(),
            sample_id: Some(excerpt(&r.sample_id, MESSAGE_EXCERPT)),
            reason: r.to_string(),
        }
    }

    fn unreadable(e: &ReadError) -> Self {
        SkippedRecord {
            file: e.path().into(),
            location: e.location(),
            sample_id: None,
            reason: e.to_string(),
        }
    }
}

/// What one source contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    /// The source's kind.
    pub kind: SourceKind,
    /// The source's path.
    #[serde(serialize_with = "serialize_escaped")]
    pub path: PathBuf,
    /// Its landmark scheme.
    pub scheme: String,
    /// Faces kept.
    pub faces: usize,
    /// Records skipped.
    pub skipped: usize,
    /// Annotations that hold no face (coco: WholeBody persons with `face_valid = false` or
    /// no labelled point), left out without being errors; written only when some were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub without_face: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The ingest report, written as `ingest-report.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestReport {
    /// The landmark scheme of every face.
    pub scheme: String,
    /// The policy the run used.
    pub on_invalid: OnInvalid,
    /// Faces kept, over all sources.
    pub faces: usize,
    /// Faces kept per split.
    pub splits: BTreeMap<String, usize>,
    /// Per source, in configuration order.
    pub sources: Vec<SourceSummary>,
    /// Every skipped record, in source and file order.
    pub skipped: Vec<SkippedRecord>,
}

impl IngestReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String, IngestError> {
        serde_json::to_string_pretty(self).map_err(IngestError::ReportJson)
    }

    /// Write the report as JSON to `path` atomically (temporary file + fsync + rename).
    pub fn write_json(&self, path: &Path) -> Result<(), IngestError> {
        let mut text = self.to_json()?;
        text.push('\n');
        Ok(manifests::write_atomic(path, text.as_bytes())?)
    }
}

/// The ingest stage's result.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestOutput {
    /// Every valid face, in source order and, within a source, in file order.
    pub faces: Vec<FaceRecord>,
    /// What was read and skipped.
    pub report: IngestReport,
}

/// A source with every default filled in.
struct Planned<'a> {
    config: &'a SourceConfig,
    scheme: &'static Scheme,
    dataset: String,
    images: PathBuf,
    split: String,
}

/// Read, validate and combine every source.
///
/// All sources must use one landmark scheme (several sources of that scheme combine).
/// Validation, after the readers' own checks: the point count matches the scheme, no value is
/// infinite, a point is NaN (in x and y) only when it is not visible, an occluded point is
/// visible (it keeps its coordinates), at least one point has
/// coordinates, no point lies more than `policy.max_outside_fraction` of the image size
/// outside the image, the box has a positive finite size, and no sample id occurs twice
/// (the second occurrence is the invalid one). Each source is read in parallel (rayon) over
/// its files or rows.
pub fn ingest(
    sources: &[SourceConfig],
    policy: &IngestPolicy,
) -> Result<IngestOutput, IngestError> {
    if sources.is_empty() {
        return Err(IngestError::NoSources);
    }
    let planned = sources
        .iter()
        .enumerate()
        .map(|(i, s)| plan(i + 1, s))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &planned[0];
    if let Some(other) = planned.iter().find(|p| p.scheme.name != first.scheme.name) {
        return Err(IngestError::MixedSchemes {
            first: first.scheme.name.to_owned(),
            first_path: first.config.path.clone(),
            second: other.scheme.name.to_owned(),
            second_path: other.config.path.clone(),
        });
    }
    let mut faces = Vec::new();
    let mut skipped = Vec::new();
    let mut summaries = Vec::new();
    let mut seen: HashMap<String, Origin> = HashMap::new();
    for p in &planned {
        let (kept_before, skipped_before) = (faces.len(), skipped.len());
        let (entries, without_face) = read_source(p)?;
        for entry in entries {
            let (skip, error) = match entry {
                Ok(sf) => match validate(&sf, p.scheme, policy, &seen) {
                    Ok(()) => {
                        seen.insert(sf.face.sample_id.clone(), sf.origin);
                        faces.push(sf.face);
                        continue;
                    }
                    Err(invalid) => (
                        SkippedRecord::invalid(&invalid),
                        IngestError::Invalid(invalid),
                    ),
                },
                Err(e) => (SkippedRecord::unreadable(&e), IngestError::Read(e)),
            };
            match policy.on_invalid {
                OnInvalid::Fail => return Err(error),
                OnInvalid::Skip => skipped.push(skip),
            }
        }
        summaries.push(SourceSummary {
            kind: p.config.kind,
            path: p.config.path.clone(),
            scheme: p.scheme.name.to_owned(),
            faces: faces.len() - kept_before,
            skipped: skipped.len() - skipped_before,
            without_face,
        });
    }
    let mut splits = BTreeMap::new();
    for f in &faces {
        *splits.entry(f.split.clone()).or_insert(0) += 1;
    }
    let report = IngestReport {
        scheme: first.scheme.name.to_owned(),
        on_invalid: policy.on_invalid,
        faces: faces.len(),
        splits,
        sources: summaries,
        skipped,
    };
    Ok(IngestOutput { faces, report })
}

/// Fill in a source's defaults and check its settings.
fn plan(index: usize, config: &SourceConfig) -> Result<Planned<'_>, IngestError> {
    let problem = |problem: String| IngestError::Config {
        index,
        kind: config.kind,
        path: config.path.clone(),
        problem,
    };
    if let Some((key, p)) = config.setting_problems().into_iter().next() {
        return Err(problem(format!("`{key}`: {p}")));
    }
    let scheme = config.scheme(index)?;
    let fixed_dataset = config.kind.fixed_dataset();
    // `setting_problems` refused a `dataset` other than the fixed one, and 300w's `split`
    // and `images`.
    let dataset = match (fixed_dataset, &config.dataset) {
        (Some(fixed), _) => fixed.to_owned(),
        (None, Some(d)) => d.clone(),
        (None, None) => dataset_for_scheme(scheme.name).to_owned(),
    };
    let split = config
        .split
        .clone()
        .or_else(|| split_from_file_name(&config.path).map(str::to_owned))
        .unwrap_or_else(|| "train".to_owned());
    let images = config
        .images
        .clone()
        .unwrap_or_else(|| default_images(config));
    Ok(Planned {
        config,
        scheme,
        dataset,
        images,
        split,
    })
}

/// The registered scheme with `n` points, for CSV files that do not say.
fn scheme_for_point_count(n: usize) -> Option<&'static str> {
    scheme::all()
        .iter()
        .find(|s| s.num_points() == n)
        .map(|s| s.name)
}

fn dataset_for_scheme(scheme: &str) -> &'static str {
    match scheme {
        "ibug68" => "300w",
        "aflw19" | "aflw21" => "aflw",
        "wflw98" => "wflw",
        "cofw29" => "cofw",
        _ => "faces",
    }
}

/// The files the ingest stage reads for `sources`, for the DAG's fingerprint: each annotation
/// file and every file below each 300W folder or image root (sorted, hidden files left out),
/// so that `wingflow status` can name the one file that was added, removed or edited.
///
/// The walk stays inside each root and cannot loop: a symbolic link to a file is listed, a
/// symbolic link to a folder below a root is never followed (not even one that stays inside
/// the root: its files are listed under their own path there; the roots themselves may be
/// links). A wingflow output folder (one holding `wingflow.lock` or the run lock) below a
/// root is left out whole, and a root that is itself one has its outputs left out, so an
/// output folder inside a source folder is no input of the stages that write it.
pub fn source_input_paths(sources: &[SourceConfig]) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for source in sources {
        match source.kind {
            SourceKind::W300 => {
                for (folder, _) in w300::FOLDERS {
                    roots.push(source.path.join(folder));
                }
                roots.push(source.path.join(w300::POSES_FILE));
            }
            SourceKind::HrnetCsv | SourceKind::Wflw | SourceKind::AflwSqlite | SourceKind::Coco => {
                roots.push(source.path.clone());
                roots.push(
                    source
                        .images
                        .clone()
                        .unwrap_or_else(|| default_images(source)),
                );
            }
        }
    }
    let mut files = Vec::new();
    for root in roots {
        collect_files(&root, &mut files);
    }
    files.sort();
    files.dedup();
    files
}

fn collect_files(root: &Path, files: &mut Vec<PathBuf>) {
    if root.is_file() {
        files.push(root.to_owned());
    } else {
        walk(root, true, files);
    }
}

/// List the files below `dir` (see [`source_input_paths`]); `root` when `dir` is a walk's root.
fn walk(dir: &Path, root: bool, files: &mut Vec<PathBuf>) {
    let output = is_output_root(dir);
    if output && !root {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let outputs = if output {
        output_entries(dir)
    } else {
        Vec::new()
    };
    for entry in entries.flatten() {
        // Hidden files are temporaries of interrupted writers or tool metadata.
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if outputs.contains(&path) {
            continue;
        }
        if kind.is_dir() {
            walk(&path, false, files);
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            files.push(path);
        }
    }
}

/// Whether `dir` is a wingflow output root: it holds a record or the run lock.
fn is_output_root(dir: &Path) -> bool {
    [manifests::RECORD_FILE_NAME, manifests::RUN_LOCK_FILE_NAME]
        .iter()
        .any(|name| dir.join(name).symlink_metadata().is_ok())
}

/// The entries of output root `dir` that wingflow writes (`contract::layout`, the record).
fn output_entries(dir: &Path) -> Vec<PathBuf> {
    let layout = contract::layout::Layout::new(dir);
    let mut entries = vec![
        dir.join(manifests::RECORD_FILE_NAME),
        layout.faces(),
        layout.ingest_report(),
        layout.plan(),
        layout.balance_summary(),
        layout.plots(),
        layout.shards(),
        layout.reports(),
    ];
    for file in [layout.aligned(), layout.model(1)] {
        entries.extend(file.parent().map(Path::to_owned));
    }
    entries
}

fn default_images(config: &SourceConfig) -> PathBuf {
    let folder = config.path.parent().unwrap_or(Path::new("")).to_path_buf();
    match config.kind {
        SourceKind::W300 => config.path.clone(),
        SourceKind::HrnetCsv => {
            let images = folder.join("images");
            if images.is_dir() { images } else { folder }
        }
        SourceKind::Wflw => config
            .path
            .ancestors()
            .skip(1)
            .map(|a| a.join("WFLW_images"))
            .find(|p| p.is_dir())
            .unwrap_or(folder),
        SourceKind::AflwSqlite => aflw::default_images(&config.path),
        SourceKind::Coco => {
            let images = [Some(folder.as_path()), folder.parent()]
                .into_iter()
                .flatten()
                .map(|f| f.join("images"))
                .find(|p| p.is_dir());
            images.unwrap_or(folder)
        }
    }
}

/// Read a coco source: its entries and the number of annotations that hold no face.
fn read_coco(p: &Planned<'_>) -> Result<(Entries, usize), ReadError> {
    let path = p.config.path.as_path();
    // `plan` refused a coco source without `origin` or `visibility`.
    let (Some(origin), Some(visibility)) = (p.config.origin, p.config.visibility) else {
        return Err(ReadError::Source {
            path: path.into(),
            problem: "a coco source needs `origin` and `visibility`".into(),
        });
    };
    let read = CocoJson {
        path,
        images: &p.images,
        dataset: &p.dataset,
        split: &p.split,
        scheme: p.scheme,
        field: p.config.field.unwrap_or_default(),
        origin,
        visibility,
    }
    .read()?;
    Ok((read.entries, read.without_face))
}

/// Read one source: its entries and the number of annotations that hold no face.
fn read_source(p: &Planned<'_>) -> Result<(Entries, usize), ReadError> {
    let path = p.config.path.as_path();
    let entries = match p.config.kind {
        SourceKind::W300 => w300::read_300w_tree(path, p.scheme),
        SourceKind::HrnetCsv => HrnetCsv {
            path,
            images: &p.images,
            dataset: &p.dataset,
            split: &p.split,
            scheme: p.scheme,
            pixel_origin: hrnet_csv::pixel_origin_for_scheme(p.scheme.name),
        }
        .read(),
        SourceKind::Wflw => {
            if p.scheme.num_points() != wflw::POINTS {
                return Err(ReadError::Source {
                    path: path.into(),
                    problem: format!(
                        "a WFLW list has 98 points, scheme `{}` has {}",
                        p.scheme.name,
                        p.scheme.num_points()
                    ),
                });
            }
            WflwList {
                path,
                images: &p.images,
                split: &p.split,
                scheme: p.scheme.name,
            }
            .read()
        }
        SourceKind::AflwSqlite => AflwSqlite {
            path,
            images: &p.images,
            split: &p.split,
            scheme: p.scheme,
        }
        .read(),
        SourceKind::Coco => return read_coco(p),
    }?;
    Ok((entries, 0))
}

/// Check one record against the data model and the ids read so far.
pub fn validate(
    sf: &SourcedFace,
    scheme: &Scheme,
    policy: &IngestPolicy,
    seen: &HashMap<String, Origin>,
) -> Result<(), InvalidRecord> {
    let f = &sf.face;
    let invalid = |point: Option<usize>, problem: String| InvalidRecord {
        path: sf.origin.path.clone(),
        location: sf.origin.location.describe(point),
        sample_id: f.sample_id.clone(),
        problem,
    };
    if let Some(first) = seen.get(&f.sample_id) {
        return Err(invalid(
            None,
            format!(
                "duplicate sample id (first read from {}, {})",
                escaped_path(&first.path),
                first.location
            ),
        ));
    }
    let n = scheme.num_points();
    if f.landmarks.len() != 2 * n || f.visible.len() != n || f.occluded.len() != n {
        return Err(invalid(
            None,
            format!(
                "{} coordinates, {} visibility and {} occlusion flags; scheme `{}` has {n} points",
                f.landmarks.len(),
                f.visible.len(),
                f.occluded.len(),
                scheme.name
            ),
        ));
    }
    if let Some(i) = (0..n).find(|&i| f.occluded[i] && !f.visible[i]) {
        return Err(invalid(
            Some(i),
            format!("point {i} is marked occluded but has no trusted coordinates"),
        ));
    }
    if f.image_width == 0 || f.image_height == 0 {
        return Err(invalid(
            None,
            format!("empty image {}×{}", f.image_width, f.image_height),
        ));
    }
    let (w, h) = (f.image_width as f32, f.image_height as f32);
    let margin = policy.max_outside_fraction;
    let mut any = false;
    for (i, (p, &visible)) in f.landmarks.chunks_exact(2).zip(&f.visible).enumerate() {
        let (x, y) = (p[0], p[1]);
        if x.is_nan() && y.is_nan() && !visible {
            continue;
        }
        if !(x.is_finite() && y.is_finite()) {
            let why = if visible {
                "a visible point"
            } else {
                "a point"
            };
            return Err(invalid(
                Some(i),
                format!("point {i} is ({x}, {y}): {why} must have finite coordinates"),
            ));
        }
        any = true;
        if x < -margin * w || x > (1.0 + margin) * w || y < -margin * h || y > (1.0 + margin) * h {
            return Err(invalid(
                Some(i),
                format!(
                    "point {i} at ({x}, {y}) lies more than {:.0} % of the image size outside the {}×{} image",
                    100.0 * margin,
                    f.image_width,
                    f.image_height
                ),
            ));
        }
    }
    if !any {
        return Err(invalid(None, "no point has coordinates".into()));
    }
    let b = f.bbox;
    if !(b.x.is_finite()
        && b.y.is_finite()
        && b.w.is_finite()
        && b.h.is_finite()
        && b.w > 0.0
        && b.h > 0.0)
    {
        return Err(invalid(
            None,
            format!(
                "box ({}, {}, {}, {}) has no positive finite size",
                b.x, b.y, b.w, b.h
            ),
        ));
    }
    Ok(())
}

/// What `wingflow init` found under a folder: the sources (in a stable order) and notes on
/// files it recognised but could not use.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Every source found.
    pub sources: Vec<SourceConfig>,
    /// Things worth telling the user (e.g. a CSV whose header is not HRNet's).
    pub notes: Vec<String>,
    /// Per source path: what was recognised and how to check the inferred settings (coco
    /// sources: origin, visibility, whether the box is a face box).
    pub advice: BTreeMap<PathBuf, String>,
}

/// Search `source_dir` (and up to three folder levels below it) for annotation sources: 300W
/// trees, HRNet CSV files, WFLW list files, `aflw.sqlite` databases and COCO keypoint JSON
/// files. Paths are as found from `source_dir`; defaults worth checking (scheme, image root,
/// split; for COCO files the inferred `field`, `origin` and `visibility`, see
/// [`coco::guess`]) are filled in.
pub fn discover_sources(source_dir: &Path) -> Discovery {
    let mut found = Discovery::default();
    scan(source_dir, 0, &mut found);
    found
}

/// Look for sources in `dir` and, up to depth 3, below it.
fn scan(dir: &Path, depth: usize, discovery: &mut Discovery) {
    let (found, notes) = (&mut discovery.sources, &mut discovery.notes);
    if w300::is_300w_tree(dir) {
        found.push(SourceConfig {
            scheme: Some("ibug68".into()),
            ..SourceConfig::new(SourceKind::W300, dir.into())
        });
        return;
    }
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            notes.push(format!("cannot list {}: {e}", dir.display()));
            return;
        }
    };
    entries.sort();
    let mut subdirs = Vec::new();
    for path in entries {
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            subdirs.push(path);
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let config = |kind, scheme: &str, images: PathBuf| SourceConfig {
            split: split_from_file_name(&path).map(str::to_owned),
            scheme: Some(scheme.to_owned()),
            images: Some(images),
            ..SourceConfig::new(kind, path.clone())
        };
        match ext.as_deref() {
            Some("sqlite" | "db") => found.push(SourceConfig {
                split: Some("train".into()),
                ..config(
                    SourceKind::AflwSqlite,
                    "aflw19",
                    aflw::default_images(&path),
                )
            }),
            // A CSV without an HRNet header (e.g. a poses sidecar) is not a source.
            Some("csv") => {
                if let Ok(n) = hrnet_csv::header_point_count(&path) {
                    match scheme_for_point_count(n) {
                        Some(scheme) => {
                            let c = config(SourceKind::HrnetCsv, scheme, PathBuf::new());
                            found.push(SourceConfig {
                                images: Some(default_images(&c)),
                                ..c
                            });
                        }
                        None => notes.push(format!(
                            "{} is an HRNet CSV with {n} points, which no scheme has",
                            path.display()
                        )),
                    }
                }
            }
            Some("txt") if first_line(&path).is_some_and(|l| wflw::looks_like_wflw_list(&l)) => {
                let c = config(SourceKind::Wflw, "wflw98", PathBuf::new());
                found.push(SourceConfig {
                    images: Some(default_images(&c)),
                    ..c
                });
            }
            Some("json") if first_bytes(&path).is_some_and(|t| coco::looks_like_coco(&t)) => {
                match coco::guess(&path) {
                    Ok(guess) => {
                        let c = SourceConfig {
                            field: Some(guess.field),
                            origin: Some(guess.origin),
                            visibility: Some(guess.visibility),
                            ..config(
                                SourceKind::Coco,
                                guess.scheme.unwrap_or("ibug68"),
                                PathBuf::new(),
                            )
                        };
                        if guess.scheme.is_none() {
                            notes.push(format!(
                                "{}: no scheme has its point count; check `scheme`",
                                path.display()
                            ));
                        }
                        discovery.advice.insert(path.clone(), guess.advice);
                        found.push(SourceConfig {
                            images: Some(default_images(&c)),
                            ..c
                        });
                    }
                    Err(why) => notes.push(format!(
                        "{} looks like COCO JSON but cannot be used: {why}",
                        path.display()
                    )),
                }
            }
            _ => {}
        }
    }
    if depth < 3 {
        for sub in subdirs {
            scan(&sub, depth + 1, discovery);
        }
    }
}

/// The first 64 KiB of a file as text (lossy), read without loading the whole file.
fn first_bytes(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(1 << 16)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The first line of a text file, read without loading the whole file.
fn first_line(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(file.take(1 << 16))
        .read_line(&mut line)
        .ok()?;
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faces_table::{read_faces_parquet, write_faces_parquet};
    use crate::formats::pts::write_pts;
    use crate::formats::test_support::write_png;
    use crate::formats::{Location, aflw};

    fn csv_header(points: usize) -> String {
        let mut h = String::from("image_name,scale,center_w,center_h");
        for k in 0..points {
            h.push_str(&format!(",original_{k}_x,original_{k}_y"));
        }
        h
    }

    /// A COFW-style CSV row for `image`: point k at (10 + k/4, 10 + k/8), box side 20.
    fn csv_row(image: &str) -> String {
        let mut r = format!("{image},0.1,15,15");
        for k in 0..29 {
            r.push_str(&format!(
                ",{},{}",
                10.0 + k as f32 / 4.0,
                10.0 + k as f32 / 8.0
            ));
        }
        r
    }

    fn csv_source(dir: &Path, name: &str, rows: &[String]) -> SourceConfig {
        write_png(&dir.join("images/a.png"), 40, 30);
        write_png(&dir.join("images/b.png"), 40, 30);
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n{}\n", csv_header(29), rows.join("\n"))).unwrap();
        SourceConfig::new(SourceKind::HrnetCsv, path)
    }

    fn skip() -> IngestPolicy {
        IngestPolicy {
            on_invalid: OnInvalid::Skip,
            ..Default::default()
        }
    }

    #[test]
    fn csv_sources_get_scheme_dataset_split_and_images_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let src = csv_source(
            dir.path(),
            "cofw_test.csv",
            &[csv_row("a.png"), csv_row("b.png")],
        );
        let out = ingest(&[src], &IngestPolicy::default()).unwrap();
        assert_eq!(out.faces.len(), 2);
        let f = &out.faces[0];
        assert_eq!(
            (
                f.sample_id.as_str(),
                f.dataset.as_str(),
                f.scheme.as_str(),
                f.split.as_str()
            ),
            ("cofw/a", "cofw", "cofw29", "test")
        );
        assert!(f.image_path.ends_with("images/a.png"));
        assert_eq!(out.report.splits, BTreeMap::from([("test".to_owned(), 2)]));
        assert_eq!(out.report.sources[0].faces, 2);
    }

    #[test]
    fn duplicate_sample_ids_name_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let a = csv_source(dir.path(), "a_train.csv", &[csv_row("a.png")]);
        let b = csv_source(
            dir.path(),
            "b_train.csv",
            &[csv_row("b.png"), csv_row("a.png").replace("a.png", "a.jpg")],
        );
        write_png(&dir.path().join("images/a.jpg"), 40, 30);
        let e = ingest(&[a.clone(), b.clone()], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b_train.csv, line 3: cofw/a: duplicate sample id (first read from"),
            "{e}"
        );
        assert!(e.contains("a_train.csv, line 2)"), "{e}");
        let out = ingest(&[a, b], &skip()).unwrap();
        assert_eq!(out.faces.len(), 2);
        assert_eq!(out.report.skipped.len(), 1);
        let s = &out.report.skipped[0];
        assert_eq!(
            (s.location.as_str(), s.sample_id.as_deref()),
            ("line 3", Some("cofw/a"))
        );
        assert_eq!(out.report.sources[1].skipped, 1);
    }

    #[test]
    fn far_outside_and_non_finite_points_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let far = csv_row("b.png").replacen(",10,10", ",10,100", 1);
        let nan = csv_row("b.png").replacen(",10,10", ",nan,10", 1);
        let src = csv_source(dir.path(), "x_train.csv", &[csv_row("a.png"), far]);
        let e = ingest(&[src], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x_train.csv, line 3: cofw/b: point 0 at (10.5, 100.5) lies more than 50 %"),
            "{e}"
        );
        let src = csv_source(dir.path(), "y_train.csv", &[nan]);
        let e = ingest(&[src], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("y_train.csv, line 2: column 5: `nan` is not a finite number"),
            "{e}"
        );
    }

    #[test]
    fn validation_points_at_the_pts_line_of_the_bad_point() {
        let scheme = scheme::by_name("aflw19").unwrap();
        let mut face = FaceRecord {
            sample_id: "x/1".into(),
            dataset: "x".into(),
            scheme: "aflw19".into(),
            split: "train".into(),
            image_path: "i.png".into(),
            image_width: 100,
            image_height: 100,
            landmarks: vec![50.0; 38],
            visible: vec![true; 19],
            occluded: vec![false; 19],
            bbox: crate::face::BBox {
                x: 1.0,
                y: 1.0,
                w: 10.0,
                h: 10.0,
            },
            bbox_source: crate::face::BoxSource::Landmarks,
            yaw: None,
            pitch: None,
            roll: None,
            attributes: None,
        };
        let origin = Origin {
            path: "f.pts".into(),
            location: Location::PtsPoints { first_line: 4 },
        };
        let policy = IngestPolicy::default();
        let check = |face: &FaceRecord| {
            validate(
                &SourcedFace {
                    face: face.clone(),
                    origin: origin.clone(),
                },
                scheme,
                &policy,
                &HashMap::new(),
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(check(&face), Ok(()));
        face.occluded[2] = true;
        assert_eq!(
            check(&face),
            Ok(()),
            "an occluded point keeps its coordinates"
        );
        face.visible[2] = false;
        assert!(
            check(&face)
                .unwrap_err()
                .starts_with("f.pts, line 6: x/1: point 2 is marked occluded")
        );
        face.visible[2] = true;
        face.landmarks[6] = f32::NAN;
        assert!(
            check(&face)
                .unwrap_err()
                .starts_with("f.pts, line 7: x/1: point 3 is (NaN, 50)")
        );
        face.landmarks[7] = f32::NAN;
        face.visible[3] = false;
        assert_eq!(
            check(&face),
            Ok(()),
            "a point without coordinates is fine when not visible"
        );
        face.landmarks[10] = f32::INFINITY;
        face.visible[5] = false;
        assert!(
            check(&face)
                .unwrap_err()
                .starts_with("f.pts, line 9: x/1: point 5")
        );
        face.landmarks[10] = -60.0;
        assert!(
            check(&face)
                .unwrap_err()
                .contains("line 9: x/1: point 5 at (-60, 50) lies more than 50 %")
        );
        face.landmarks[10] = 50.0;
        face.landmarks.truncate(36);
        assert!(
            check(&face)
                .unwrap_err()
                .contains("f.pts, whole file: x/1: 36 coordinates")
        );
    }

    #[test]
    fn mixed_schemes_and_bad_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let csv = csv_source(dir.path(), "c_train.csv", &[csv_row("a.png")]);
        let tree = SourceConfig::new(SourceKind::W300, dir.path().into());
        let e = ingest(&[csv.clone(), tree.clone()], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("different landmark schemes: `cofw29`") && e.contains("`ibug68`"),
            "{e}"
        );
        let e = ingest(
            &[SourceConfig {
                split: Some("train".into()),
                ..tree.clone()
            }],
            &IngestPolicy::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("source 1 (300w")
                && e.contains("`split`: 300w splits come from its folders"),
            "{e}"
        );
        let problems = SourceConfig {
            dataset: Some("mine".into()),
            images: Some("img".into()),
            ..tree.clone()
        }
        .setting_problems();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["dataset", "images"], "{problems:?}");
        assert!(problems[0].1.contains("allowed: `300w`"), "{problems:?}");
        let e = ingest(
            &[SourceConfig {
                scheme: Some("nope".into()),
                ..csv
            }],
            &IngestPolicy::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown landmark scheme `nope`"), "{e}");
        assert!(matches!(
            ingest(&[], &IngestPolicy::default()),
            Err(IngestError::NoSources)
        ));
    }

    #[test]
    fn skip_reports_unreadable_records_and_serialises() {
        let dir = tempfile::tempdir().unwrap();
        let short = csv_row("a.png").rsplit_once(',').unwrap().0.to_owned();
        let src = csv_source(
            dir.path(),
            "z_train.csv",
            &[short, csv_row("b.png"), csv_row("missing.png")],
        );
        let out = ingest(std::slice::from_ref(&src), &skip()).unwrap();
        assert_eq!(out.faces.len(), 1);
        let locations: Vec<&str> = out
            .report
            .skipped
            .iter()
            .map(|s| s.location.as_str())
            .collect();
        assert_eq!(locations, ["line 2", "line 4"]);
        assert!(
            out.report.skipped[0]
                .reason
                .contains("expected 62 fields, found 61")
        );
        let json_path = dir.path().join("ingest-report.json");
        out.report.write_json(&json_path).unwrap();
        let back: IngestReport =
            serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
        assert_eq!(back, out.report);
        assert!(
            out.report
                .to_json()
                .unwrap()
                .contains("\"on_invalid\": \"skip\"")
        );
        let e = ingest(&[src], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("z_train.csv, line 2: expected 62 fields"), "{e}");
    }

    /// A 300W tree with one face in `afw` (`1.pts`, `1.png`).
    fn tree_300w(root: &Path) -> SourceConfig {
        let xy: Vec<f32> = (0..68)
            .flat_map(|i| [10.0 + i as f32 * 0.5, 20.0 + i as f32 * 0.25])
            .collect();
        std::fs::create_dir_all(root.join("afw")).unwrap();
        std::fs::write(root.join("afw/1.pts"), write_pts(&xy, 3)).unwrap();
        write_png(&root.join("afw/1.png"), 64, 64);
        SourceConfig::new(SourceKind::W300, root.into())
    }

    #[test]
    fn a_name_that_is_not_utf8_is_reported_escaped() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let src = tree_300w(dir.path());
        let name = std::ffi::OsStr::from_bytes(b"b\xff\xfe");
        let afw = dir.path().join("afw");
        std::fs::copy(afw.join("1.pts"), afw.join(name).with_extension("pts")).unwrap();
        std::fs::copy(afw.join("1.png"), afw.join(name).with_extension("png")).unwrap();
        let out = ingest(std::slice::from_ref(&src), &skip()).unwrap();
        assert_eq!(out.faces.len(), 1);
        let skipped = &out.report.skipped[0];
        assert!(
            skipped
                .reason
                .contains("afw/b\\xff\\xfe.pts, whole file: file name is not valid UTF-8")
        );
        let json = out.report.to_json().unwrap();
        assert!(
            json.contains(&format!(
                "\"file\": \"{}/afw/b\\\\xff\\\\xfe.pts\"",
                dir.path().display()
            )),
            "{json}"
        );
        let path = dir.path().join("ingest-report.json");
        out.report.write_json(&path).unwrap();
        let back: IngestReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.skipped[0].reason, skipped.reason);
        let e = ingest(&[src], &IngestPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("b\\xff\\xfe.pts"), "{e}");
    }

    #[test]
    fn the_input_walk_stays_in_its_roots_and_leaves_outputs_out() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("300W");
        let src = tree_300w(&root);
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("deep/x.txt"), "x").unwrap();
        std::fs::write(outside.join("f.png"), "f").unwrap();
        let afw = root.join("afw");
        // Folder links out of the root and back into it (a loop) are not followed; a link to a
        // file is listed, and a hidden file is not.
        symlink(&outside, afw.join("out-link")).unwrap();
        symlink(&afw, afw.join("loop")).unwrap();
        symlink(outside.join("f.png"), afw.join("linked.png")).unwrap();
        symlink(outside.join("nothing"), afw.join("broken.png")).unwrap();
        std::fs::write(afw.join(".1.pts.swp"), "x").unwrap();
        let rel = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
                .collect()
        };
        let sources = std::slice::from_ref(&src);
        assert_eq!(
            rel(source_input_paths(sources)),
            ["afw/1.png", "afw/1.pts", "afw/linked.png"]
        );
        // A root that is itself a link is followed.
        let linked_root = dir.path().join("linked-300W");
        symlink(&root, &linked_root).unwrap();
        let linked = SourceConfig::new(SourceKind::W300, linked_root.clone());
        assert_eq!(source_input_paths(&[linked]).len(), 3);

        // An output folder below a root is left out whole once it holds a record or the run
        // lock; a root that is an output folder keeps its other files.
        let out = afw.join("out");
        std::fs::create_dir_all(out.join("shards/stage1")).unwrap();
        for file in [
            "faces.parquet",
            "shards/stage1/shard-00000.safetensors",
            "notes.txt",
        ] {
            std::fs::write(out.join(file), "o").unwrap();
        }
        assert_eq!(source_input_paths(sources).len(), 6);
        std::fs::write(out.join(manifests::RUN_LOCK_FILE_NAME), "").unwrap();
        assert_eq!(source_input_paths(sources).len(), 3);
        let csv = csv_source(&out, "c_train.csv", &[csv_row("a.png")]);
        let images = SourceConfig {
            images: Some(out.clone()),
            ..csv
        };
        let listed = source_input_paths(&[images]);
        let names: Vec<&str> = listed
            .iter()
            .map(|p| p.strip_prefix(&out).unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["c_train.csv", "images/a.png", "images/b.png", "notes.txt"]
        );
    }

    #[test]
    fn source_tables_parse_from_toml() {
        #[derive(Deserialize)]
        struct Doc {
            sources: Vec<SourceConfig>,
            ingest: IngestPolicy,
        }
        let doc: Doc = toml::from_str(
            "[ingest]\non_invalid = \"skip\"\n\
             [[sources]]\nkind = \"aflw-sqlite\"\npath = \"aflw/aflw.sqlite\"\nscheme = \"aflw21\"\n\
             [[sources]]\nkind = \"hrnet-csv\"\npath = \"x.csv\"\nimages = \"img\"\nsplit = \"test\"\ndataset = \"cofw\"\n",
        )
        .unwrap();
        assert_eq!(doc.ingest, skip());
        assert_eq!(doc.sources[0].kind, SourceKind::AflwSqlite);
        assert_eq!(
            doc.sources[1].resolved(Path::new("/base")).images,
            Some(PathBuf::from("/base/img"))
        );
        assert!(
            toml::from_str::<Doc>("[ingest]\n[[sources]]\nkind = \"x\"\npath = \"p\"\n").is_err()
        );
        assert!(
            toml::from_str::<SourceConfig>("kind = \"wflw\"\npath = \"p\"\ntypo = 1\n").is_err()
        );
    }

    #[test]
    fn init_finds_every_kind_and_its_output_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // A 300W tree with one face.
        let xy: Vec<f32> = (0..68)
            .flat_map(|i| [10.0 + i as f32 * 0.5, 20.0 + i as f32 * 0.25])
            .collect();
        std::fs::create_dir_all(root.join("300W/ibug")).unwrap();
        std::fs::write(root.join("300W/ibug/image_001.pts"), write_pts(&xy, 3)).unwrap();
        write_png(&root.join("300W/ibug/image_001.png"), 64, 64);
        // An HRNet CSV with images/ beside it, an AFLW database, a WFLW list.
        csv_source(&root.join("cofw"), "cofw_test.csv", &[csv_row("a.png")]);
        std::fs::create_dir_all(root.join("aflw")).unwrap();
        aflw::tests::write_database(&root.join("aflw/aflw.sqlite"));
        let mut wflw_line: Vec<String> = (0..196).map(|i| format!("{}", 5 + i % 20)).collect();
        wflw_line.extend(
            [
                "1", "1", "30", "30", "0", "0", "0", "0", "0", "0", "x/a.jpg",
            ]
            .map(String::from),
        );
        std::fs::create_dir_all(root.join("WFLW/WFLW_annotations/list")).unwrap();
        std::fs::write(
            root.join("WFLW/WFLW_annotations/list/list_98pt_rect_attr_train.txt"),
            wflw_line.join(" "),
        )
        .unwrap();
        write_png(&root.join("WFLW/WFLW_images/x/a.jpg"), 40, 40);
        std::fs::write(root.join("notes.txt"), "hello\n").unwrap();

        let doc = discover_sources(root);
        let text = format!("{:?}", doc.sources);
        let kinds: Vec<SourceKind> = doc.sources.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            [
                SourceKind::W300,
                SourceKind::Wflw,
                SourceKind::AflwSqlite,
                SourceKind::HrnetCsv
            ],
            "{text}"
        );
        let by_kind = |k| doc.sources.iter().find(|s| s.kind == k).unwrap();
        assert_eq!(
            by_kind(SourceKind::HrnetCsv).images,
            Some(root.join("cofw/images"))
        );
        assert_eq!(by_kind(SourceKind::HrnetCsv).split.as_deref(), Some("test"));
        assert_eq!(
            by_kind(SourceKind::Wflw).images,
            Some(root.join("WFLW/WFLW_images"))
        );
        assert_eq!(
            by_kind(SourceKind::AflwSqlite).images,
            Some(root.join("aflw/flickr"))
        );

        let out = ingest(
            &[by_kind(SourceKind::W300).clone()],
            &IngestPolicy::default(),
        )
        .unwrap();
        assert_eq!(out.faces[0].sample_id, "300w/ibug/image_001");
        let out = ingest(
            &[by_kind(SourceKind::Wflw).clone()],
            &IngestPolicy::default(),
        )
        .unwrap();
        assert_eq!(out.faces[0].sample_id, "wflw/x/a_0");
        let parquet = root.join("faces.parquet");
        write_faces_parquet(&parquet, &out.faces).unwrap();
        assert_eq!(read_faces_parquet(&parquet).unwrap(), out.faces);
        assert!(
            discover_sources(&root.join("aflw/flickr"))
                .sources
                .is_empty()
        );
    }
}
