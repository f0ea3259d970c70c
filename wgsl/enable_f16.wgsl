// The f16 extension, first in every shader with f16 activations that does not
// enable it already (the cooperative prefixes, wgsl/coop8.wgsl and
// wgsl/coop16.wgsl, do): `enable` must precede every declaration, and
// wgsl/act_f16.wgsl comes after such a prefix.

enable f16;
