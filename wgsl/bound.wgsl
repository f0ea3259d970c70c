// Loop bounds read from the uniform buffer, in a form the driver cannot fold.
//
// Mesa 22's lavapipe inlines the values of uniforms that bound a loop
// (`k < p.k`) into a copy of the shader when it dispatches it and, unless the
// copy's size barely changed, compiles that copy at every dispatch (13-16 ms,
// measured on a 0.4 ms launch; later Mesa keeps one copy per set of values).
// Which launches pay depends on the values, so a benchmark could time the
// recompile instead of the kernel (docs/benchmarks.md). A bound that also
// depends on an invocation id is no uniform to the driver, so nothing is
// inlined: `min(n, n | id)` is n for every id, and no compiler folds it away.
fn loop_bound(n: u32, id: u32) -> u32 {
    return min(n, n | id);
}
