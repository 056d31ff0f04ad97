#!/usr/bin/env bash
# Render a wingflow plan with a Slurm array job on a shared file system.
#
#   sbatch --array=0-15 deploy/slurm-render.sh /shared/project/wingflow.toml
#
# Before submitting, run the cheap stages once (they take seconds):
#   wingflow run --config /shared/project/wingflow.toml --until balance
# Each array task renders the shards with id % SLURM_ARRAY_TASK_COUNT == SLURM_ARRAY_TASK_ID
# (wingflow reads both variables itself); shard ids come from the plan, so the union of the
# tasks' output equals a one-machine run byte for byte. When every task is done:
#   wingflow index --config /shared/project/wingflow.toml   # verifies digests, writes indexes
# `make slurm-check` (scripts/slurm-check.sh) submits this script for real, on a private one-node
# cluster it starts, with --cpus-per-task=1 --mem=512M overriding the requests below, and checks
# the result byte for byte against a one-process render.
#SBATCH --job-name=wingflow-render
#SBATCH --cpus-per-task=8
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=wingflow-render-%A_%a.log
set -euo pipefail
config="${1:?usage: sbatch --array=0-N deploy/slurm-render.sh WINGFLOW_TOML}"
export RAYON_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}"
exec wingflow run --config "$config"
