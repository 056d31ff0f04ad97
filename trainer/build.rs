//! Make `wingflow-train` (and the test binaries) find libtorch without `LD_LIBRARY_PATH`, and keep
//! `libtorch_cuda` in the dynamic section so CUDA is usable when the libtorch build has it.
//!
//! torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=<dir>`; cargo hands that to
//! direct dependents as `DEP_TCH_LIBTORCH_LIB`, which is why this crate depends on torch-sys.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(dir) = env::var_os("DEP_TCH_LIBTORCH_LIB") else {
        // torch-sys built with `doc-only` prints nothing; there is nothing to link then.
        return;
    };
    let dir = PathBuf::from(dir);
    // `doctor` reports the libtorch version it was built against: a PyTorch wheel has
    // `torch/version.py` beside `torch/lib`, a libtorch archive has `build-version`.
    let version = std::fs::read_to_string(dir.join("../version.py"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|v| v.trim().trim_matches('\'').to_owned())
            })
        })
        .or_else(|| {
            std::fs::read_to_string(dir.join("../build-version"))
                .ok()
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=WINGFLOW_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=WINGFLOW_LIBTORCH_LIB={}", dir.display());
    // An rpath (emitted as DT_RUNPATH by modern linkers) lets the binary run from any directory.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    // rustc links with --as-needed, and nothing in our code calls into libtorch_cuda by name, so
    // the linker would drop it and `tch::Cuda::is_available()` would report false on a GPU
    // machine. Link it explicitly with --no-as-needed, then restore the default for the rest.
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", dir.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
