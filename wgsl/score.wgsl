// The check output process: rate every candidate against the prompt and pick
// the winner, entirely on the GPU.
//
// similarity: scores[k, j] = cos(image_k, text_j) for each sub-prompt j, and
//             scores[k, P] = sum_j w_j cos(image_k, text_j)   (DESIGN.md)
// pick:       the argmax over k of scores[k, P] -> choice[], and when the winner is
//             certain enough, zero the remaining steps' indirect dispatch sizes so
//             the host never waits on a readback to stop early.

struct Params {
    k: u32,
    prompts: u32,
    dim: u32,
    // Sampler step after which this round runs (recorded in choice[3] on stop).
    step: u32,
    // Stop when best score >= min_score, or best - runner-up >= min_margin
    // (either test disabled when its threshold is +inf, i.e. a huge value).
    min_score: f32,
    min_margin: f32,
    // Range [cancel_from, cancel_to) of u32 words in `args` to zero on stop.
    cancel_from: u32,
    cancel_to: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ---- similarity ----
@group(0) @binding(1) var<storage, read> image: array<f32>;   // [K, D]
@group(0) @binding(2) var<storage, read> text: array<f32>;    // [P, D]
@group(0) @binding(3) var<storage, read> weights: array<f32>; // [P]
@group(0) @binding(4) var<storage, read_write> scores: array<f32>; // [K, P + 1]

// One thread per (candidate, sub-prompt); K and P are small, D a few hundred.
@compute @workgroup_size(64)
fn similarity(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x / p.prompts;
    let j = gid.x % p.prompts;
    if (k >= p.k) { return; }
    var dot = 0.0;
    var ii = 0.0;
    var tt = 0.0;
    for (var d = 0u; d < loop_bound(p.dim, gid.x); d++) {
        let a = image[k * p.dim + d];
        let b = text[j * p.dim + d];
        dot += a * b;
        ii += a * a;
        tt += b * b;
    }
    // F.cosine_similarity's eps: max(|a||b|, 1e-8).
    scores[k * (p.prompts + 1u) + j] = dot / max(sqrt(ii * tt), 1e-8);
}

// Weighted total per candidate: a separate pass so each total sums in a fixed order.
@compute @workgroup_size(64)
fn total(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    if (k >= p.k) { return; }
    let row = k * (p.prompts + 1u);
    var sum = 0.0;
    for (var j = 0u; j < loop_bound(p.prompts, k); j++) {
        sum += weights[j] * scores[row + j];
    }
    scores[row + p.prompts] = sum;
}

// ---- pick ----
// choice: [winner, bits(best), bits(margin), stopped_at_step or 0xFFFFFFFF]
@group(0) @binding(1) var<storage, read> totals: array<f32>; // scores [K, P + 1]
@group(0) @binding(2) var<storage, read_write> choice: array<u32>;
@group(0) @binding(3) var<storage, read_write> args: array<u32>;

var<workgroup> stop: u32;

// 64 threads: thread 0 picks the winner (K is small), all threads then cancel
// the remaining dispatches in parallel. The barrier is outside any branch.
@compute @workgroup_size(64)
fn pick(@builtin(local_invocation_index) lid: u32) {
    // Once a round has stopped the run, later picks (which run directly, not
    // cancelled) leave its decision alone: their scoring passes were cancelled,
    // so the scores they would read are stale.
    if (lid == 0u && choice[3] == 0xFFFFFFFFu) {
        let stride = p.prompts + 1u;
        var best = 0u;
        var best_score = totals[p.prompts];
        var second = -3.4e38;
        for (var k = 1u; k < loop_bound(p.k, lid); k++) {
            let s = totals[k * stride + p.prompts];
            // Strictly greater: ties go to the lowest index, like torch.argmax.
            if (s > best_score) {
                second = best_score;
                best_score = s;
                best = k;
            } else if (s > second) {
                second = s;
            }
        }
        // One candidate has no runner-up: no margin to be certain about.
        let margin = select(best_score - second, 0.0, p.k == 1u);
        choice[0] = best;
        choice[1] = bitcast<u32>(best_score);
        choice[2] = bitcast<u32>(margin);
        let certain = best_score >= p.min_score || margin >= p.min_margin;
        if (certain) {
            choice[3] = p.step;
        }
        stop = u32(certain);
    }
    let cancel = workgroupUniformLoad(&stop);
    if (cancel == 1u) {
        for (var w = p.cancel_from + lid; w < loop_bound(p.cancel_to, lid); w += 64u) {
            args[w] = 0u;
        }
    }
}
