//! Measured GEMM kernel choices, per adapter and shape class: the tables
//! `easel tune` writes (src/bench/tune.rs) and `MatmulVariant::for_problem`
//! reads before its built-in rules.
//!
//! Which tile wins depends on the adapter and the problem: a 128×128 tile
//! needs enough workgroups to fill the GPU, cooperative matrices pay only where
//! there is enough depth to hide their staging. Rather than guess thresholds
//! for every GPU, easel times each variant at a model's own GEMMs and keeps
//! the winner of each class (op, outputs and depth rounded up to a power of 4).
//!
//! Tables come from two places: the file `EASEL_TUNING` names (default: the
//! user's cache, `$XDG_CACHE_HOME/easel/tuning.json` or `~/.cache/...`), then
//! the table built into easel (src/ops/tuning.json: adapters measured by the
//! project). `EASEL_TUNING=off` uses neither. A file that cannot be read is an
//! error at start-up (exit 2), never a silent change of kernels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gpu::dispatch::{Gemm, GemmOp};
use crate::gpu::policy::tuning_off;
use crate::gpu::{texture, Context};
use crate::ops::variant::MatmulVariant;

/// The environment variable naming the table file (or `off`).
pub const ENV: &str = crate::gpu::policy::TUNING_ENV;

/// The tables of adapters measured by the project, built into easel.
const BUILT_IN: &str = include_str!("tuning.json");

/// Format version of a table file; another version is refused.
pub const VERSION: u32 = 1;

/// Output and depth classes: powers of 4 between these bounds (a problem
/// beyond the last falls in it).
const OUTPUTS: (u64, u64) = (1 << 12, 1 << 24);
const DEPTHS: (u64, u64) = (1 << 6, 1 << 12);

/// A problem's class: its op, and its outputs (batch × rows × cols) and depth
/// each rounded up to a power of 4 within the bounds above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShapeClass {
    pub op: GemmOp,
    pub max_outputs: u64,
    pub max_depth: u64,
}

impl ShapeClass {
    pub fn of(g: Gemm) -> Self {
        Self {
            op: g.op,
            max_outputs: pow4_within((g.batch * g.rows * g.cols) as u64, OUTPUTS),
            max_depth: pow4_within(g.depth as u64, DEPTHS),
        }
    }

    /// Steps of 4 between two classes of one op, along both axes.
    fn distance(&self, other: &Self) -> u32 {
        let steps = |a: u64, b: u64| a.trailing_zeros().abs_diff(b.trailing_zeros()) / 2;
        steps(self.max_outputs, other.max_outputs) + steps(self.max_depth, other.max_depth)
    }
}

/// The least power of 4 at or above `n`, clamped to `bounds`.
fn pow4_within(n: u64, (lo, hi): (u64, u64)) -> u64 {
    let mut p = lo;
    while p < n && p < hi {
        p *= 4;
    }
    p
}

/// What identifies an adapter across runs and driver updates: backend, PCI
/// vendor and device ids, and the driver's name (not its version); and
/// whether kernels read layer weights through textures there
/// (`EASEL_WEIGHT_TEXTURES`), which changes what the subgroup kernels cost, so
/// a table measured under one setting is not used under the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterKey {
    pub backend: String,
    pub vendor: u32,
    pub device: u32,
    pub driver: String,
    /// Written only when true; absent (in tables written before it existed
    /// too) it reads as `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub weight_textures: bool,
}

impl AdapterKey {
    /// The key of `info` with weights read through textures or not.
    pub fn of(info: &wgpu::AdapterInfo, weight_textures: bool) -> Self {
        Self {
            backend: format!("{:?}", info.backend),
            vendor: info.vendor,
            device: info.device,
            driver: info.driver.clone(),
            weight_textures,
        }
    }

    /// The key of `ctx`'s adapter under its texture policy.
    pub fn of_context(ctx: &Context) -> Self {
        let textures = texture::wanted(ctx.weight_textures, &ctx.info.driver);
        Self::of(&ctx.info, textures)
    }
}

/// One class's winner, with each variant's summed time there (ms) as measured
/// and what the rules chose (kept unless beaten: src/bench/tune.rs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Winner {
    #[serde(flatten)]
    pub class: ShapeClass,
    pub variant: MatmulVariant,
    #[serde(default)]
    pub ms: BTreeMap<MatmulVariant, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<MatmulVariant>,
}

/// The winners on one adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterTable {
    pub adapter: AdapterKey,
    /// The adapter's name and driver version when measured (for people).
    #[serde(default)]
    pub name: String,
    /// What was measured: model folder, precision, easel version (for people).
    #[serde(default)]
    pub measured: String,
    pub winners: Vec<Winner>,
}

impl AdapterTable {
    /// The winner of `class`, else of the nearest measured class of its op
    /// (ties to the larger problem); `None` if no class of that op was measured.
    pub fn winner(&self, class: ShapeClass) -> Option<MatmulVariant> {
        self.winners
            .iter()
            .filter(|w| w.class.op == class.op)
            .min_by_key(|w| {
                let larger = std::cmp::Reverse((w.class.max_outputs, w.class.max_depth));
                (w.class.distance(&class), larger)
            })
            .map(|w| w.variant)
    }
}

/// A table file: one table per adapter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tables {
    pub version: u32,
    pub adapters: Vec<AdapterTable>,
}

impl Tables {
    pub fn parse(text: &str, source: &Path) -> Result<Self> {
        let bad = |m: String| Error::BadInput(format!("{ENV} table {}: {m}", source.display()));
        let tables: Self = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if tables.version != VERSION {
            let v = tables.version;
            return Err(bad(format!(
                "version {v}, expected {VERSION} (run `easel tune` again)"
            )));
        }
        Ok(tables)
    }

    /// The file at `path`; empty if there is none yet.
    pub fn read(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                version: VERSION,
                adapters: Vec::new(),
            }),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    pub fn for_adapter(&self, key: &AdapterKey) -> Option<&AdapterTable> {
        self.adapters.iter().find(|t| &t.adapter == key)
    }

    /// Put `table` in, replacing any earlier one of its adapter.
    pub fn insert(&mut self, table: AdapterTable) {
        self.adapters.retain(|t| t.adapter != table.adapter);
        self.adapters.push(table);
    }
}

/// The table file `EASEL_TUNING` names, else the user's cache file; `None`
/// when tables are off or there is no cache folder to default to.
pub fn path() -> Option<PathBuf> {
    if tuning_off() {
        return None;
    }
    match std::env::var_os(ENV) {
        Some(v) if !v.is_empty() => return Some(PathBuf::from(v)),
        _ => {}
    }
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
        .or_else(|| var("LOCALAPPDATA"))?;
    Some(cache.join("easel").join("tuning.json"))
}

/// Every table in use: the file's, then the built-in ones (a file's table
/// of an adapter wins over the built-in one). Read once per process.
pub fn tables() -> Result<&'static Tables> {
    static LOADED: OnceLock<std::result::Result<Tables, String>> = OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        if tuning_off() {
            return Ok(Tables::default());
        }
        let mut tables = built_in().expect("the built-in table parses (the_built_in_tables_parse)");
        if let Some(path) = path() {
            let file = Tables::read(&path).map_err(|e| e.to_string())?;
            file.adapters.into_iter().for_each(|t| tables.insert(t));
        }
        Ok(tables)
    });
    loaded.as_ref().map_err(|m| Error::BadInput(m.clone()))
}

/// The built-in tables alone (src/ops/tuning.json).
pub fn built_in() -> Result<Tables> {
    Tables::parse(BUILT_IN, Path::new("src/ops/tuning.json"))
}

/// Where this adapter's table (for weights read through textures or not)
/// comes from, for `easel devices`: the file's (`N classes, FILE`), the
/// built-in one, or none.
pub fn describe(info: &wgpu::AdapterInfo, weight_textures: bool) -> Result<String> {
    if tuning_off() {
        return Ok(format!("off ({ENV}=off)"));
    }
    let key = AdapterKey::of(info, weight_textures);
    let classes = |t: &AdapterTable| format!("{} classes", t.winners.len());
    if let Some(path) = path() {
        if let Some(t) = Tables::read(&path)?.for_adapter(&key) {
            return Ok(format!("{}, {}", classes(t), path.display()));
        }
    }
    Ok(match built_in()?.for_adapter(&key) {
        Some(t) => format!("{}, built in", classes(t)),
        None => "none (`easel tune` measures them)".into(),
    })
}

/// The measured winner for `gemm` on this adapter, if its table has one.
pub(crate) fn winner(ctx: &Context, gemm: Gemm) -> Option<MatmulVariant> {
    if !ctx.tuned {
        return None;
    }
    let table = tables().ok()?.for_adapter(&AdapterKey::of_context(ctx))?;
    table.winner(ShapeClass::of(gemm))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemm(op: GemmOp, outputs: usize, depth: usize) -> Gemm {
        Gemm {
            op,
            batch: 1,
            rows: 1,
            cols: outputs,
            depth,
        }
    }

    #[test]
    fn classes_round_up_to_powers_of_4_within_bounds() {
        let c = ShapeClass::of(gemm(GemmOp::Matmul, 5000, 65));
        assert_eq!((c.max_outputs, c.max_depth), (16384, 256));
        let tiny = ShapeClass::of(gemm(GemmOp::Conv2d, 1, 1));
        assert_eq!((tiny.max_outputs, tiny.max_depth), (4096, 64));
        let huge = ShapeClass::of(gemm(GemmOp::Conv2d, 1 << 30, 1 << 20));
        assert_eq!((huge.max_outputs, huge.max_depth), (1 << 24, 1 << 12));
        assert_eq!(
            ShapeClass::of(gemm(GemmOp::Matmul, 4096, 64)).max_outputs,
            4096
        );
    }

    #[test]
    fn an_unmeasured_class_takes_its_nearest_neighbour_of_the_same_op() {
        let class = |op, outputs, depth| ShapeClass::of(gemm(op, outputs, depth));
        let win = |c, variant| Winner {
            class: c,
            variant,
            ms: BTreeMap::new(),
            rules: None,
        };
        let table = AdapterTable {
            adapter: AdapterKey {
                backend: "Vulkan".into(),
                vendor: 1,
                device: 2,
                driver: "d".into(),
                weight_textures: false,
            },
            name: String::new(),
            measured: String::new(),
            winners: vec![
                win(class(GemmOp::Matmul, 4096, 64), MatmulVariant::Gpu),
                win(class(GemmOp::Matmul, 1 << 20, 1024), MatmulVariant::GpuWide),
            ],
        };
        let pick = |outputs, depth| table.winner(class(GemmOp::Matmul, outputs, depth));
        assert_eq!(pick(4096, 64), Some(MatmulVariant::Gpu));
        assert_eq!(pick(1 << 22, 4096), Some(MatmulVariant::GpuWide));
        assert_eq!(pick(16384, 64), Some(MatmulVariant::Gpu));
        // Three steps from each: the tie goes to the larger problem's winner.
        assert_eq!(pick(1 << 16, 64 << 2), Some(MatmulVariant::GpuWide));
        assert_eq!(table.winner(class(GemmOp::Conv2d, 4096, 64)), None);
    }

    /// A table holds for the texture setting it was measured under; a key
    /// without the field (older files, GPUs) reads as textures off.
    #[test]
    fn a_table_holds_for_its_texture_setting() {
        let key = |textures| AdapterKey {
            backend: "Vulkan".into(),
            vendor: 1,
            device: 2,
            driver: "llvmpipe".into(),
            weight_textures: textures,
        };
        let old = r#"{"version": 1, "adapters": [{"adapter":
            {"backend": "Vulkan", "vendor": 1, "device": 2, "driver": "llvmpipe"},
            "winners": [{"op": "matmul", "max_outputs": 4096, "max_depth": 64, "variant": "Cpu"}]}]}"#;
        let tables = Tables::parse(old, Path::new("old.json")).unwrap();
        assert!(tables.for_adapter(&key(false)).is_some());
        assert!(tables.for_adapter(&key(true)).is_none());
        let written = serde_json::to_value(key(false)).unwrap();
        assert!(written.get("weight_textures").is_none(), "{written}");
        assert_eq!(
            serde_json::to_value(key(true)).unwrap()["weight_textures"],
            true
        );
    }

    #[test]
    fn the_built_in_tables_parse() {
        let tables = built_in().unwrap();
        assert!(tables.adapters.iter().all(|t| !t.winners.is_empty()));
    }
}
