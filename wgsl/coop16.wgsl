// Cooperative-matrix fragments of 16×16×16, f16 operands, f32 accumulators: the
// prefix of the `*_coop16` shaders (src/ops/mod.rs), before wgsl/gemm_coop.wgsl,
// which is written against these names. It comes first because `enable` must.
// Chosen where the adapter advertises 16x16x16 F16->F32 (src/gpu/coop.rs).
enable f16;
enable wgpu_cooperative_matrix;

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
const FRAG: u32 = 16u;
