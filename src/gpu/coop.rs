//! Cooperative matrices (tensor cores, Apple's simdgroup matrices): which
//! configuration easel's GEMM tile (wgsl/gemm_coop.wgsl) can use on an adapter.
//!
//! WGSL spells only square fragments (`coop_mat8x8`, `coop_mat16x16`), so an
//! adapter qualifies with an `NxNxN F16->F32` configuration for N = 16 or 8 (16
//! preferred: NVIDIA, AMD RDNA3; 8 on Apple and Mesa's lavapipe), one fixed
//! subgroup size, and the workgroup memory the tile stages through.

/// Workgroup memory of wgsl/gemm_coop.wgsl: two f16 slabs of A and of B
/// (4096 halves each) and a 2048-float scratch.
pub const WORKGROUP_BYTES: u32 = 2 * 4096 * 2 + 2048 * 4;

/// Threads per workgroup of the GEMM tile (16×16, as wgsl/gemm_tile.wgsl).
const THREADS: u32 = 256;
/// Columns of the output tile, and the most rows it may have.
pub const COLS: u32 = 64;
const MAX_ROWS: u32 = 64;

/// A usable configuration: fragment side and the adapter's subgroup size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coop {
    /// `FRAG`: 8 or 16.
    pub frag: u32,
    /// Lanes per subgroup (`SUBGROUP_SIZE` of the shader).
    pub subgroup: u32,
}

impl Coop {
    /// The adapter's best configuration, or `None` with the reason.
    pub fn for_adapter(
        adapter: &wgpu::Adapter,
        limits: &wgpu::Limits,
    ) -> std::result::Result<Self, String> {
        let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        if !adapter.features().contains(needed) {
            return Err("no cooperative matrices".into());
        }
        let info = adapter.get_info();
        if info.subgroup_min_size != info.subgroup_max_size {
            return Err(format!(
                "subgroup size varies ({}..{})",
                info.subgroup_min_size, info.subgroup_max_size
            ));
        }
        if limits.max_compute_workgroup_storage_size < WORKGROUP_BYTES {
            return Err(format!(
                "{} bytes of workgroup memory, the tile needs {WORKGROUP_BYTES}",
                limits.max_compute_workgroup_storage_size
            ));
        }
        let props = adapter.cooperative_matrix_properties();
        let offered = |n: u32| {
            props.iter().any(|p| {
                (p.m_size, p.n_size, p.k_size) == (n, n, n)
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
            })
        };
        [16, 8]
            .into_iter()
            .filter(|&n| offered(n))
            .map(|frag| Self {
                frag,
                subgroup: info.subgroup_min_size,
            })
            .find(|c| c.rows().is_some())
            .ok_or_else(|| {
                format!(
                    "no 16x16x16 or 8x8x8 F16->F32 configuration the tile fits with \
                     {}-lane subgroups",
                    info.subgroup_min_size
                )
            })
    }

    /// Rows of the output tile (wgsl/gemm_coop.wgsl's `coop_rows`): each
    /// subgroup owns two fragments side by side. `None` where the pairing does
    /// not make whole rows of fragments within the shader's arrays.
    pub fn rows(&self) -> Option<u32> {
        if self.subgroup == 0 || !THREADS.is_multiple_of(self.subgroup) {
            return None;
        }
        let fragments = THREADS / self.subgroup * 2;
        let per_row = COLS / self.frag;
        let rows = fragments / per_row * self.frag;
        let fits = fragments.is_multiple_of(per_row) && rows > 0 && rows <= MAX_ROWS;
        fits.then_some(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_rows_follow_fragment_and_subgroup() {
        let rows = |frag, subgroup| Coop { frag, subgroup }.rows();
        assert_eq!(rows(16, 32), Some(64), "NVIDIA, AMD wave32");
        assert_eq!(rows(8, 8), Some(64), "lavapipe");
        assert_eq!(rows(8, 32), Some(16), "Apple");
        assert_eq!(rows(16, 64), Some(32), "AMD wave64");
        assert_eq!(rows(16, 16), None, "128 rows: more than the arrays hold");
        assert_eq!(rows(16, 8), None);
    }
}
