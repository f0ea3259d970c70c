#!/bin/bash
# A one-machine Slurm (Debian/Ubuntu slurm-wlm + munge: slurmctld and slurmd on this
# host) that runs examples/slurm/easel-array.sbatch over a small job file and checks
# that every job ended with exactly one PNG. For a throwaway machine or container, as
# root: it installs packages and writes /etc/slurm/slurm.conf.
#
#   bash examples/slurm/local-test.sh [TASKS] [JOBS]     (defaults: 4 array tasks, 16 jobs)
#
# Not run in CI. UNTESTED as committed: written against Debian bookworm's slurm-wlm
# 22.05 (config keys also valid in 23.x/24.x). Expect ~2 minutes for the packages and
# well under a minute for the batch (the tiny test pipeline, 16x16, 2 steps).
set -euo pipefail
cd "$(dirname "$0")/../.."
TASKS=${1:-4}
NJOBS=${2:-16}

if ! command -v slurmctld >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slurm-wlm munge python3
fi
cargo build --release
EASEL=$PWD/target/release/easel

host=$(hostname -s)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat >/etc/slurm/slurm.conf <<CONF
ClusterName=easel-local
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups: works inside containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

# munge needs a key; the package makes one, a bare container may not have it.
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 30); do
    sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed)' && break
    sleep 1
done
sinfo

# The tiny pipeline the tests use, with the default tokenizer.
work=$(mktemp -d /tmp/easel-slurm.XXXXXX)
cp -r tests/golden/pipeline "$work/model"
cp -r weights/easel-emoji/tokenizer "$work/model/tokenizer"
for i in $(seq 0 $((NJOBS - 1))); do
    echo "{\"prompt\": \"red apple\", \"seed\": $i, \"out\": \"job-$i\"}"
done >"$work/jobs.jsonl"

start=$(date +%s)
cd "$work"
EASEL=$EASEL EASEL_MODEL=$work/model \
    EASEL_ARGS="--size 16x16 --steps 2 --candidates 2 --upscale 1" \
    sbatch --wait --array=0-$((TASKS - 1)) "$OLDPWD/examples/slurm/easel-array.sbatch" \
    "$work/jobs.jsonl" "$work/renders"
echo "array of $TASKS tasks over $NJOBS jobs: $(($(date +%s) - start)) s"
cat easel-*.log

pngs=$(find renders -name 'job-*.png' | wc -l)
done_lines=$(grep -c '"status":"done"' renders/manifest.jsonl)
tmps=$(find renders -name '*.tmp' | wc -l)
echo "PNGs $pngs, manifest done lines $done_lines, temp files $tmps (want $NJOBS, $NJOBS, 0)"
python3 - "$NJOBS" renders/manifest.jsonl <<'PY'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
seen = [json.loads(l)["index"] for l in open(path) if l.strip()]
assert sorted(seen) == list(range(n)), f"each job exactly once: {sorted(seen)}"
PY
[[ $pngs -eq $NJOBS && $done_lines -eq $NJOBS && $tmps -eq 0 ]]
echo "ok: $work"
