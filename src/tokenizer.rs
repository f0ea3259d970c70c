//! CLIP's byte-level BPE tokenizer: prompt text -> the 77 token ids the text encoder reads.
//!
//! Mirrors transformers 5.24's `CLIPTokenizer` (models/clip/tokenization_clip.py, a
//! `tokenizers` pipeline) step for step, and matches its ids exactly
//! (tests/tokenizer.rs against tests/golden/tokens.json, written by
//! tools/make_token_golden.py):
//!
//! 1. Special tokens (`<|startoftext|>`, `<|endoftext|>`, and the pad / unk tokens) are
//!    found in the *raw* text first (they are `AddedToken(normalized=False)`), so
//!    `a<|endoftext|>b` really contains id 49407, and `<|ENDOFTEXT|>` does not.
//! 2. Normalizer: NFC, `\s+` -> " ", lower-casing char by char (no final-sigma rule).
//!    transformers 5 does not use ftfy or html unescaping at all, whether or not ftfy is
//!    installed; open_clip does both (so `&amp;` differs between the two).
//! 3. Pre-tokenizer: keep only the matches of CLIP's pattern ([`CLIP_PATTERN`]), then
//!    `ByteLevel` splits each match again with GPT-2's pattern ([`GPT2_PATTERN`]) and maps
//!    its UTF-8 bytes to printable chars (`bytes_to_unicode`).
//! 4. BPE per piece with `</w>` on the last symbol, merges applied lowest rank first.
//! 5. `<|startoftext|>` ... `<|endoftext|>` around it; [`ClipTokenizer::encode_padded`]
//!    truncates to `model_max_length` (keeping EOS last) and pads with the pad token.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// CLIP's pre-tokenisation pattern, verbatim from transformers / OpenAI CLIP. The regex
/// crate's leftmost-first alternation picks the same match as Oniguruma here, and its
/// `\p{L}`, `\p{N}` and `\s` are the Unicode classes Oniguruma uses.
pub const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// GPT-2's pattern, which `ByteLevel(use_regex=True)` applies to each CLIP piece. Its
/// whitespace branches (` ?` prefixes, `\s+(?!\S)`, `\s+`) are left out: a CLIP piece never
/// contains whitespace. The split only changes a piece that spells a special token whose
/// raw text was not matched in step 1 (`<|ENDOFTEXT|>` -> `<|`, `endoftext`, `|>`).
const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+";

/// `model_max_length` when tokenizer_config.json does not say (CLIP's context).
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// The word-end marker BPE appends to the last symbol of each piece.
const END_OF_WORD: &str = "</w>";

/// transformers writes `int(1e30)` as model_max_length when a tokenizer has no limit.
const UNSET_MAX_LENGTH: u64 = 1 << 40;

/// The longest context accepted: every prompt is padded to `model_max_length`,
/// so an absurd one would allocate gigabytes (CLIP text encoders use 77).
const MAX_LENGTH: u64 = 1 << 16;

/// Pieces cached before the cache is cleared (transformers' `tokenizers` caches 10,000).
const CACHE_CAPACITY: usize = 10_000;

/// One prompt ready for the text encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `[model_max_length]`: BOS, tokens, EOS, then pad ids.
    pub input_ids: Vec<u32>,
    /// `[model_max_length]`: 1 for BOS..=EOS, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Index of the first EOS id: where CLIP's pooled output is read. transformers takes
    /// `argmax(input_ids == eos_token_id)` (configs with `eos_token_id == 2`, from before
    /// that fix, take `argmax(input_ids)`, which is the same index for CLIP's vocabulary).
    pub eos_position: usize,
}

/// CLIP BPE tokenizer loaded from a model's `tokenizer/` folder.
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    /// `(left id, right id) -> (rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte -> the printable char that stands for it in vocab.json.
    byte_chars: [char; 256],
    /// Special tokens matched in raw text, longest first.
    added: Vec<(String, u32)>,
    clip_pattern: Regex,
    gpt2_pattern: Regex,
    /// Byte-level piece -> its BPE ids (without `</w>` bookkeeping: ids are final).
    cache: Mutex<HashMap<String, Vec<u32>>>,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    pub pad_token_id: u32,
    pub model_max_length: usize,
}

/// The special-token strings and context length from the folder's json files.
struct SpecialTokens {
    bos: String,
    eos: String,
    pad: String,
    unk: String,
    model_max_length: usize,
}

impl ClipTokenizer {
    /// Loads `vocab.json` and `merges.txt` (or, where they are missing, the BPE
    /// model in `tokenizer.json`, all transformers 5 saves) and
    /// `tokenizer_config.json` / `special_tokens_map.json` (optional; the latter
    /// wins, as in transformers) from `dir`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (vocab_path, vocab, merges) = read_bpe(dir)?;
        let special = read_special_tokens(dir)?;
        let byte_chars = bytes_to_unicode();
        check_byte_tokens(&vocab_path, &vocab, &byte_chars)?;

        let id_of = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                Error::model(
                    &vocab_path,
                    format!("special token `{token}` is not in the vocabulary"),
                )
            })
        };
        let mut added = Vec::new();
        for token in [&special.bos, &special.eos, &special.pad, &special.unk] {
            if !added.iter().any(|(t, _)| t == token) {
                added.push((token.clone(), id_of(token)?));
            }
        }
        // Leftmost-longest matching, as the tokenizers' AddedVocabulary does.
        added.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));

        Ok(ClipTokenizer {
            bos_token_id: id_of(&special.bos)?,
            eos_token_id: id_of(&special.eos)?,
            pad_token_id: id_of(&special.pad)?,
            model_max_length: special.model_max_length,
            vocab,
            merges,
            byte_chars,
            added,
            clip_pattern: Regex::new(CLIP_PATTERN).expect("CLIP pattern compiles"),
            gpt2_pattern: Regex::new(GPT2_PATTERN).expect("GPT-2 pattern compiles"),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Vocabulary size (49,408 for CLIP / Stable Diffusion 1.x).
    /// The id of a token as the vocabulary spells it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// `tokenizer(text)["input_ids"]`: BOS, tokens, EOS; neither truncated nor padded.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos_token_id];
        for (segment, special) in self.split_added(text) {
            match special {
                Some(id) => ids.push(id),
                None => self.encode_ordinary(segment, &mut ids),
            }
        }
        ids.push(self.eos_token_id);
        ids
    }

    /// `tokenizer(text, padding="max_length", max_length=model_max_length,
    /// truncation=True)`, what diffusers' pipelines feed the text encoder.
    pub fn encode_padded(&self, text: &str) -> Encoding {
        let max = self.model_max_length;
        let mut input_ids = self.encode(text);
        if input_ids.len() > max {
            // Truncation cuts the text's tokens, then BOS/EOS are added: EOS stays last.
            input_ids.truncate(max - 1);
            input_ids.push(self.eos_token_id);
        }
        let len = input_ids.len();
        input_ids.resize(max, self.pad_token_id);
        let mut attention_mask = vec![1; len];
        attention_mask.resize(max, 0);
        let eos_position = input_ids
            .iter()
            .position(|&id| id == self.eos_token_id)
            .expect("encode always ends with EOS");
        Encoding {
            input_ids,
            attention_mask,
            eos_position,
        }
    }

    /// The text cut at special tokens: `(segment, Some(id))` for a special token,
    /// `(segment, None)` for ordinary text between them.
    fn split_added<'t>(&self, text: &'t str) -> Vec<(&'t str, Option<u32>)> {
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < text.len() {
            let rest = &text[i..];
            match self
                .added
                .iter()
                .find(|(t, _)| rest.starts_with(t.as_str()))
            {
                Some((token, id)) => {
                    if start < i {
                        out.push((&text[start..i], None));
                    }
                    out.push((&text[i..i + token.len()], Some(*id)));
                    i += token.len();
                    start = i;
                }
                None => i += rest.chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            out.push((&text[start..], None));
        }
        out
    }

    /// Normalise, pre-tokenise and BPE one stretch of text without special tokens.
    fn encode_ordinary(&self, text: &str, ids: &mut Vec<u32>) {
        // NFC then lower-case char by char (tokenizers' Lowercase has no final-sigma rule).
        // transformers also replaces `\s+` by " ": no effect on ids, whitespace is dropped below.
        let normalized: String = text.nfc().flat_map(char::to_lowercase).collect();
        for clip_piece in self.clip_pattern.find_iter(&normalized) {
            for piece in self.gpt2_pattern.find_iter(clip_piece.as_str()) {
                self.bpe_cached(piece.as_str(), ids);
            }
        }
    }

    fn bpe_cached(&self, piece: &str, ids: &mut Vec<u32>) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = cache.get(piece) {
            ids.extend_from_slice(cached);
            return;
        }
        let word = self.bpe(piece);
        ids.extend_from_slice(&word);
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(piece.to_owned(), word);
    }

    /// BPE of one piece: its bytes as symbols (the last one with `</w>`), then the
    /// lowest-ranked adjacent pair is merged everywhere, until no pair is a merge.
    fn bpe(&self, piece: &str) -> Vec<u32> {
        let bytes = piece.as_bytes();
        let mut word: Vec<u32> = bytes
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let mut symbol = self.byte_chars[b as usize].to_string();
                if i + 1 == bytes.len() {
                    symbol.push_str(END_OF_WORD);
                }
                self.vocab[&symbol] // every byte token is checked at load
            })
            .collect();
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|pair| self.merges.get(&(pair[0], pair[1])))
                .min_by_key(|(rank, _)| *rank);
            let Some(&(rank, merged)) = best else { break };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                let pair = word.get(i + 1).map(|&right| (word[i], right));
                if pair.and_then(|p| self.merges.get(&p)).map(|m| m.0) == Some(rank) {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        word
    }
}

/// GPT-2's reversible byte -> char map: printable Latin-1 bytes map to themselves, the
/// other 68 to U+0100 onwards, so every byte string is a string of visible chars.
pub fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        chars[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143 are chars")
        };
    }
    chars
}

fn read_text(path: &Path) -> Result<String> {
    crate::weights::regular_file(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::model(path, format!("cannot read: {e}")))
}

fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Error::model(path, format!("not a JSON object of token -> id: {e}")))
}

type Merges = HashMap<(u32, u32), (u32, u32)>;

/// The vocabulary (with the file it came from) and the merges: `vocab.json` +
/// `merges.txt`, else `tokenizer.json`'s `model.vocab` and `model.merges`
/// (`"left right"` strings, or `["left", "right"]` pairs in newer files).
fn read_bpe(dir: &Path) -> Result<(PathBuf, HashMap<String, u32>, Merges)> {
    let (vocab_path, json) = (dir.join("vocab.json"), dir.join("tokenizer.json"));
    if vocab_path.exists() || !json.exists() {
        let vocab = read_vocab(&vocab_path)?;
        let path = dir.join("merges.txt");
        let text = read_text(&path)?;
        let lines = text.lines().map(str::to_owned).enumerate();
        let pairs = lines.filter(|(i, l)| !(l.is_empty() || *i == 0 && l.starts_with("#version")));
        let merges = parse_merges(&path, pairs, ("vocab.json", &vocab))?;
        return Ok((vocab_path, vocab, merges));
    }
    let bad = |what: &str| Error::model(&json, format!("{what} (expected a BPE tokenizer)"));
    let value: serde_json::Value = serde_json::from_str(&read_text(&json)?)
        .map_err(|e| Error::model(&json, format!("not valid JSON: {e}")))?;
    let vocab: HashMap<String, u32> = serde_json::from_value(value["model"]["vocab"].clone())
        .map_err(|_| bad("`model.vocab` is not an object of token -> id"))?;
    let list = value["model"]["merges"]
        .as_array()
        .ok_or_else(|| bad("no `model.merges` list"))?;
    let line = |m: &serde_json::Value| match m {
        serde_json::Value::String(s) => s.clone(),
        pair => pair.as_array().map_or(String::new(), |p| {
            let part = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            p.iter().map(part).collect::<Vec<_>>().join(" ")
        }),
    };
    let entries = list.iter().map(line).enumerate();
    let merges = parse_merges(&json, entries, ("model.vocab", &vocab))?;
    Ok((json, vocab, merges))
}

/// Merge rules by rank: one `left right` pair per numbered line.
fn parse_merges(
    path: &Path,
    pairs: impl Iterator<Item = (usize, String)>,
    vocab: (&str, &HashMap<String, u32>),
) -> Result<Merges> {
    let mut merges = HashMap::new();
    for (rank, (i, line)) in pairs.enumerate() {
        let bad = |what: String| Error::model(path, format!("line {}: {what}", i + 1));
        let mut parts = line.split(' ');
        let (Some(left), Some(right), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(format!("expected `left right`, found `{line}`")));
        };
        let id = |token: &str| {
            vocab
                .1
                .get(token)
                .copied()
                .ok_or_else(|| bad(format!("`{token}` is not in {}", vocab.0)))
        };
        merges.insert(
            (id(left)?, id(right)?),
            (rank as u32, id(&format!("{left}{right}"))?),
        );
    }
    Ok(merges)
}

/// Every byte's char, with and without `</w>`, must be a token: BPE starts from them.
fn check_byte_tokens(path: &Path, vocab: &HashMap<String, u32>, chars: &[char; 256]) -> Result<()> {
    for c in chars {
        for token in [c.to_string(), format!("{c}{END_OF_WORD}")] {
            if !vocab.contains_key(&token) {
                let message =
                    format!("byte token `{token}` missing: not a CLIP byte-level vocabulary");
                return Err(Error::model(path, message));
            }
        }
    }
    Ok(())
}

/// Special tokens and context length: CLIP's defaults, overridden by tokenizer_config.json,
/// overridden by special_tokens_map.json. A token is a string or `{"content": ...}`.
fn read_special_tokens(dir: &Path) -> Result<SpecialTokens> {
    let mut special = SpecialTokens {
        bos: "<|startoftext|>".into(),
        eos: "<|endoftext|>".into(),
        pad: "<|endoftext|>".into(),
        unk: "<|endoftext|>".into(),
        model_max_length: DEFAULT_MAX_LENGTH,
    };
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&read_text(&path)?)
            .map_err(|e| Error::model(&path, format!("not valid JSON: {e}")))?;
        let token = |key: &str| match &json[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v["content"].as_str().map(str::to_owned),
        };
        let slots = [
            ("bos_token", &mut special.bos),
            ("eos_token", &mut special.eos),
            ("pad_token", &mut special.pad),
            ("unk_token", &mut special.unk),
        ];
        for (key, slot) in slots {
            if let Some(t) = token(key) {
                *slot = t;
            }
        }
        if let Some(n) = json.get("model_max_length").and_then(|v| v.as_u64()) {
            if n < 2 {
                let message = format!("model_max_length {n} leaves no room for BOS and EOS");
                return Err(Error::model(&path, message));
            }
            if (MAX_LENGTH..UNSET_MAX_LENGTH).contains(&n) {
                let message = format!("model_max_length {n}: at most {MAX_LENGTH} (CLIP uses 77)");
                return Err(Error::model(&path, message));
            }
            if n < UNSET_MAX_LENGTH {
                special.model_max_length = n as usize;
            }
        }
    }
    Ok(special)
}
