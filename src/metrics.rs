//! The landmark metrics (`landmark-metrics`, shared with `wingflow-train`) with normalisers
//! taken from the landmark scheme table of `stages`.

use anyhow::{Result, bail};
pub use landmark_metrics::{ErrorSummary, Normaliser, face_nme, points, sorted_quantile};
use stages::scheme::{Normaliser as SchemeNormaliser, Scheme};

/// A scheme table normaliser as a metrics normaliser.
fn from_scheme(n: &SchemeNormaliser) -> Normaliser {
    match n {
        SchemeNormaliser::InterOcular { a, b } => Normaliser::InterOcular { a: *a, b: *b },
        SchemeNormaliser::InterPupil { left, right } => Normaliser::InterPupil {
            left: left.clone(),
            right: right.clone(),
        },
        SchemeNormaliser::BoxWidth => Normaliser::BoxWidth,
    }
}

/// The normaliser a user asked for: `None` gives the scheme's default; else `inter-ocular`,
/// `inter-pupil` (when the scheme defines them), one of the scheme's alternative names,
/// `box-width`, `box-sqrt`, or an explicit `inter-ocular:A,B` / `inter-pupil:L0-L1,R0-R1`.
pub fn normaliser_for(spec: Option<&str>, scheme: &Scheme) -> Result<Normaliser> {
    let Some(spec) = spec else {
        return Ok(from_scheme(&scheme.normaliser));
    };
    let of_kind = |name: &str, n: &SchemeNormaliser| {
        matches!(
            (name, n),
            ("inter-ocular", SchemeNormaliser::InterOcular { .. })
                | ("inter-pupil", SchemeNormaliser::InterPupil { .. })
        )
    };
    let by_name = |name: &str| {
        if of_kind(name, &scheme.normaliser) {
            return Some(from_scheme(&scheme.normaliser));
        }
        scheme
            .alternative_normalisers
            .iter()
            .find(|(alt, n)| *alt == name || of_kind(name, n))
            .map(|(_, n)| from_scheme(n))
    };
    let normaliser = Normaliser::parse(spec, by_name)?;
    if let Some(max) = normaliser.max_index().filter(|&m| m >= scheme.num_points()) {
        bail!(
            "normaliser {normaliser} uses point {max}, but scheme {} has {} points",
            scheme.name,
            scheme.num_points()
        );
    }
    Ok(normaliser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisers_from_the_scheme() {
        let ibug = stages::scheme::by_name("ibug68").unwrap();
        assert_eq!(
            normaliser_for(None, ibug).unwrap(),
            Normaliser::InterOcular { a: 36, b: 45 }
        );
        let ip = normaliser_for(Some("inter-pupil"), ibug).unwrap();
        assert_eq!(ip.to_string(), "inter-pupil:36-41,42-47");
        let aflw = stages::scheme::by_name("aflw19").unwrap();
        assert_eq!(normaliser_for(None, aflw).unwrap(), Normaliser::BoxWidth);
        assert!(normaliser_for(Some("inter-pupil"), aflw).is_err());
        assert!(normaliser_for(Some("median"), ibug).is_err());
        assert!(normaliser_for(Some("inter-ocular:3,68"), ibug).is_err());
        assert_eq!(
            normaliser_for(Some("inter-ocular:3,67"), ibug).unwrap(),
            Normaliser::InterOcular { a: 3, b: 67 }
        );
    }
}
