#!/usr/bin/env bash
# Images/hour of `easel batch` against one `easel` process per job, on the same jobs.
#
#   bash examples/farm-throughput.sh [JOBS [SINGLES [STEPS]]]
#   bash examples/farm-throughput.sh 100 20       # the default model's defaults
#   bash examples/farm-throughput.sh 100 100 8    # shorter jobs: the overhead shows more
#
# Makes JOBS jobs (prompts cycled from a fixed list, seed = index), renders them with
# one `easel batch` (model loaded once, one plan reused while the shape stays), then
# the first SINGLES of them with a fresh `easel` process each (adapter, model, pipelines
# and plan made every time), and prints both rates and their ratio. Uses
# target/release/easel (build it first); writes under a temporary folder it removes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

jobs=${1:-100}
singles=${2:-20}
steps=${3:-}
easel=target/release/easel
[ -x "$easel" ] || { echo "farm-throughput: build first (cargo build --release)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

prompts=("red apple" "cat:: hat::" "a green tree" "blue heart" "smiling face with sunglasses"
  "pizza" "rocket" "dog face" "sun behind cloud" "birthday cake")
: >"$work/jobs.jsonl"
for ((i = 0; i < jobs; i++)); do
  p=${prompts[i % ${#prompts[@]}]}
  printf '{"prompt": "%s", "seed": %d%s}\n' "$p" "$i" "${steps:+, \"steps\": $steps}" >>"$work/jobs.jsonl"
done

now() { date +%s.%N; }
t0=$(now)
"$easel" batch "$work/jobs.jsonl" --out "$work/batch" -q
t1=$(now)
for ((i = 0; i < singles; i++)); do
  args=(--seed "$i" -q -o "$work/single-$i.png")
  [ -n "$steps" ] && args+=(--steps "$steps")
  "$easel" "${prompts[i % ${#prompts[@]}]}" "${args[@]}"
done
t2=$(now)

awk -v n="$jobs" -v s="$singles" -v t0="$t0" -v t1="$t1" -v t2="$t2" 'BEGIN {
  b = t1 - t0; o = t2 - t1
  printf "batch:   %d jobs in %.1f s: %.0f images/hour (%.2f s/image)\n", n, b, 3600 * n / b, b / n
  printf "singles: %d jobs in %.1f s: %.0f images/hour (%.2f s/image)\n", s, o, 3600 * s / o, o / s
  printf "batch / singles: %.2fx images/hour\n", (n / b) / (s / o)
  printf "{\"jobs\": %d, \"batch_s\": %.2f, \"singles\": %d, \"singles_s\": %.2f}\n", n, b, s, o
}'
