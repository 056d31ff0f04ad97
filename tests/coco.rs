//! `kind = "coco"` sources end to end, on files `wingflow synth --format coco` writes: every
//! JSON flavour (plain, WholeBody face, several faces per image, v = 1 and 2 under both rules,
//! each origin), the `.pts` ↔ one-based JSON identity, located errors, and occluded points that
//! keep their coordinates, train and are scored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use faces::face::{BoxSource, FaceRecord};
use faces::faces_table::read_faces_parquet;
use faces::ingest::IngestReport;
use synth::{TruthFace, read_truth};

use crate::common::{fails, ok, wingflow};

/// `wingflow synth --format coco` with the given flavour options, 8 faces.
fn synth_coco(dir: &Path, options: &[&str]) {
    ok(wingflow()
        .arg("synth")
        .arg(dir)
        .args(["--format", "coco", "--count", "8", "--seed", "5"])
        .args(["--size", "120-160"])
        .args(options));
}

/// The annotation files synth wrote, sorted.
fn json_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("annotations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// A configuration reading `sources` (TOML tables' bodies), training off; run to ingest.
fn ingest(root: &Path, sources: &[String]) -> (Vec<FaceRecord>, IngestReport) {
    let mut text = String::from("output = \"out\"\n[train]\nenabled = false\n");
    for s in sources {
        text.push_str(&format!("[[sources]]\n{s}\n"));
    }
    let config = root.join("wingflow.toml");
    std::fs::write(&config, text).unwrap();
    ok(wingflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--until", "ingest"]));
    let report: IngestReport = serde_json::from_str(
        &std::fs::read_to_string(root.join("out/ingest-report.json")).unwrap(),
    )
    .unwrap();
    (
        read_faces_parquet(&root.join("out/faces.parquet")).unwrap(),
        report,
    )
}

fn coco_source(path: &Path, extra: &str) -> String {
    format!(
        "kind = \"coco\"\npath = {:?}\n{extra}",
        path.display().to_string()
    )
}

struct Flavour {
    synth: &'static [&'static str],
    settings: &'static str,
    /// The `v` a point the head hides is written with (1 or 2), and whether the reader's rule
    /// makes a `v = 1` point occluded.
    occluded_if_hidden: bool,
    occluded_always: bool,
}

#[test]
fn every_flavour_lands_on_the_truth_with_its_flags() {
    let flavours = [
        // Plain mmpose-style keypoints, COCO flags (2 in view, 1 hidden) under COCO's rule.
        Flavour {
            synth: &["--coco-origin", "zero-based", "--coco-flags", "coco"],
            settings: "scheme = \"ibug68\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n",
            occluded_if_hidden: true,
            occluded_always: false,
        },
        // The same flags under the labelled rule: nothing is occluded.
        Flavour {
            synth: &["--coco-origin", "zero-based", "--coco-flags", "coco"],
            settings: "scheme = \"ibug68\"\norigin = \"zero-based\"\nvisibility = \"labelled\"\n",
            occluded_if_hidden: false,
            occluded_always: false,
        },
        // mmpose's 300W: v = 1 everywhere, the .pts rule; under both rules.
        Flavour {
            synth: &["--coco-origin", "one-based", "--coco-flags", "all-1"],
            settings: "scheme = \"ibug68\"\norigin = \"one-based\"\nvisibility = \"labelled\"\n",
            occluded_if_hidden: false,
            occluded_always: false,
        },
        Flavour {
            synth: &["--coco-origin", "one-based", "--coco-flags", "all-1"],
            settings: "scheme = \"ibug68\"\norigin = \"one-based\"\nvisibility = \"coco\"\n",
            occluded_if_hidden: true,
            occluded_always: true,
        },
        // 300W-LP: v = 2 everywhere; continuous values; under both rules.
        Flavour {
            synth: &["--coco-origin", "continuous", "--coco-flags", "all-2"],
            settings: "scheme = \"ibug68\"\norigin = \"continuous\"\nvisibility = \"coco\"\n",
            occluded_if_hidden: false,
            occluded_always: false,
        },
        Flavour {
            synth: &["--coco-origin", "continuous", "--coco-flags", "all-2"],
            settings: "scheme = \"ibug68\"\norigin = \"continuous\"\nvisibility = \"labelled\"\n",
            occluded_if_hidden: false,
            occluded_always: false,
        },
        // COCO-WholeBody faces (scheme from the field), a person without a face per image.
        Flavour {
            synth: &["--coco-field", "face", "--coco-flags", "coco"],
            settings: "field = \"face\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n",
            occluded_if_hidden: true,
            occluded_always: false,
        },
        // Three faces per image.
        Flavour {
            synth: &["--faces-per-image", "3", "--coco-flags", "coco"],
            settings: "scheme = \"ibug68\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n",
            occluded_if_hidden: true,
            occluded_always: false,
        },
    ];
    for (k, flavour) in flavours.iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        synth_coco(&data, flavour.synth);
        let sources: Vec<String> = json_files(&data)
            .iter()
            .map(|p| coco_source(p, flavour.settings))
            .collect();
        let (faces, report) = ingest(tmp.path(), &sources);
        let truth: BTreeMap<String, TruthFace> = read_truth(&data)
            .unwrap()
            .into_iter()
            .map(|t| (t.sample_id.clone(), t))
            .collect();
        assert_eq!(faces.len(), truth.len(), "flavour {k}");
        let mut any_hidden = false;
        for f in &faces {
            let t = &truth[&f.sample_id];
            assert_eq!(f.split, t.split, "flavour {k}");
            assert!(f.image_path.ends_with(&t.image_path), "flavour {k}");
            assert_eq!(
                (f.image_width, f.image_height),
                (t.image_width, t.image_height)
            );
            for (i, (a, b)) in f.landmarks.iter().zip(&t.landmarks).enumerate() {
                // Written rounded to 0.001 px.
                assert!(
                    (a - b).abs() < 1.5e-3,
                    "flavour {k} {}: value {i}: {a} vs {b}",
                    f.sample_id
                );
            }
            // Hidden points are labelled: every point keeps its coordinates and is visible.
            assert!(f.visible.iter().all(|&v| v), "flavour {k}");
            for (i, &seen) in t.visible.iter().enumerate() {
                any_hidden |= !seen;
                let want = flavour.occluded_always || (flavour.occluded_if_hidden && !seen);
                assert_eq!(f.occluded[i], want, "flavour {k} {} point {i}", f.sample_id);
            }
            let b = t.bbox.unwrap();
            assert_eq!(f.bbox_source, BoxSource::Annotation);
            assert_eq!([f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h], b, "flavour {k}");
        }
        assert!(
            any_hidden,
            "flavour {k}: the synthetic faces have hidden points"
        );
        let images: std::collections::BTreeSet<&str> =
            truth.values().map(|t| t.image_path.as_str()).collect();
        let without_face: usize = report.sources.iter().map(|s| s.without_face).sum();
        if flavour.settings.contains("face") {
            assert_eq!(
                without_face,
                images.len(),
                "one person without a face per image"
            );
        } else {
            assert_eq!(without_face, 0);
        }
        if flavour.synth.contains(&"3") {
            assert_eq!(images.len(), 3, "8 faces, 3 per image");
            assert!(truth.values().any(|t| t.image_width > t.image_height * 2));
        }
    }
}

#[test]
fn the_same_face_as_pts_and_as_one_based_json_lands_on_identical_coordinates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data/300w");
    crate::common::synth(&data, "300w", 8, 3);
    // mmpose's 300W JSON keeps the .pts values: copy each file's numbers verbatim.
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (i, t) in read_truth(&data).unwrap().iter().enumerate() {
        let pts = data.join(&t.image_path).with_extension("pts");
        let text = std::fs::read_to_string(&pts).unwrap();
        let body = text.split('{').nth(1).unwrap().split('}').next().unwrap();
        let values: Vec<String> = body
            .split_ascii_whitespace()
            .collect::<Vec<_>>()
            .chunks(2)
            .map(|p| format!("{},{},1", p[0], p[1]))
            .collect();
        images.push(format!(
            "{{\"id\":{i},\"file_name\":{:?},\"width\":{},\"height\":{}}}",
            t.image_path, t.image_width, t.image_height
        ));
        annotations.push(format!(
            "{{\"id\":{i},\"image_id\":{i},\"keypoints\":[{}]}}",
            values.join(",")
        ));
    }
    let json = tmp.path().join("face_landmarks_300w_train.json");
    std::fs::write(
        &json,
        format!(
            "{{\"images\":[{}],\"annotations\":[{}]}}",
            images.join(","),
            annotations.join(",")
        ),
    )
    .unwrap();
    let (from_pts, _) = ingest(
        tmp.path(),
        &[format!(
            "kind = \"300w\"\npath = {:?}\n",
            data.display().to_string()
        )],
    );
    let (from_json, _) = ingest(
        tmp.path(),
        &[coco_source(
            &json,
            &format!(
                "scheme = \"ibug68\"\norigin = \"one-based\"\nvisibility = \"labelled\"\nimages = {:?}\n",
                data.display().to_string()
            ),
        )],
    );
    assert_eq!(from_pts.len(), 8);
    let by_image: BTreeMap<&str, &FaceRecord> = from_json
        .iter()
        .map(|f| (f.image_path.as_str(), f))
        .collect();
    for f in &from_pts {
        let g = by_image[f.image_path.as_str()];
        let bits = |f: &FaceRecord| f.landmarks.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(f), bits(g), "{}", f.sample_id);
        assert_eq!((&f.visible, &f.occluded), (&g.visible, &g.occluded));
    }
}

#[test]
fn bad_json_and_missing_settings_give_their_location() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_coco(&data, &[]);
    let file = &json_files(&data)[1];
    assert!(file.ends_with("face_landmarks_synth_train.json"));
    let text = std::fs::read_to_string(file).unwrap();
    let settings = "scheme = \"ibug68\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n";
    let config = tmp.path().join("wingflow.toml");
    let run = |source: &str| {
        std::fs::write(
            &config,
            format!("output = \"out\"\n[train]\nenabled = false\n[[sources]]\n{source}\n"),
        )
        .unwrap();
        fails(
            wingflow()
                .arg("run")
                .arg("--config")
                .arg(&config)
                .args(["--until", "ingest"]),
        )
    };
    // A v flag that is not 0, 1 or 2, in the second annotation of the file.
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = doc["annotations"][1]["id"].as_i64().unwrap();
    doc["annotations"][1]["keypoints"][5] = serde_json::json!(3);
    std::fs::write(file, doc.to_string()).unwrap();
    let err = run(&coco_source(file, settings));
    assert!(
        err.contains(&format!(
            "face_landmarks_synth_train.json, annotations[1] (id {id}): `keypoints` point 1: v = 3 (allowed: 0, 1, 2)"
        )),
        "{err}"
    );
    // Not JSON: line and column.
    std::fs::write(file, text.replacen("\"images\":", "\"images\"", 1)).unwrap();
    let err = run(&coco_source(file, settings));
    assert!(
        err.contains("face_landmarks_synth_train.json, line 1: column")
            && err.contains("not valid JSON"),
        "{err}"
    );
    // No origin: refused at load, naming the line and `wingflow init`.
    let err = run(&coco_source(
        file,
        "scheme = \"ibug68\"\nvisibility = \"coco\"\n",
    ));
    assert!(
        err.contains("wingflow.toml:4: sources[0].origin: required for kind = \"coco\"")
            && err.contains("wingflow init"),
        "{err}"
    );
}

#[test]
fn occluded_points_keep_coordinates_train_and_are_scored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth_coco(&data, &["--coco-flags", "coco"]);
    let sources: Vec<String> = json_files(&data)
        .iter()
        .map(|p| {
            coco_source(
                p,
                "scheme = \"ibug68\"\norigin = \"zero-based\"\nvisibility = \"coco\"\n",
            )
        })
        .collect();
    let (faces, _) = ingest(tmp.path(), &sources);
    let face = faces
        .iter()
        .find(|f| f.any_occluded())
        .expect("an occluded face");
    let hidden = face.occluded.iter().position(|&o| o).unwrap();
    assert!(face.visible[hidden] && face.landmarks[2 * hidden].is_finite());
    // Scored: a prediction wrong only at the occluded point has an error.
    let scheme = contract::scheme::by_name("ibug68").unwrap();
    let target = contract::metrics::points(&face.landmarks);
    let mut pred = target.clone();
    pred[hidden][0] += 5.0;
    let nme = contract::metrics::face_nme(&pred, &target, &face.visible, &scheme.normaliser);
    assert!(nme.unwrap() > 0.0, "the occluded point is scored");

    // Trained: the shards mark it visible (the loss masks by `visible`), and carry `occluded`.
    ok(wingflow()
        .arg("run")
        .arg("--config")
        .arg(tmp.path().join("wingflow.toml")));
    let mut checked = 0;
    for set in ["stage1/train", "stage2/train", "stage1/test"] {
        let dir = tmp.path().join("out/shards").join(set);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for shard in entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        {
            let bytes = std::fs::read(&shard).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let visible = st.tensor("visible").unwrap();
            // Only shards holding a face with an occluded point carry the tensor.
            let Ok(occluded) = st.tensor("occluded") else {
                continue;
            };
            assert_eq!(visible.shape(), occluded.shape());
            assert!(occluded.data().contains(&1));
            for (v, o) in visible.data().iter().zip(occluded.data()) {
                assert!(*o == 0 || *v == 1, "an occluded point is visible");
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "no shard with occluded points");
}

#[test]
fn init_recognises_mmpose_and_wholebody_files_and_writes_how_to_check() {
    let tmp = tempfile::tempdir().unwrap();
    synth_coco(
        &tmp.path().join("data/w300"),
        &["--coco-origin", "one-based", "--coco-flags", "all-1"],
    );
    synth_coco(
        &tmp.path().join("data/wholebody"),
        &["--coco-field", "face", "--coco-flags", "coco"],
    );
    ok(wingflow()
        .current_dir(tmp.path())
        .args(["init", "data", "--output", "out"]));
    let text = std::fs::read_to_string(tmp.path().join("wingflow.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let sources = doc["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 4, "{text}");
    for s in sources {
        let path = s["path"].as_str().unwrap();
        let (field, origin, visibility) = if path.contains("wholebody") {
            // COCO's meaning when the file uses both flags (a split may have no hidden point).
            let file = std::fs::read_to_string(tmp.path().join(path)).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&file).unwrap();
            let ones = doc["annotations"].as_array().unwrap().iter().any(|a| {
                a["face_kpts"]
                    .as_array()
                    .unwrap()
                    .chunks(3)
                    .any(|p| p[2] == 1)
            });
            ("face", "zero-based", if ones { "coco" } else { "labelled" })
        } else {
            ("keypoints", "one-based", "labelled")
        };
        assert_eq!(s["kind"].as_str(), Some("coco"), "{text}");
        assert_eq!(s["field"].as_str(), Some(field), "{path}: {text}");
        assert_eq!(s["origin"].as_str(), Some(origin), "{path}: {text}");
        assert_eq!(s["visibility"].as_str(), Some(visibility), "{path}: {text}");
        assert_eq!(s["scheme"].as_str(), Some("ibug68"));
        assert!(s["images"].as_str().unwrap().ends_with("images"));
    }
    assert!(
        text.contains("# Recognised as mmpose's 300W file"),
        "{text}"
    );
    assert!(
        text.contains("# Recognised as COCO-WholeBody faces"),
        "{text}"
    );
    assert!(
        text.contains("a wrong origin shows as every point shifted by one pixel"),
        "{text}"
    );
    // What init wrote ingests (both synthetic sets number their annotations from 1: the
    // WholeBody one gets its own dataset name, so that sample ids differ).
    let config = tmp.path().join("wingflow.toml");
    let text = text.replace("enabled = true", "enabled = false").replace(
        "path = \"data/wholebody",
        "dataset = \"wholebody\"\npath = \"data/wholebody",
    );
    std::fs::write(&config, text).unwrap();
    ok(wingflow()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--until", "ingest"]));
    assert_eq!(
        read_faces_parquet(&tmp.path().join("out/faces.parquet"))
            .unwrap()
            .len(),
        16
    );
}
