// wgsl/act_f32.wgsl's names for f16 activations (`--precision f16`): half the
// memory and bandwidth of every activation, with every sum, norm statistic and
// softmax still computed in f32 registers (values are widened on load and
// rounded once on store). Needs SHADER_F16 (16-bit storage), enabled by the
// file before it (wgsl/enable_f16.wgsl or a cooperative prefix); the op only
// picks a kernel built with it where the adapter has the feature.

alias act = f16;
alias bits = f16;
