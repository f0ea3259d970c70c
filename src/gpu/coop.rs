//! Cooperative matrices (tensor cores, Apple's simdgroup matrices): which
//! configuration easel's GEMM tile (wgsl/gemm_coop.wgsl) can use on an adapter.
//!
//! WGSL spells only square fragments (`coop_mat8x8`, `coop_mat16x16`), so an
//! adapter qualifies with an `NxNxN F16->F32` configuration for N = 16 or 8 (16
//! preferred: NVIDIA, AMD RDNA3; 8 on Apple and Mesa's lavapipe), one fixed
//! subgroup size, and the workgroup memory the tile stages through.

/// Workgroup memory of wgsl/gemm_coop.wgsl: two f16 slabs of A (128 rows × 32)
/// and of B (32 × 64 columns), and a 2048-float scratch.
pub const WORKGROUP_BYTES: u32 = 2 * (2 * 4096 + 2 * 2048) + 2048 * 4;

/// Threads per workgroup of the GEMM tile (16×16, as wgsl/gemm_tile.wgsl).
const THREADS: u32 = 256;
/// Columns of the output tile, and the most rows it may have.
pub const COLS: u32 = 64;
const MAX_ROWS: u32 = 128;
/// Floats of the shader's scratch: one FRAG×FRAG fragment per subgroup.
const SCRATCH: u32 = 2048;

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
            .find(|c| c.rows(1).is_some())
            .ok_or_else(|| {
                format!(
                    "no 16x16x16 or 8x8x8 F16->F32 configuration the tile fits with \
                     {}-lane subgroups",
                    info.subgroup_min_size
                )
            })
    }

    /// Rows of the output tile (wgsl/gemm_coop.wgsl's `coop_rows`) when each
    /// subgroup owns `block` × 2 fragments (`BLOCK_ROWS`: 1 or 2). `None` where
    /// the pairing does not make whole rows of fragments within the shader's arrays.
    pub fn rows(&self, block: u32) -> Option<u32> {
        if self.subgroup == 0 || !THREADS.is_multiple_of(self.subgroup) {
            return None;
        }
        let subgroups = THREADS / self.subgroup;
        let fragments = subgroups * 2 * block;
        let per_row = COLS / self.frag;
        let rows = fragments / per_row * self.frag;
        let fits = fragments.is_multiple_of(per_row)
            && rows > 0
            && rows <= MAX_ROWS
            && subgroups * self.frag * self.frag <= SCRATCH;
        fits.then_some(rows)
    }

    /// `BLOCK_ROWS` and the tile's rows for an output of `m` rows: 2×2
    /// fragments per subgroup (each fragment load feeds two products; on an
    /// H200, 2×2 blocks ran a plain cooperative GEMM at twice the rate of one
    /// fragment per subgroup) where the output fills the taller tile, else 1×2.
    pub fn block_for(&self, m: usize) -> (u32, u32) {
        match self.rows(2) {
            Some(rows) if m >= rows as usize => (2, rows),
            _ => (1, self.rows(1).unwrap_or(COLS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_rows_follow_fragment_and_subgroup() {
        let rows = |frag, subgroup, block| Coop { frag, subgroup }.rows(block);
        assert_eq!(rows(16, 32, 1), Some(64), "NVIDIA, AMD wave32");
        assert_eq!(rows(16, 32, 2), Some(128));
        assert_eq!(rows(8, 8, 1), Some(64), "lavapipe");
        assert_eq!(rows(8, 8, 2), Some(128));
        assert_eq!(rows(8, 32, 1), Some(16), "Apple");
        assert_eq!(rows(8, 32, 2), Some(32));
        assert_eq!(rows(16, 64, 1), Some(32), "AMD wave64");
        assert_eq!(
            rows(16, 16, 1),
            None,
            "16 subgroups of 16x16: more than the scratch"
        );
        assert_eq!(rows(16, 8, 1), None);
    }

    #[test]
    fn tall_outputs_get_the_taller_tile() {
        let nvidia = Coop {
            frag: 16,
            subgroup: 32,
        };
        assert_eq!(
            nvidia.block_for(8192),
            (2, 128),
            "SD-1.5's 64x64 latents, batch 2"
        );
        assert_eq!(nvidia.block_for(127), (1, 64));
        assert_eq!(nvidia.block_for(2), (1, 64), "the time embedding");
    }
}
