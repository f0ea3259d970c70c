//! `weights::SafetensorsFile::open` (and `Weights::open_files`) on mutated files:
//! header length fields, the JSON, offsets, dtypes, shapes whose products overflow,
//! truncations and trailing bytes.

use easel::weights::{SafetensorsFile, Weights};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::ensure;
use crate::harness::{self, bad_input, no_panic, Layout, TempDir, Verdict};

/// The property: opening never panics and fails with a one-line exit-2 error; an
/// opened file gives every tensor's info, and converting one gives its element count
/// or a one-line exit-2 error.
pub fn check_bytes(bytes: &[u8]) -> Verdict {
    let dir = TempDir::new("safetensors");
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    let file = match no_panic("SafetensorsFile::open", || SafetensorsFile::open(&path))? {
        Err(e) => return bad_input(&e, Layout::OneLine),
        Ok(f) => f,
    };
    for name in file.names() {
        let info = file
            .info(&name)
            .ok_or_else(|| format!("listed tensor `{name}` has no info"))?;
        let numel = no_panic("TensorInfo::bytes", || (info.numel(), info.bytes()))?.0;
        match no_panic("SafetensorsFile::to_f32", || file.to_f32(&name))? {
            Err(e) => bad_input(&e, Layout::OneLine)?,
            Ok(values) => ensure!(
                values.len() == numel,
                "`{name}` {info:?}: {} values",
                values.len()
            ),
        }
    }
    let weights = match no_panic("Weights::open_files", || Weights::open_files(&[path]))? {
        Err(e) => return bad_input(&e, Layout::OneLine),
        Ok(w) => w,
    };
    for name in weights.names().map(str::to_string).collect::<Vec<_>>() {
        let info = weights.info(&name).map_err(|e| e.to_string())?;
        if let Err(e) = no_panic("Weights::get_f32", || weights.get_f32(&name, &info.shape))? {
            bad_input(&e, Layout::OneLine)?;
        }
    }
    Ok(())
}

/// A tensor as a header states it, with its data.
#[derive(Clone, Debug)]
pub struct Tensor {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
}

const DTYPES: &[(&str, usize)] = &[
    ("F32", 32),
    ("F16", 16),
    ("BF16", 16),
    ("F64", 64),
    ("I64", 64),
    ("I32", 32),
    ("U8", 8),
    ("I8", 8),
    ("BOOL", 8),
    ("F8_E4M3", 8),
    ("F8_E5M2", 8),
];

fn bits(dtype: &str) -> usize {
    DTYPES.iter().find(|(d, _)| *d == dtype).map_or(8, |d| d.1)
}

/// A valid file's header (as JSON) and its bytes.
pub fn valid(tensors: &[Tensor], metadata: bool) -> (Map<String, Value>, Vec<u8>) {
    let mut header = Map::new();
    let mut data = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let n: usize = t.shape.iter().product::<usize>() * bits(t.dtype) / 8;
        let begin = data.len();
        data.extend((0..n).map(|j| (i * 31 + j * 7) as u8));
        header.insert(
            t.name.clone(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [begin, data.len()]}),
        );
    }
    if metadata {
        header.insert("__metadata__".into(), json!({"format": "pt"}));
    }
    (header, data)
}

/// `u64 length ‖ header ‖ data`.
pub fn file(header_len: Option<u64>, header: &[u8], data: &[u8]) -> Vec<u8> {
    let len = header_len.unwrap_or(header.len() as u64);
    [&len.to_le_bytes()[..], header, data].concat()
}

/// What is done to a valid file.
#[derive(Clone, Debug)]
pub enum Mutation {
    None,
    HeaderLength(u64),
    HeaderLengthDelta(i64),
    /// Set a field of tensor `i` (modulo their count) to a value.
    Field(usize, &'static str, Value),
    Remove(usize, &'static str),
    Metadata(Value),
    Insert(String, Value),
    /// Replace the header's text.
    RawHeader(String),
    Truncate(usize),
    Append(Vec<u8>),
    Flip(usize, u8),
}

fn apply(tensors: &[Tensor], metadata: bool, mutation: &Mutation) -> Vec<u8> {
    let (mut header, data) = valid(tensors, metadata);
    let names: Vec<String> = tensors.iter().map(|t| t.name.clone()).collect();
    let nth = |i: usize| names.get(i % names.len().max(1)).cloned();
    let mut length = None;
    let mut raw = None;
    match mutation {
        Mutation::None => {}
        Mutation::HeaderLength(n) => length = Some(*n),
        Mutation::HeaderLengthDelta(d) => {
            let n = Value::Object(header.clone()).to_string().len() as i64;
            length = Some(n.wrapping_add(*d) as u64);
        }
        Mutation::Field(i, field, value) => {
            if let Some(t) = nth(*i).and_then(|n| header.get_mut(&n)) {
                t[*field] = value.clone();
            }
        }
        Mutation::Remove(i, field) => {
            if let Some(Value::Object(t)) = nth(*i).and_then(|n| header.get_mut(&n)) {
                t.remove(*field);
            }
        }
        Mutation::Metadata(v) => {
            header.insert("__metadata__".into(), v.clone());
        }
        Mutation::Insert(k, v) => {
            header.insert(k.clone(), v.clone());
        }
        Mutation::RawHeader(text) => raw = Some(text.clone().into_bytes()),
        _ => {}
    }
    let text = raw.unwrap_or_else(|| Value::Object(header).to_string().into_bytes());
    let mut bytes = file(length, &text, &data);
    match mutation {
        Mutation::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Mutation::Append(extra) => bytes.extend(extra),
        Mutation::Flip(at, b) => {
            let i = at % bytes.len();
            bytes[i] ^= b.max(&1);
        }
        _ => {}
    }
    bytes
}

fn tensor() -> impl Strategy<Value = Tensor> {
    (
        proptest::sample::select(&["w", "a.b.weight", "", "__metadata__", "x\u{0}", "猫", "w"][..]),
        proptest::sample::select(DTYPES),
        proptest::collection::vec(0usize..5, 0..4),
    )
        .prop_map(|(name, (dtype, _), shape)| Tensor {
            name: name.to_string(),
            dtype,
            shape,
        })
}

/// Numbers for offsets and shapes: edges and overflows.
const BIG: &[u64] = &[
    0,
    1,
    7,
    8,
    1 << 31,
    1 << 32,
    (1 << 32) + 1,
    1 << 61,
    (1 << 61) - 1,
    1 << 62,
    1 << 63,
    u64::MAX,
    u64::MAX - 7,
];

fn big() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(BIG).prop_map(|n| json!(n)),
        (0u64..64).prop_map(|n| json!(n)),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("8")),
        Just(Value::Null),
    ]
}

fn field_value(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "dtype" => prop_oneof![
            proptest::sample::select(
                &["F32", "f32", "F4", "I4", "U64", "C64", "", "F8_E8M0", "Q4"][..]
            )
            .prop_map(|d| json!(d)),
            Just(json!(5)),
        ]
        .boxed(),
        "shape" => prop_oneof![
            proptest::collection::vec(big(), 0..5).prop_map(Value::Array),
            Just(json!([4294967296u64, 4294967296u64])),
            Just(json!([u64::MAX, 2])),
            Just(json!([0, u64::MAX])),
            Just(json!(3)),
        ]
        .boxed(),
        _ => prop_oneof![
            (big(), big()).prop_map(|(a, b)| json!([a, b])),
            Just(json!([0])),
            Just(json!([0, 4, 8])),
            Just(json!({})),
        ]
        .boxed(),
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = || proptest::sample::select(&["dtype", "shape", "data_offsets"][..]);
    prop_oneof![
        1 => Just(Mutation::None),
        1 => proptest::sample::select(&[0u64, 1, 2, 100_000_000, 100_000_001, 1 << 32, 1 << 63, u64::MAX, u64::MAX - 7][..]).prop_map(Mutation::HeaderLength),
        2 => (-9i64..9).prop_map(Mutation::HeaderLengthDelta),
        6 => (any::<usize>(), field()).prop_flat_map(|(i, f)| field_value(f).prop_map(move |v| Mutation::Field(i, f, v))),
        1 => (any::<usize>(), field()).prop_map(|(i, f)| Mutation::Remove(i, f)),
        1 => prop_oneof![Just(json!({"a": 1})), Just(json!("x")), Just(json!({"a": null})), Just(json!([]))].prop_map(Mutation::Metadata),
        1 => ("[a-z_]{0,6}", prop_oneof![Just(json!(1)), Just(json!({"dtype": "F32"})), Just(json!({"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1}))]).prop_map(|(k, v)| Mutation::Insert(k, v)),
        1 => prop_oneof!["\\PC{0,40}", Just(String::new()), Just(" ".repeat(64)), Just("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}".into()), Just("[".repeat(200))].prop_map(Mutation::RawHeader),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
    ]
}

proptest! {
    #![proptest_config(harness::cases(600))]

    #[test]
    fn safetensors_files(
        tensors in proptest::collection::vec(tensor(), 0..4),
        metadata in any::<bool>(),
        mutation in mutation(),
    ) {
        let bytes = apply(&tensors, metadata, &mutation);
        harness::verdict_to_test(check_bytes(&bytes))?;
    }

    /// Any bytes at all behind a plausible length field.
    #[test]
    fn safetensors_bytes(header in proptest::collection::vec(any::<u8>(), 0..64), data in proptest::collection::vec(any::<u8>(), 0..16)) {
        harness::verdict_to_test(check_bytes(&file(None, &header, &data)))?;
    }
}
