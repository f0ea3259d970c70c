//! The Rust CLIP tokenizer against transformers' `CLIPTokenizer` on awkward prompts
//! (tests/golden/tokens.json, written by tools/make_token_golden.py): ids must be equal.

use std::path::{Path, PathBuf};

use easel::tokenizer::ClipTokenizer;
use easel::Error;

fn folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji/clip_tokenizer")
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_dir(folder()).expect("CLIP tokenizer loads")
}

#[derive(serde::Deserialize)]
struct Golden {
    prompt: String,
    ids: Vec<u32>,
    padded: Vec<u32>,
}

fn goldens() -> Vec<Golden> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tokens.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn loads_clip_vocabulary() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49_408);
    assert_eq!((tok.bos_token_id, tok.eos_token_id), (49_406, 49_407));
    assert_eq!((tok.pad_token_id, tok.model_max_length), (49_407, 77));
    assert_eq!(tok.encode("red apple"), [49_406, 736, 3055, 49_407]);
}

#[test]
fn matches_transformers_on_golden_prompts() {
    let tok = tokenizer();
    let goldens = goldens();
    let mut bad = Vec::new();
    for g in &goldens {
        let padded = tok.encode_padded(&g.prompt).input_ids;
        if tok.encode(&g.prompt) != g.ids || padded != g.padded {
            bad.push(format!(
                "{:?}: got {:?}, want {:?}",
                g.prompt,
                tok.encode(&g.prompt),
                g.ids
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} prompts differ:\n{}",
        bad.len(),
        goldens.len(),
        bad.join("\n")
    );
}

/// id -> token string of a tokenizer folder's vocab.json.
fn tokens_of(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("vocab.json")).unwrap();
    let vocab: std::collections::BTreeMap<String, u32> = serde_json::from_str(&text).unwrap();
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        tokens[id as usize] = token;
    }
    tokens
}

/// The default model's vocabulary is CLIP's restricted to its training captions
/// (tools/prune_vocab.py): caption words end as the same tokens as with the full
/// vocabulary (other ids), specials last; a word no caption has splits into pieces
/// of the same text instead of one untrained row.
#[test]
fn default_model_vocabulary_keeps_the_caption_tokens() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/easel-emoji/tokenizer");
    let pruned = ClipTokenizer::from_dir(&dir).unwrap();
    let n = pruned.vocab_size() as u32;
    assert!(
        n < 8_000,
        "{n} ids: the default model's vocabulary is not pruned"
    );
    assert_eq!((pruned.bos_token_id, pruned.eos_token_id), (n - 2, n - 1));
    assert_eq!(
        pruned.encode_padded("red apple").input_ids[4..],
        [n - 1; 73]
    );
    let (full_tokens, pruned_tokens) = (tokens_of(&folder()), tokens_of(&dir));
    let as_text = |ids: Vec<u32>, table: &[String]| -> Vec<String> {
        ids.iter().map(|&i| table[i as usize].clone()).collect()
    };
    let full = tokenizer();
    for prompt in [
        "red apple",
        "an emoji of a grinning face with big eyes",
        "thumbs up: medium-dark skin tone",
        "a cat face on a house",
        "smiling face with sunglasses, face, sun, cool",
        "flag: united kingdom",
    ] {
        assert_eq!(
            as_text(pruned.encode(prompt), &pruned_tokens),
            as_text(full.encode(prompt), &full_tokens),
            "{prompt:?}"
        );
    }
    let (word, pieces) = ("photograph", pruned.encode("photograph"));
    assert_eq!(full.encode(word).len(), 3, "one token in full CLIP");
    assert!(pieces.len() > 3, "{pieces:?}");
    let joined: String = as_text(pieces, &pruned_tokens)[1..].concat();
    assert_eq!(joined.replace("<|endoftext|>", ""), format!("{word}</w>"));
}

#[test]
fn padding_mask_and_eos_position() {
    let tok = tokenizer();
    let e = tok.encode_padded("red apple");
    assert_eq!(e.input_ids.len(), 77);
    assert_eq!(e.eos_position, 3);
    assert_eq!(e.attention_mask[..4], [1, 1, 1, 1]);
    assert!(e.attention_mask[4..].iter().all(|&m| m == 0));

    let long = tok.encode_padded(&"word ".repeat(100));
    assert_eq!((long.input_ids[76], long.eos_position), (49_407, 76));
    assert!(long.attention_mask.iter().all(|&m| m == 1));
}

#[test]
fn cached_pieces_give_the_same_ids() {
    let tok = tokenizer();
    let first = tok.encode("cafe apple café apple");
    assert_eq!(tok.encode("cafe apple café apple"), first);
}

#[test]
fn honours_pad_token_and_max_length_from_config() {
    let dir = temp_copy("pad");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 8, "pad_token": {"content": "!", "special": true}}"#,
    )
    .unwrap();
    std::fs::remove_file(dir.join("special_tokens_map.json")).unwrap();
    let tok = ClipTokenizer::from_dir(&dir).unwrap();
    // Like transformers, a special token is matched in the raw text: "!" is id 0 here.
    let e = tok.encode_padded("hello! world!!");
    assert_eq!(e.input_ids, [49_406, 3306, 0, 1002, 0, 0, 49_407, 0]);
    assert_eq!(e.attention_mask, [1, 1, 1, 1, 1, 1, 1, 0]);
}

#[test]
fn missing_or_corrupt_files_name_the_file() {
    let dir = temp_copy("missing");
    std::fs::remove_file(dir.join("merges.txt")).unwrap();
    expect_model_error(&dir, "merges.txt", "cannot read");

    let dir = temp_copy("corrupt-vocab");
    std::fs::write(dir.join("vocab.json"), "[1, 2]").unwrap();
    expect_model_error(&dir, "vocab.json", "not a JSON object");

    let dir = temp_copy("corrupt-merges");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\nt h e x\n").unwrap();
    expect_model_error(&dir, "merges.txt", "line 3: expected `left right`");

    let dir = temp_copy("unknown-merge");
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\ni n\n\u{2603} x\n").unwrap();
    expect_model_error(
        &dir,
        "merges.txt",
        "line 3: `\u{2603}` is not in vocab.json",
    );
}

fn expect_model_error(dir: &Path, file: &str, message: &str) {
    match ClipTokenizer::from_dir(dir) {
        Err(Error::Model { path, message: m }) => {
            assert!(path.ends_with(file), "{path:?} should name {file}");
            assert!(m.contains(message), "{m:?} should contain {message:?}");
        }
        Err(e) => panic!("expected a model error naming {file}, got {e}"),
        Ok(_) => panic!("expected a model error naming {file}, loaded fine"),
    }
}

/// A copy of the CLIP tokenizer folder under the target dir's tmp, one per test case.
fn temp_copy(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tokenizer-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(folder()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}
