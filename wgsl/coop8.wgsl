// Cooperative-matrix fragments of 8×8×8, f16 operands, f32 accumulators: the
// prefix of the `*_coop8` shaders (src/ops/mod.rs), before wgsl/gemm_coop.wgsl,
// which is written against these names. It comes first because `enable` must.
// Chosen where the adapter advertises 8x8x8 F16->F32 (src/gpu/coop.rs).
enable f16;
enable wgpu_cooperative_matrix;

alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;
const FRAG: u32 = 8u;
