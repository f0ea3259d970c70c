// Embeddings: diffusers' sinusoidal timestep embedding, and CLIP's input
// embeddings (token + position for text; class token, patches and position for
// vision).
//
// One thread per output element and no barriers, so one variant serves every
// adapter. CLIP's token table is read through weight_at (binding 2) from
// wgsl/weight_f32.wgsl or wgsl/weight_f16.wgsl, and may be bound in blocks of
// rows (a 49,408 × 768 f32 table is above a 128 MiB binding limit): each
// dispatch writes only the tokens whose id falls in its block. 256 threads per workgroup (the WebGPU baseline); 1-D launches wider
// than 65,535 workgroups fold into y (ops::grid_1d).

// get_timestep_embedding(flip_sin_to_cos=...): [cos | sin] instead of [sin | cos].
// Stable Diffusion 1.x uses true.
override FLIP_SIN_TO_COS: bool = false;

struct Params {
    n: u32,         // output elements
    dim: u32,       // embedding_dim, or CLIP's hidden size D
    half_dim: u32,  // timestep_embedding: embedding_dim / 2
    rows: u32,      // CLIP text: sequence length L; CLIP vision: patches per image
    scale: f32,     // timestep_embedding: multiplies the angles
    vocab: u32,     // CLIP text: rows of token_embedding (ids are clamped to it)
    row0: u32,      // CLIP text: the first row of token_embedding bound here
    block_rows: u32, // CLIP text: rows bound here
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> position_embedding: array<f32>;  // [P, D]
// Bindings 1 and 2 differ per entry point (only the ones an entry uses count).
@group(0) @binding(1) var<storage, read> timesteps: array<f32>;      // [N]
@group(0) @binding(1) var<storage, read> input_ids: array<u32>;      // [B, L]
@group(0) @binding(1) var<storage, read> patch_embeds: array<f32>;   // [B, D, NP]
// binding 2: token_embedding [block_rows, D] (weight_at), or:
@group(0) @binding(2) var<storage, read> class_embedding: array<f32>;  // [D]
@group(0) @binding(2) var<storage, read> freqs: array<f32>;            // [embedding_dim / 2]

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.y * nwg.x * 256u + gid.x;
}

// Arguments reach ~1000 rad (t * freq with t up to 999), but GPU sin/cos are
// only accurate near [-pi, pi] (Vulkan promises 2^-11 absolute there), so reduce
// first (Cody-Waite): 2*pi = A + B + C with A = 6.28125 (8 bits), so k * A is
// exact for |k| < 2^16 and x - k * A is exact (Sterbenz).
fn reduce_angle(x: f32) -> f32 {
    let k = round(x * 0.15915494309189535);
    return ((x - k * 6.28125) - k * 0.0019353071693331003) - k * 1.0253376273028358e-11;
}

// diffusers `get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos,
// downscale_freq_shift, scale, max_period)`:
//   freqs = exp(-ln(max_period) * arange(half) / (half - shift))  (host, f32 as torch)
//   emb = scale * (t * freqs);  [sin(emb), cos(emb)], flipped if asked,
//   zero-padded by one column when embedding_dim is odd.
// The frequencies come from the host because the angle t * freq (up to 1000 rad)
// magnifies any error in them: a GPU exp is a few ulp off (Vulkan allows
// 3 + 2|x|), which moved angles by ~2 ulp (1e-4 in sin) on lavapipe; rounded
// once on the host they match torch's, and t * freq is then the same f32 product.
// timesteps [N], freqs [half] -> out [N, embedding_dim].
@compute @workgroup_size(256)
fn timestep_embedding(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let j = i % p.dim;
    if (j >= 2u * p.half_dim) {
        out[i] = 0.0;
        return;
    }
    let second_half = j >= p.half_dim;
    let k = select(j, j - p.half_dim, second_half);
    let angle = reduce_angle(p.scale * (timesteps[i / p.dim] * freqs[k]));
    let use_cos = second_half != FLIP_SIN_TO_COS;
    out[i] = select(sin(angle), cos(angle), use_cos);
}

// transformers CLIPTextEmbeddings: token_embedding(input_ids) +
// position_embedding(arange(L)). input_ids [B, L] -> out [B, L, D].
// Ids come from the tokenizer; one past the vocabulary is clamped, not trusted.
// Tokens whose id is outside rows row0.. of this dispatch's block are left to
// the dispatch that binds their row.
@compute @workgroup_size(256)
fn clip_text_embeddings(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let d = i % p.dim;
    let token = i / p.dim;
    let position = token % p.rows;
    let id = min(input_ids[token], p.vocab - 1u);
    if (id < p.row0 || id - p.row0 >= p.block_rows) { return; }
    out[i] = weight_at((id - p.row0) * p.dim + d) + position_embedding[position * p.dim + d];
}

// transformers CLIPVisionEmbeddings, after the patch conv:
// cat([class_embedding, patch_embeds.flatten(2).transpose(1, 2)], dim=1)
// + position_embedding(arange(NP + 1)). patch_embeds [B, D, NP] -> out [B, NP + 1, D].
@compute @workgroup_size(256)
fn clip_vision_embeddings(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.n) { return; }
    let d = i % p.dim;
    let t = i / p.dim;
    let s = t % (p.rows + 1u);
    let b = t / (p.rows + 1u);
    var v: f32;
    if (s == 0u) {
        v = class_embedding[d];
    } else {
        v = patch_embeds[(b * p.dim + d) * p.rows + s - 1u];
    }
    out[i] = v + position_embedding[s * p.dim + d];
}
