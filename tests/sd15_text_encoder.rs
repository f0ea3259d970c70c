//! A text encoder with Stable Diffusion 1.5's real widths (CLIP ViT-L/14's text tower:
//! a 49,408 x 768 token table, 3,072-wide MLP, 12 heads; one layer instead of twelve to
//! keep the test fast) loads and encodes on any adapter. In f32 its token table is
//! 151,781,376 bytes, above the 128 MiB storage binding of lavapipe and many WebGPU-class
//! adapters, so this runs the split gather for real, not at a limit forced by a test.
//!
//! The weights are seeded random values rounded to f16, written once as an f32 file and
//! once as an f16 file: the same numbers, so every precision path must give the same
//! bytes (f16 storage unpacks exactly; accumulation is f32 in every kernel). The token
//! gather is also checked against the CPU: an exact f32 add, so it must match bit for bit.

mod common;

use std::path::{Path, PathBuf};

use common::{ctx, Rng};
use easel::gpu::Context;
use easel::gpu::Tensor;
use easel::models::clip::{CLIPTextConfig, CLIPTextModel};
use easel::models::layers::{open_component, Vars};
use easel::models::Graph;
use easel::weights::WeightPrecision;
use half::f16;
use safetensors::tensor::{Dtype, TensorView};

const VOCAB: usize = 49_408;
const HIDDEN: usize = 768;
const MLP: usize = 3_072;
const POSITIONS: usize = 77;

/// SD-1.5's text_encoder/config.json with one layer (eos_token_id 2: pool at argmax).
fn config() -> String {
    format!(
        r#"{{"architectures": ["CLIPTextModel"], "vocab_size": {VOCAB}, "hidden_size": {HIDDEN},
        "intermediate_size": {MLP}, "num_hidden_layers": 1, "num_attention_heads": 12,
        "max_position_embeddings": {POSITIONS}, "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05, "projection_dim": 768, "eos_token_id": 2}}"#
    )
}

/// Every tensor of the one-layer model: (name, shape), transformers' names.
fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut out = vec![
        (
            "embeddings.token_embedding.weight".into(),
            vec![VOCAB, HIDDEN],
        ),
        (
            "embeddings.position_embedding.weight".into(),
            vec![POSITIONS, HIDDEN],
        ),
        ("final_layer_norm.weight".into(), vec![HIDDEN]),
        ("final_layer_norm.bias".into(), vec![HIDDEN]),
    ];
    let layer = "encoder.layers.0";
    for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        out.push((
            format!("{layer}.self_attn.{proj}.weight"),
            vec![HIDDEN, HIDDEN],
        ));
        out.push((format!("{layer}.self_attn.{proj}.bias"), vec![HIDDEN]));
    }
    for norm in ["layer_norm1", "layer_norm2"] {
        out.push((format!("{layer}.{norm}.weight"), vec![HIDDEN]));
        out.push((format!("{layer}.{norm}.bias"), vec![HIDDEN]));
    }
    out.push((format!("{layer}.mlp.fc1.weight"), vec![MLP, HIDDEN]));
    out.push((format!("{layer}.mlp.fc1.bias"), vec![MLP]));
    out.push((format!("{layer}.mlp.fc2.weight"), vec![HIDDEN, MLP]));
    out.push((format!("{layer}.mlp.fc2.bias"), vec![HIDDEN]));
    out.into_iter()
        .map(|(n, s)| (format!("text_model.{n}"), s))
        .collect()
}

/// Seeded values in the range of a trained CLIP's weights, rounded to f16; layer-norm
/// scales near 1 so activations keep their size through the layer.
fn values(name: &str, count: usize, rng: &mut Rng) -> Vec<f16> {
    let centre = if name.contains("norm") && name.ends_with("weight") {
        1.0
    } else {
        0.0
    };
    (0..count)
        .map(|_| {
            let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            f16::from_f64(centre + (unit - 0.5) * 0.1)
        })
        .collect()
}

/// Writes the model twice (f32 and f16 files of the same values) under a fresh folder.
fn write_models(root: &Path) -> (PathBuf, PathBuf) {
    let mut rng = Rng::new(15);
    let mut f32_bytes = Vec::new();
    let mut f16_bytes = Vec::new();
    for (name, shape) in tensors() {
        let v = values(&name, shape.iter().product(), &mut rng);
        f32_bytes.push(
            v.iter()
                .flat_map(|h| h.to_f32().to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        f16_bytes.push(v.iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>());
    }
    let dirs = (root.join("f32"), root.join("f16"));
    for (dir, dtype, data) in [
        (&dirs.0, Dtype::F32, &f32_bytes),
        (&dirs.1, Dtype::F16, &f16_bytes),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), config()).unwrap();
        let views: Vec<(String, TensorView)> = tensors()
            .into_iter()
            .zip(data)
            .map(|((name, shape), bytes)| (name, TensorView::new(dtype, shape, bytes).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    }
    dirs
}

/// Fixed ids: BOS, a few words spread over the table (the last rows included, which sit
/// in the last block of a split table), EOS, then EOS padding as SD-1.5's tokenizer pads.
fn ids() -> Vec<Vec<u32>> {
    let words = [320u32, 1_929, 25_000, 40_000, 49_200, 49_405];
    let mut row = vec![49_406];
    row.extend(words);
    row.resize(POSITIONS, 49_407);
    vec![row]
}

/// `last_hidden_state` and `pooler_output` of the folder at one weight
/// precision, on `ctx` (whose size rule puts this token table on the host
/// unless a test moved the bound).
fn encode_on(ctx: &Context, dir: &Path, precision: WeightPrecision) -> (Vec<f32>, Vec<f32>) {
    let (mut weights, config): (_, CLIPTextConfig) = open_component(dir).unwrap();
    weights.detect_prefix("text_model.");
    weights.set_precision(precision);
    let model = CLIPTextModel::new(&Vars::new(ctx, &weights), config).unwrap();
    let inputs = model.inputs_for(ctx, &ids()).unwrap();
    let mut g = Graph::new(ctx, "sd15-text");
    let out = model.forward(&mut g, &inputs).unwrap();
    g.run().unwrap();
    (
        out.last_hidden_state.to_vec(ctx).unwrap(),
        out.pooler_output.to_vec(ctx).unwrap(),
    )
}

fn encode(dir: &Path, precision: WeightPrecision) -> (Vec<f32>, Vec<f32>) {
    encode_on(ctx(), dir, precision)
}

/// The token gather alone against the CPU: table row + position row, exact in f32.
fn check_gather(dir: &Path) {
    let (weights, _): (_, CLIPTextConfig) = open_component(dir).unwrap();
    let table_name = "text_model.embeddings.token_embedding.weight";
    let pos_name = "text_model.embeddings.position_embedding.weight";
    let table = weights
        .get_weight(ctx(), table_name, &[VOCAB, HIDDEN])
        .unwrap();
    let pos = weights.get(ctx(), pos_name, &[POSITIONS, HIDDEN]).unwrap();
    let rows = ids();
    let ids = Tensor::from_u32(ctx(), "ids", &[1, POSITIONS], &rows.concat()).unwrap();
    let mut g = Graph::new(ctx(), "gather");
    let x = g.token_embedding(&ids, &table, &pos).unwrap();
    g.run().unwrap();
    let got = x.to_vec(ctx()).unwrap();
    let host_table = weights.get_f32(table_name, &[VOCAB, HIDDEN]).unwrap();
    let host_pos = weights.get_f32(pos_name, &[POSITIONS, HIDDEN]).unwrap();
    for (p, &id) in rows[0].iter().enumerate() {
        for d in 0..HIDDEN {
            let want = host_table[id as usize * HIDDEN + d] + host_pos[p * HIDDEN + d];
            assert_eq!(
                got[p * HIDDEN + d].to_bits(),
                want.to_bits(),
                "position {p}, id {id}, dim {d}"
            );
        }
    }
}

#[test]
fn sd15_text_encoder_shapes_encode_the_same_in_every_precision() {
    let root = std::env::temp_dir().join(format!("easel-sd15-text-{}", std::process::id()));
    let (f32_dir, f16_dir) = write_models(&root);
    let table_bytes = (VOCAB * HIDDEN * 4) as u64;
    let binding = ctx().limits().max_storage_buffer_binding_size;
    eprintln!("f32 token table {table_bytes} bytes; adapter binding limit {binding} bytes");

    check_gather(&f32_dir);
    assert!(
        ctx().table_on_host(table_bytes),
        "SD's token table stays on the host"
    );
    let reference = encode(&f32_dir, WeightPrecision::Auto);
    assert!(
        reference.0.iter().all(|v| v.is_finite()),
        "non-finite hidden state"
    );
    // The table on the GPU (gathered there in row blocks) gives the same bytes.
    let mut gpu_table = common::new_context();
    gpu_table.host_tables_for_tests(u64::MAX);
    let on_gpu = encode_on(&gpu_table, &f16_dir, WeightPrecision::Auto);
    for (what, dir, precision) in [
        ("f16 file", &f16_dir, WeightPrecision::Auto),
        ("f32 file --weights f16", &f32_dir, WeightPrecision::F16),
        ("f16 file --weights f32", &f16_dir, WeightPrecision::F32),
    ] {
        let got = encode(dir, precision);
        assert!(
            same(&got.0, &reference.0),
            "{what}: last_hidden_state differs from f32"
        );
        assert!(
            same(&got.1, &reference.1),
            "{what}: pooler_output differs from f32"
        );
    }
    assert!(
        same(&on_gpu.0, &reference.0),
        "GPU table: last_hidden_state differs"
    );
    assert!(
        same(&on_gpu.1, &reference.1),
        "GPU table: pooler_output differs"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}
