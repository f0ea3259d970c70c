#!/bin/bash
# A one-machine Slurm (Debian/Ubuntu slurm-wlm + munge: slurmctld and slurmd on this
# host) that submits examples/slurm/easel-array.sbatch as an array over a small job
# file, checks that every job ended with exactly one PNG and one manifest line, then
# submits the same command again and checks that it only skipped (resume).
#
#   sudo bash examples/slurm/local-test.sh [TASKS] [JOBS]   (defaults: 4 array tasks, 16 jobs)
#
# As root: it installs slurm-wlm and munge with apt-get if slurmctld, slurmd, sbatch or
# munged is missing. Everything else is private to a temporary folder: slurm.conf
# (through SLURM_CONF; /etc/slurm is not touched, so the packages' services stay
# off), state, spool and logs, and its own ports (EASEL_SLURM_PORT, default 6917, and
# the next one). It starts slurmctld and slurmd, and munged if none is running, and
# stops exactly those on exit, success or not, so it can be run again at once. The
# folder is removed on success (kept with EASEL_SLURM_KEEP=1) and kept, with the Slurm
# logs, on failure.
# EASEL=path/to/easel skips `cargo build --release`.
#
# Tested with Debian bookworm's slurm-wlm 22.05.8 and munge 0.5.15 (not tried with
# Ubuntu's 23.11 or later) in a 2-core VM without GPU (lavapipe), measured:
#   apt-get update + install of the 9 packages       9.4 s
#   slurmctld and slurmd up, node idle                1.0-1.6 s
#   array of 4 tasks over 16 jobs (tiny test pipeline, 16x16, 2 steps)   12-15 s
#   the same array resubmitted (every job skipped)    4-11 s
#   whole script: 32 s with the install, 25 s without
# Each task is 1-2 s of easel; the rest is Slurm starting the tasks one at a time
# (--cpus-per-task=2 fills the node), a few seconds apart. tests/slurm.rs runs it when
# EASEL_TEST_SLURM=1 (CI sets it when it runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
TASKS=${1:-4}
NJOBS=${2:-16}
PORT=${EASEL_SLURM_PORT:-6917}

if [[ $(id -u) -ne 0 ]]; then
    echo "local-test: run as root (it may install packages; slurmd must be root)" >&2
    exit 2
fi
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
start_all=$(now)

missing=0
for tool in slurmctld slurmd sbatch munged; do
    command -v "$tool" >/dev/null || missing=1
done
if [[ $missing -eq 1 ]]; then
    t=$(now)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    echo "local-test: installed slurm-wlm and munge in $(since "$t")"
fi
echo "local-test: $(slurmd -V), $(munged -V)"

if [[ -z ${EASEL:-} ]]; then
    cargo build --release
    EASEL=$repo/target/release/easel
fi

work=$(mktemp -d -t easel-slurm.XXXXXX)
jobid="" last="" ctld_pid="" slurmd_pid="" munged_started=0
cleanup() {
    local rc=$?
    set +e
    if [[ -n $jobid ]]; then
        scancel "$jobid" 2>/dev/null
        for _ in $(seq 20); do
            [[ -z $(squeue -h -j "$jobid" -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    for pid in $slurmd_pid $ctld_pid; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in $slurmd_pid $ctld_pid; do
        for _ in $(seq 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [[ $munged_started -eq 1 ]]; then
        munged --stop >/dev/null 2>&1
    fi
    if [[ $rc -eq 0 && -z ${EASEL_SLURM_KEEP:-} ]]; then
        rm -rf "$work"
    elif [[ $rc -eq 0 ]]; then
        echo "local-test: kept $work"
    else
        echo "local-test: FAILED ($rc); kept $work (Slurm logs in $work/slurm)" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# munge: the system's daemon if one answers (the package may have started it), else
# ours with the package's key (made here if a bare system lacks it).
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
    runuser -u munge -- munged
    munged_started=1
    munge -n </dev/null | unmunge >/dev/null
fi

# Node line as slurmd sees this machine (a mismatch would drain the node); addresses
# are 127.0.0.1 so the host name need not resolve.
node=$(slurmd -C | head -n1)
host=${node#NodeName=}
host=${host%% *}
mkdir -p "$work/slurm/state" "$work/slurm/spool"
export SLURM_CONF=$work/slurm/slurm.conf
cat >"$SLURM_CONF" <<CONF
ClusterName=easel-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/slurm/state
SlurmdSpoolDir=$work/slurm/spool
SlurmctldPidFile=$work/slurm/slurmctld.pid
SlurmdPidFile=$work/slurm/slurmd.pid
SlurmctldLogFile=$work/slurm/slurmctld.log
SlurmdLogFile=$work/slurm/slurmd.log
# No cgroups: works in containers and VMs without systemd's cgroup delegation.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

t=$(now)
slurmctld -D -i >"$work/slurm/slurmctld.out" 2>&1 &
ctld_pid=$!
slurmd -D -N "$host" >"$work/slurm/slurmd.out" 2>&1 &
slurmd_pid=$!
state=""
for _ in $(seq 120); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [[ $state == idle || $state == mixed ]] && break
    kill -0 "$ctld_pid" 2>/dev/null && kill -0 "$slurmd_pid" 2>/dev/null ||
        { echo "local-test: a Slurm daemon exited; see $work/slurm/*.out" >&2; exit 1; }
    sleep 0.5
done
if [[ $state != idle && $state != mixed ]]; then
    echo "local-test: node $host is '${state:-unknown}', not idle:" >&2
    scontrol show node "$host" >&2 || true
    exit 1
fi
echo "local-test: slurmctld and slurmd up in $(since "$t")"
sinfo

# The tiny pipeline the tests use (tests/common/files.rs), with CLIP's tokenizer.
cp -r tests/golden/pipeline "$work/model"
cp -r weights/easel-emoji/clip_tokenizer "$work/model/tokenizer"
for i in $(seq 0 $((NJOBS - 1))); do
    echo "{\"prompt\": \"red apple\", \"seed\": $i, \"out\": \"job-$i\"}"
done >"$work/jobs.jsonl"

# Submit the example script as it is, with its documented variables; wait for the
# array to leave the queue (polling: `sbatch --wait` polls at 2, 10, 42 s) and
# require every task COMPLETED with exit code 0.
submit() {
    local t out
    t=$(now)
    out=$(cd "$work" && EASEL=$EASEL EASEL_MODEL=$work/model \
        EASEL_ARGS="--size 16x16 --steps 2 --candidates 2 --upscale 1" \
        sbatch --parsable --array=0-$((TASKS - 1)) "$repo/examples/slurm/easel-array.sbatch" \
        "$work/jobs.jsonl" "$work/renders")
    jobid=${out%%;*}
    for _ in $(seq 1200); do
        [[ -z $(squeue -h -j "$jobid" -o %i 2>/dev/null || true) ]] && break
        sleep 0.5
    done
    echo "local-test: array $jobid of $TASKS tasks over $NJOBS jobs: $(since "$t")"
    cat "$work"/easel-"$jobid"_*.log
    local tasks
    tasks=$(scontrol -o show job "$jobid")
    local ok
    ok=$(grep -c 'JobState=COMPLETED .*ExitCode=0:0' <<<"$tasks" || true)
    if [[ $ok -ne $TASKS ]]; then
        echo "local-test: $ok of $TASKS tasks completed with exit code 0:" >&2
        grep -o 'JobId=[^ ]* .*JobState=[^ ]*\|ExitCode=[^ ]*' <<<"$tasks" >&2 || true
        exit 1
    fi
    last=$jobid
    jobid=""
}

submit
pngs=$(find "$work/renders" -name 'job-*.png' | wc -l)
tmps=$(find "$work/renders" -name '.*.tmp' | wc -l)
manifest=$(cat "$work/renders/manifest.jsonl")
done_lines=$(grep -c '"status":"done"' <<<"$manifest" || true)
indices=$(grep -o '"index":[0-9]*' <<<"$manifest" | cut -d: -f2 | sort -n | tr '\n' ' ')
echo "local-test: PNGs $pngs, manifest done lines $done_lines, temp files $tmps (want $NJOBS, $NJOBS, 0)"
[[ $pngs -eq $NJOBS && $done_lines -eq $NJOBS && $tmps -eq 0 ]] || exit 1
[[ $indices == "$(seq 0 $((NJOBS - 1)) | tr '\n' ' ')" ]] ||
    { echo "local-test: want each job exactly once in the manifest, got: $indices" >&2; exit 1; }

# Resubmitting the same command resumes: every job is skipped, the manifest is unchanged.
submit
skipped=$(cat "$work"/easel-"$last"_*.log | grep -c ': 0 done, [0-9]* skipped, 0 failed' || true)
[[ $skipped -eq $TASKS && $(cat "$work/renders/manifest.jsonl") == "$manifest" ]] ||
    { echo "local-test: the resubmitted array did work again" >&2; exit 1; }
echo "local-test: ok in $(since "$start_all")"
