// The element types of a kernel's activations when they are f32 (DType::F32).
// Not a shader of its own: the ops compile it first, before the kernel file
// (src/ops/mod.rs), and wgsl/act_f16.wgsl gives the same names for f16
// activations, so one kernel body serves both. Kernels load `act` values into
// f32 (`f32(x[i])`, `vec4<f32>(x4[q])`), compute in f32 and store `act(y)`:
// only storage changes with the precision, never the arithmetic.
//   act    an activation element (arithmetic type)
//   bits   an element that layout copies move unchanged (f32 or u32 ids alike)

alias act = f32;
alias bits = u32;
