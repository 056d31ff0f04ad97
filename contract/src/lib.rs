//! What wingflow's parts agree on, in one torch-free, polars-free crate that both the
//! `wingflow` CLI and the `wingflow-train` trainer link:
//!
//! - [`layout`]: the output folder's layout;
//! - [`scheme`]: the landmark scheme registry (points, flip permutation, eyes, normalisers);
//! - [`metrics`]: NME, AUC, failure rate, CED, and the normaliser syntax;
//! - [`shards`]: the shard format (tensor names, `index.json`);
//! - [`training`]: loss kinds, device syntax, the networks and their crop sizes, and the
//!   [`training::TrainRequest`] the CLI writes and the trainer reads.

pub mod layout;
pub mod metrics;
pub mod scheme;
pub mod shards;
pub mod training;

/// An error and its causes as one message for a person: the error, then each cause that does
/// not already appear in the text so far (a wrapper that repeats its cause's text, as many
/// `#[error("…: {source}")]` variants do, is printed once).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// The exit of a binary's `main`: success, or the error printed once to stderr with its causes
/// ([`error_chain`]) and a failure status.
pub fn exit_code<E>(result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(e.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x.toml: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("stage ingest failed")]
    struct Wraps {
        #[source]
        source: Repeats,
    }

    #[test]
    fn each_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Wraps {
            source: Repeats { source: io },
        };
        assert_eq!(
            error_chain(&e),
            "stage ingest failed\n  caused by: cannot read x.toml: no such file"
        );
    }
}
