#!/usr/bin/env bash
# "Slurm for real": render the demo's plan with deploy/slurm-render.sh as a real Slurm array job
# on a private one-node cluster started on this machine, then check that the union of the array
# tasks' shards equals a one-process render byte for byte.
#
# Usage: scripts/slurm-check.sh [WORK_DIR]   (default: a temporary folder, removed on success)
#   WINGFLOW_BIN_DIR  folder of the built binaries                              [target/debug]
#   SLURM_CHECK_TASKS number of array tasks (sbatch --array=0-(TASKS-1))         [4]
#   SLURM_CHECK_SHARD_BYTES  [balance] target_shard_bytes (small: several shards per set) [250000]
#
# What it does: installs Debian's slurm-wlm and munge when missing (apt-get); starts munged, slurmctld and slurmd (CPUs=2, proctrack/linuxproc, task/none) directly,
# not through systemd, with a private key, socket, slurm.conf (SLURM_CONF), ports, state and log
# folders under WORK_DIR/slurm; synthesises 600 300W faces; runs `wingflow run --until balance`;
# submits `sbatch --array=0-K --cpus-per-task=1 --mem=... deploy/slurm-render.sh`; waits (with a
# timeout); fails if any task failed (printing its log); runs `wingflow index`; renders the same
# plan in one process into a second output root and `cmp`s every shard file. The daemons it
# started (and any job step still running under them) are stopped on exit, whatever happens.
# It must run as root (slurmd launches jobs, and the daemons run as root); `make slurm-check`
# calls it through sudo when needed, as `make sysdeps` calls apt-get.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${WINGFLOW_BIN_DIR:-target/debug}"
bin="$(cd "$bin" 2>/dev/null && pwd)" || { echo "slurm-check: WINGFLOW_BIN_DIR=${WINGFLOW_BIN_DIR:-target/debug} is not a folder (build first: make build)" >&2; exit 1; }
wingflow="$bin/wingflow"
[ -x "$wingflow" ] || { echo "slurm-check: $wingflow not found or not executable (build first: make build)" >&2; exit 1; }
tasks="${SLURM_CHECK_TASKS:-4}"
shard_bytes="${SLURM_CHECK_SHARD_BYTES:-250000}"
case "$tasks" in ''|*[!0-9]*|0) echo "slurm-check: SLURM_CHECK_TASKS=$tasks: need a positive number" >&2; exit 1;; esac
task_mem=512M          # per array task (--mem); the node offers node_mem MiB
node_mem=2048
job_timeout=900        # seconds to wait for the array job
faces=600

if [ "$(id -u)" -ne 0 ]; then
  echo "slurm-check: must run as root (munged, slurmctld and slurmd are started here as root); try: make slurm-check, or sudo env WINGFLOW_BIN_DIR=$bin $0" >&2
  exit 1
fi

started=$SECONDS
say() { echo "==> $*"; }
die() { echo "slurm-check: FAILED: $*" >&2; exit 1; }

# --- 1. packages ---------------------------------------------------------------------------
# (On a host with systemd, the packages' own services start with the default configuration; this
# check does not use them: its key, socket, ports, config and state are all private.)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null || ! command -v ss >/dev/null; then
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge iproute2
fi
for tool in munged munge unmunge slurmctld slurmd sbatch squeue scontrol sinfo scancel ss; do
  command -v "$tool" >/dev/null || die "$tool not found after installing slurm-wlm and munge"
done

# --- work folder ---------------------------------------------------------------------------
temp_work=0
if [ $# -ge 1 ]; then
  work="$1"
  mkdir -p "$work"
else
  work="$(mktemp -d -t wingflow-slurm-check.XXXXXX)"
  temp_work=1
fi
work="$(cd "$work" && pwd)"
sdir="$work/slurm"
conf="$sdir/etc/slurm.conf"
host="$(hostname -s)"
[ -n "$host" ] || die "hostname -s printed nothing"

pids=()        # daemons started here, in start order
jobid=""

# The daemons and the job (and so slurmstepd and the job's tasks) get this variable in their
# environment, and nothing else does: every process carrying it was started by this script (or
# by an earlier run into the same WORK_DIR), which gives the precise set to stop, by pid.
marker="WINGFLOW_SLURM_CHECK=$sdir"
our_processes() {
  local p
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [ "$p" = "$$" ] && continue
    if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "$marker"; then
      echo "$p"
    fi
  done
}

stop_pid() {  # stop_pid PID NAME: TERM, wait up to 15 s, then KILL
  local pid="$1" name="$2" i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  echo "slurm-check: $name (pid $pid) ignored SIGTERM for 15 s; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? i p
  set +e
  trap - EXIT INT TERM
  if [ -n "$jobid" ] && [ "${#pids[@]}" -gt 0 ]; then
    if [ -n "$(squeue -h -j "$jobid" 2>/dev/null)" ]; then
      echo "==> cancelling job $jobid"
      scancel "$jobid" 2>/dev/null
      for i in $(seq 1 30); do [ -z "$(squeue -h -j "$jobid" 2>/dev/null)" ] && break; sleep 1; done
    fi
  fi
  if [ "${#pids[@]}" -gt 0 ]; then
    echo "==> stopping the daemons started here"
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      p="${pids[$i]}"
      stop_pid "${p%%:*}" "${p#*:}"
      wait "${p%%:*}" 2>/dev/null
    done
    for p in $(our_processes); do
      echo "slurm-check: stopping left-over process $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null))" >&2
      stop_pid "$p" "left-over process"
    done
    if [ -n "$(our_processes)" ]; then
      echo "slurm-check: processes from this check are still running: $(our_processes | tr '\n' ' ')" >&2
      [ "$rc" -eq 0 ] && rc=1
    else
      echo "    nothing left running"
    fi
  fi
  if [ "$temp_work" -eq 1 ]; then
    if [ "$rc" -eq 0 ]; then rm -rf "$work"; echo "    removed the temporary work folder $work"
    else echo "slurm-check: logs and outputs kept in $work" >&2; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A run of this script into the same WORK_DIR that was killed hard (SIGKILL) may have left its
# daemons behind: they carry the same marker, so stop them before starting fresh ones.
for p in $(our_processes); do
  echo "slurm-check: stopping process $p left by an earlier run into $work" >&2
  stop_pid "$p" "earlier run's process"
done

free_port() {  # a TCP port nothing listens on, from 20000-39999
  local port i
  for i in $(seq 1 100); do
    port=$((20000 + RANDOM % 20000))
    if ! ss -Hltn "sport = :$port" | grep -q .; then echo "$port"; return 0; fi
  done
  die "no free TCP port found"
}

# wait_for SECONDS COMMAND...: poll COMMAND every half second until it succeeds (1: timed out).
wait_for() {
  local limit="$1" deadline
  shift
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}

show_log() {  # show_log FILE: its last lines, on stderr
  [ -f "$1" ] && { echo "---- last lines of $1" >&2; tail -n 30 "$1" >&2; echo "----" >&2; }
  return 0
}

# --- 2. a one-node cluster -----------------------------------------------------------------
rm -rf "$sdir"
mkdir -p "$sdir"/{etc,munge,state/ctld,state/d,run,log}
chmod 0700 "$sdir/munge"
export SLURM_CONF="$conf"
ctld_port="$(free_port)"
slurmd_port="$(free_port)"
[ "$slurmd_port" != "$ctld_port" ] || slurmd_port="$(free_port)"
socket="$sdir/munge/munge.socket"

# The daemons run in their own sessions (setsid), so a Ctrl-C or a `timeout` that signals this
# script's process group does not kill them before the cleanup has cancelled the job.
say "starting munged (private key and socket under $sdir/munge)"
head -c 1024 /dev/urandom >"$sdir/munge/munge.key"
chmod 0600 "$sdir/munge/munge.key"
setsid env "$marker" munged --foreground --force --socket="$socket" --key-file="$sdir/munge/munge.key" \
  --log-file="$sdir/log/munged.log" --pid-file="$sdir/run/munged.pid" \
  --seed-file="$sdir/munge/munged.seed" >"$sdir/log/munged.out" 2>&1 &
pids+=("$!:munged")
check_munge() { munge -S "$socket" -n | unmunge -S "$socket"; }
wait_for 20 check_munge || { show_log "$sdir/log/munged.out"; show_log "$sdir/log/munged.log"; die "munged did not answer within 20 s"; }

cat >"$conf" <<EOF
# Written by scripts/slurm-check.sh: a private one-node cluster for the wingflow Slurm check.
ClusterName=wingflowcheck
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$sdir/state/ctld
SlurmdSpoolDir=$sdir/state/d
SlurmctldPidFile=$sdir/run/slurmctld.pid
SlurmdPidFile=$sdir/run/slurmd.pid
SlurmctldLogFile=$sdir/log/slurmctld.log
SlurmdLogFile=$sdir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$sdir/log/jobcomp.txt
# keep finished jobs in slurmctld's memory long enough to read their states with scontrol
MinJobAge=3600
ReturnToService=2
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=$node_mem State=UNKNOWN
PartitionName=check Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

say "starting slurmctld and slurmd on $host (ports $ctld_port, $slurmd_port; SLURM_CONF=$conf)"
setsid env "$marker" slurmctld -D -c -f "$conf" >"$sdir/log/slurmctld.out" 2>&1 &
pids+=("$!:slurmctld")
wait_for 30 scontrol ping \
  || { show_log "$sdir/log/slurmctld.out"; show_log "$sdir/log/slurmctld.log"; die "slurmctld did not answer scontrol ping within 30 s"; }
setsid env "$marker" slurmd -D -f "$conf" -N "$host" >"$sdir/log/slurmd.out" 2>&1 &
pids+=("$!:slurmd")
node_idle() { sinfo -h -n "$host" -o '%T' | grep -qx 'idle'; }
if ! wait_for 60 node_idle; then
  scontrol show node "$host" >&2 || true
  show_log "$sdir/log/slurmd.out"; show_log "$sdir/log/slurmd.log"; show_log "$sdir/log/slurmctld.log"
  die "node $host did not become idle within 60 s"
fi
sinfo -h -N -o '    node %N  partition=%P  state=%T  cpus=%c  memory=%mMB'

# --- 3. the plan ---------------------------------------------------------------------------
if [ ! -f "$work/data/300w/synth-truth.jsonl" ]; then
  say "generating $faces synthetic 300W faces in $work/data/300w"
  rm -rf "$work/data/300w"
  "$wingflow" synth "$work/data/300w" --format 300w --count "$faces" --seed 1
fi
say "writing $work/wingflow.toml (target_shard_bytes=$shard_bytes, training off)"
rm -rf "$work/wingflow.toml" "$work/reference.toml" "$work/pipeline" "$work/reference" "$work/logs"
(cd "$work" && "$wingflow" init data --output pipeline \
  --set "balance.target_shard_bytes=$shard_bytes" --set train.enabled=false)
# The one-process reference: the same configuration with another output root.
grep -q '^output = "pipeline"$' "$work/wingflow.toml" || die "wingflow.toml has no 'output = \"pipeline\"' line to rewrite"
sed 's/^output = "pipeline"$/output = "reference"/' "$work/wingflow.toml" >"$work/reference.toml"
say "wingflow run --until balance"
"$wingflow" run --config "$work/wingflow.toml" --until balance

# --- 4. the array job ----------------------------------------------------------------------
mkdir -p "$work/logs"
say "sbatch --array=0-$((tasks - 1)) --cpus-per-task=1 --mem=$task_mem deploy/slurm-render.sh"
slurm_started=$SECONDS
jobid="$(env "$marker" PATH="$bin:$PATH" sbatch --parsable --array="0-$((tasks - 1))" --cpus-per-task=1 --mem="$task_mem" \
  --time=00:30:00 --chdir="$work" --output="$work/logs/render-%A_%a.log" --export=ALL \
  "$repo/deploy/slurm-render.sh" "$work/wingflow.toml")" || die "sbatch refused the job"
jobid="${jobid%%;*}"
echo "    job $jobid submitted"
deadline=$((SECONDS + job_timeout))
while [ -n "$(squeue -h -j "$jobid" 2>/dev/null)" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { squeue -j "$jobid" >&2; die "job $jobid still queued or running after $job_timeout s"; }
  sleep 2
done
slurm_secs=$((SECONDS - slurm_started))

# Every task's final state and exit code, from slurmctld (MinJobAge keeps them).
states="$(scontrol show job "$jobid" -o)" || die "scontrol knows no job $jobid"
failed=0
ntasks=0
echo "    task  state      exit  log"
while read -r line; do
  [ -n "$line" ] || continue
  task="$(sed -n 's/.*ArrayTaskId=\([0-9]*\).*/\1/p' <<<"$line")"
  state="$(sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' <<<"$line")"
  code="$(sed -n 's/.* ExitCode=\([0-9:]*\).*/\1/p' <<<"$line")"
  log="$work/logs/render-${jobid}_${task}.log"
  ntasks=$((ntasks + 1))
  printf '    %-4s  %-9s  %-4s  %s\n' "$task" "$state" "$code" "$log"
  if [ "$state" != "COMPLETED" ] || [ "$code" != "0:0" ]; then
    failed=$((failed + 1))
    if [ -f "$log" ]; then show_log "$log"; else echo "slurm-check: task $task wrote no log ($log)" >&2; fi
  fi
done <<<"$states"
[ "$ntasks" -eq "$tasks" ] || { echo "$states" >&2; die "expected $tasks array tasks, slurmctld reports $ntasks"; }
[ "$failed" -eq 0 ] || { show_log "$sdir/log/slurmd.log"; die "$failed of $tasks array task(s) failed"; }
for ((t = 0; t < tasks; t++)); do
  grep -h "^worker $t/$tasks:" "$work/logs/render-${jobid}_${t}.log" | sed 's/^/    /' \
    || die "task $t's log does not say what it rendered: $work/logs/render-${jobid}_${t}.log"
done

# --- 5. index ------------------------------------------------------------------------------
say "wingflow index"
"$wingflow" index --config "$work/wingflow.toml"

# The next plain run must adopt every shard the array tasks wrote and render none again.
say "wingflow run --until render (must find every shard fresh)"
adopt="$("$wingflow" run --config "$work/wingflow.toml" --until render 2>&1)" || { echo "$adopt" >&2; die "wingflow run after index failed"; }
echo "$adopt" | grep '^render ' | sed 's/^/    /'
echo "$adopt" | grep -q '^render .* shards_written=0 ' \
  || { echo "$adopt" >&2; die "the run after index rendered shards again: the array tasks' shards were not adopted"; }

# --- 6. one-process reference and byte-for-byte comparison -----------------------------------
say "rendering the same plan in one process into $work/reference"
ref_started=$SECONDS
"$wingflow" run --config "$work/reference.toml" --until render
ref_secs=$((SECONDS - ref_started))

say "comparing every shard file"
(cd "$work/pipeline/shards" && find . -type f | LC_ALL=C sort) >"$work/logs/files-slurm.txt"
(cd "$work/reference/shards" && find . -type f | LC_ALL=C sort) >"$work/logs/files-reference.txt"
if ! diff -u "$work/logs/files-reference.txt" "$work/logs/files-slurm.txt" >&2; then
  die "the Slurm render and the one-process render wrote different sets of files (diff above: - one process, + Slurm)"
fi
nfiles=0
nshards=0
differ=0
while read -r f; do
  nfiles=$((nfiles + 1))
  case "$f" in *.safetensors) nshards=$((nshards + 1));; esac
  if ! cmp -s "$work/reference/shards/$f" "$work/pipeline/shards/$f"; then
    echo "    DIFFERS: shards/${f#./}" >&2
    differ=$((differ + 1))
  fi
done <"$work/logs/files-slurm.txt"
[ "$nshards" -gt 0 ] || die "no shards were written"
[ "$differ" -eq 0 ] || die "$differ of $nfiles file(s) differ between the Slurm render and the one-process render"
sets="$(cd "$work/pipeline/shards" && for d in */*/; do printf " %s=%s" "${d%/}" "$(ls "$d" | grep -c '\.safetensors$')"; done)"

echo
echo "slurm-check: OK"
echo "  cluster      one node ($host, CPUs=2, RealMemory=${node_mem}M), Slurm $(sinfo -V | awk '{print $2}')"
echo "  array job    $jobid: $tasks task(s), all COMPLETED with exit 0 (--cpus-per-task=1 --mem=$task_mem), ${slurm_secs}s"
echo "  one process  ${ref_secs}s"
echo "  compared     $nshards shards ($nfiles files: shards, per-shard .json, index.json, samples.parquet), all identical"
echo "  shards/set  $sets"
echo "  total        $((SECONDS - started))s; work folder $work"
