//! `easel::prompt::parse`: the `a:: b::-0.5 --no c, d` grammar, then the tokenizer
//! on each sub-prompt it yields (what the loop does with them).

use easel::prompt::parse;
use proptest::prelude::*;

use crate::ensure;
use crate::harness::{self, bad_input, no_panic, Layout, Verdict};

/// The property: an error is a caret block of exit code 2; a parse has finite weights
/// summing to something positive, round-trips through its canonical form, and every
/// sub-prompt tokenizes.
pub fn check(text: &str) -> Verdict {
    let parsed = match no_panic("prompt::parse", || parse(text))? {
        Err(e) => return bad_input(&e, Layout::Caret),
        Ok(p) => p,
    };
    ensure!(
        !parsed.parts.is_empty(),
        "{text:?}: parsed to no sub-prompts"
    );
    for part in &parsed.parts {
        ensure!(part.weight.is_finite(), "{text:?}: weight {}", part.weight);
        ensure!(
            !part.text.is_empty() && part.text.trim() == part.text,
            "{text:?}: sub-prompt {:?} is empty or untrimmed",
            part.text
        );
    }
    let sum: f64 = parsed.parts.iter().map(|p| p.weight).sum();
    ensure!(sum > 0.0, "{text:?}: weights sum to {sum}");
    let positive: f64 = parsed
        .normalized_weights()
        .iter()
        .filter(|w| **w > 0.0)
        .sum();
    ensure!(
        (positive - 1.0).abs() < 1e-9,
        "{text:?}: positive weights normalize to {positive}"
    );
    let canonical = parsed.to_canonical();
    match no_panic("prompt::parse (canonical)", || parse(&canonical))? {
        Ok(again) if again == parsed => {}
        other => return Err(format!("{text:?} -> {canonical:?} -> {other:?}")),
    }
    let tokenizer = harness::tokenizer();
    for part in &parsed.parts {
        let encoding = no_panic("ClipTokenizer::encode_padded", || {
            tokenizer.encode_padded(&part.text)
        })?;
        let vocab = tokenizer.vocab_size() as u32;
        ensure!(
            encoding.input_ids.iter().all(|&id| id < vocab),
            "{:?}: token id past the vocabulary",
            part.text
        );
    }
    Ok(())
}

/// Words and characters the grammar, the echo or the tokenizer treat specially.
const PIECES: &[&str] = &[
    "::",
    "::",
    "::",
    ":",
    ":::",
    " ",
    " ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\u{85}",
    "\u{2028}",
    "\u{3000}",
    "\u{a0}",
    "\u{200b}",
    "\u{feff}",
    "\0",
    "\x1b[31m",
    "\x07",
    "\x7f",
    "a",
    "cat",
    "red apple",
    "é",
    "e\u{301}",
    "猫",
    "🍎",
    "👩‍👩‍👧",
    "\u{202e}",
    "ﷺ",
    "--no",
    " --no ",
    "--no,",
    "--",
    "-",
    "+",
    ".",
    ",",
    ", ",
    "0",
    "1",
    "2",
    "x",
    "<|startoftext|>",
    "<|endoftext|>",
    "</w>",
    "'s",
    "'S",
    "日本語",
    "\u{1F3FB}",
];

/// What may follow `::` directly: weights people type, and numbers they should not.
const WEIGHTS: &[&str] = &[
    "1", "2", "-0.5", "-0", "+0", "0", ".5", "-.5", "+1.", "1.", ".", "-", "+", "1e40", "1e-40",
    "1E5", "NaN", "nan", "inf", "-inf", "infinity", "0x10", "1_000", "1.5.2", "--1", "+-1", "١",
    "٣.٥", "１", "½", "2x", "-1", "-2", "-1e308",
];

fn weight() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(WEIGHTS).prop_map(str::to_string),
        any::<f64>().prop_map(|w| w.to_string()),
        "[+-]?[0-9]{0,400}(\\.[0-9]{0,400})?",
    ]
}

/// A prompt built from the grammar's pieces.
pub fn structured() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(PIECES).prop_map(str::to_string),
        3 => weight().prop_map(|w| format!("::{w}")),
        1 => weight(),
        1 => any::<char>().prop_map(String::from),
        1 => "[a-z ]{1,12}",
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Any prompt: structured, or any string at all.
pub fn any_prompt() -> impl Strategy<Value = String> {
    prop_oneof![3 => structured(), 1 => any::<String>(), 1 => "\\PC{0,200}"]
}

/// A prompt is among the known bugs' kind (see `crate::KNOWN`).
pub fn known_kind(_text: &str) -> bool {
    false
}

proptest! {
    #![proptest_config(harness::cases(2000))]

    #[test]
    fn prompts(text in any_prompt()) {
        harness::verdict_to_test(check(&text))?;
    }

    /// Long prompts: the echo is cut around the caret.
    #[test]
    fn long_prompts(head in "\\PC{60,300}", tail in structured()) {
        harness::verdict_to_test(check(&format!("{head}{tail}")))?;
    }
}
