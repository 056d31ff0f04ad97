#!/usr/bin/env bash
# The two binaries' dependency rules (ARCHITECTURE.md): `wingflow-train` (package trainer)
# links no polars, `wingflow` links no libtorch (torch-sys, tch). Each rule also checks that
# the crate it is about is in the other binary's tree, so the check cannot pass by looking at
# nothing (a renamed package, an empty tree).
set -euo pipefail
cd "$(dirname "$0")/.."
tree() { cargo tree --offline -p "$1" -e normal,build --prefix none --format '{p}' | awk '{print $1}' | sort -u; }
trainer="$(tree trainer)"
wingflow="$(tree wingflow)"
fail=0
forbid() { # forbid BINARY TREE CRATE
  if grep -qx "$3" <<<"$2"; then
    echo "error: $1 depends on $3 (cargo tree -p ${1/wingflow-train/trainer} -i $3)" >&2
    fail=1
  fi
}
require() { # require BINARY TREE CRATE
  grep -qx "$3" <<<"$2" || { echo "error: $1's tree lacks $3: the check looks at the wrong tree" >&2; fail=1; }
}
forbid wingflow-train "$trainer" polars
forbid wingflow "$wingflow" torch-sys
forbid wingflow "$wingflow" tch
require wingflow-train "$trainer" tch
require wingflow "$wingflow" polars
[ "$fail" = 0 ] && echo "dependency rules hold: wingflow-train links no polars, wingflow no libtorch"
exit "$fail"
