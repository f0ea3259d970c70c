//! The multi-prompt grammar (src/prompt.rs): examples, each error with its caret, and
//! property tests over seeded random strings (no panics; canonical forms round-trip).

use easel::prompt::{parse, MultiPrompt, SubPrompt};

fn parts(prompt: &str) -> Vec<(String, f64)> {
    let parsed = parse(prompt).unwrap_or_else(|e| panic!("{prompt:?}: {e}"));
    parsed
        .parts
        .into_iter()
        .map(|p| (p.text, p.weight))
        .collect()
}

fn want(parts: &[(&str, f64)]) -> Vec<(String, f64)> {
    parts.iter().map(|&(t, w)| (t.to_owned(), w)).collect()
}

/// The error's text, which must be message, echo and caret line.
fn error(prompt: &str) -> String {
    match parse(prompt) {
        Err(easel::Error::BadInput(m)) => m,
        other => panic!("{prompt:?} should be bad input, got {other:?}"),
    }
}

#[test]
fn examples_from_design() {
    assert_eq!(
        parts("apple:: tart::"),
        want(&[("apple", 1.0), ("tart", 1.0)])
    );
    assert_eq!(
        parts("apple::2 tart::-0.5"),
        want(&[("apple", 2.0), ("tart", -0.5)])
    );
    assert_eq!(parts("apple tart"), want(&[("apple tart", 1.0)]));
    assert_eq!(
        parts("cat::2 hat::1 --no dog"),
        want(&[("cat", 2.0), ("hat", 1.0), ("dog", -0.5)])
    );
}

#[test]
fn weights_and_segments() {
    assert_eq!(parts("a:: b"), want(&[("a", 1.0), ("b", 1.0)]));
    assert_eq!(
        parts("apple:: tart::2"),
        want(&[("apple", 1.0), ("tart", 2.0)])
    );
    assert_eq!(parts("space::ship"), want(&[("space", 1.0), ("ship", 1.0)]));
    assert_eq!(
        parts("a::.5 b::+1. c::-0"),
        want(&[("a", 0.5), ("b", 1.0), ("c", -0.0)])
    );
    assert_eq!(parts("  red   apple \t"), want(&[("red   apple", 1.0)]));
    assert_eq!(parts("a: ::2"), want(&[("a:", 2.0)]));
    assert_eq!(parts("ratio 16:9::3"), want(&[("ratio 16:9", 3.0)]));
    assert_eq!(parts("a --nob"), want(&[("a --nob", 1.0)]));
}

#[test]
fn no_lists() {
    assert_eq!(parts("cat --no dog"), want(&[("cat", 1.0), ("dog", -0.5)]));
    assert_eq!(
        parts("cat::2 --no dog, red hat --no fish"),
        want(&[
            ("cat", 2.0),
            ("dog", -0.5),
            ("red hat", -0.5),
            ("fish", -0.5)
        ])
    );
}

#[test]
fn normalized_weights_divide_by_positive_sum() {
    let p = parse("a::2 b::1 c::-0.5 --no d").unwrap();
    let w = p.normalized_weights();
    assert_eq!(w, [2.0 / 3.0, 1.0 / 3.0, -0.5 / 3.0, -0.5 / 3.0]);
    assert_eq!(parse("one thing").unwrap().normalized_weights(), [1.0]);
}

#[test]
fn canonical_form_is_explicit() {
    let p = parse("cat::2 hat --no dog, a:").unwrap();
    assert_eq!(p.to_canonical(), "cat::2 hat::1 dog::-0.5 a: ::-0.5");
    assert_eq!(parse(&p.to_canonical()).unwrap(), p);
    let tiny = MultiPrompt {
        parts: vec![SubPrompt {
            text: "x".into(),
            weight: 1e-7,
        }],
    };
    assert_eq!(tiny.to_canonical(), "x::0.0000001");
    assert_eq!(parse(&tiny.to_canonical()).unwrap(), tiny);
}

#[test]
fn empty_prompt() {
    assert_eq!(error(""), "prompt is empty\n  \n  ^");
    assert_eq!(error(" \t\n"), "prompt is empty\n     \n  ^");
}

#[test]
fn only_negative_weights() {
    assert_eq!(
        error("apple::-1 tart::-0.5"),
        "weights sum to -1.5: the sum must be positive (add a sub-prompt to move towards)\n  \
         apple::-1 tart::-0.5\n         ^"
    );
    let e = error("--no dog");
    assert!(e.starts_with("weights sum to -0.5"), "{e}");
    assert!(e.ends_with("\n  --no dog\n  ^"), "{e}");
    // Zero counts as not positive; the caret is at the first weight <= 0.
    assert!(error("a::1 b::0 c::-1").ends_with("\n  a::1 b::0 c::-1\n          ^"));
}

#[test]
fn malformed_weight() {
    assert_eq!(
        error("apple::2x tart"),
        "weight `2x` is not a number\n  apple::2x tart\n         ^"
    );
    for bad in [
        "a::1e-1",
        "a::-inf",
        "a::1.2.3",
        "a::-",
        "a::.",
        "a::--no b",
        "a::2::b",
    ] {
        let e = error(bad);
        assert!(e.contains("is not a number"), "{bad}: {e}");
        assert!(
            e.ends_with("\n     ^"),
            "{bad}: caret under the weight: {e}"
        );
    }
    let huge = format!("a::{}", "9".repeat(400));
    assert!(error(&huge).starts_with("weight `999"));
    assert!(error(&huge).contains("is too large"));
}

#[test]
fn empty_sub_prompt() {
    assert_eq!(
        error("apple:: ::2"),
        "empty sub-prompt: write some text before `::`\n  apple:: ::2\n          ^"
    );
    assert!(error("::2 apple").ends_with("\n  ::2 apple\n  ^"));
    assert!(error("a:::b").starts_with("`:::` is ambiguous"));
    assert!(error("a:::b").ends_with("\n  a:::b\n     ^"));
}

#[test]
fn no_with_nothing_after_it() {
    assert_eq!(
        error("cat --no"),
        "`--no` needs something after it: `--no dog`\n  cat --no\n      ^"
    );
    assert!(error("cat --no  --no dog").ends_with("\n  cat --no  --no dog\n      ^"));
    assert!(error("cat --no dog,").ends_with("\n  cat --no dog,\n              ^"));
    assert!(error("cat --no , dog").ends_with("\n  cat --no , dog\n           ^"));
    assert!(error("cat --no dog::2").ends_with("\n  cat --no dog::2\n              ^"));
}

#[test]
fn caret_counts_terminal_columns() {
    // CJK is two columns wide; the tab shows as one space.
    assert_eq!(
        error("猫\t::2x"),
        "weight `2x` is not a number\n  猫 ::2x\n       ^"
    );
    // A long prompt is cut around the caret so that it fits one terminal line.
    let long = format!("{}::2x", "word ".repeat(40));
    let e = error(&long);
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[1].chars().count() <= 2 + easel::prompt::ECHO_WIDTH);
    assert!(lines[1].starts_with("  …"));
    let caret = lines[2].chars().count() - 1;
    assert_eq!(
        &lines[1][lines[1].char_indices().nth(caret).unwrap().0..],
        "2x"
    );
}

/// xorshift64*: a few lines of seeded randomness, enough for property tests.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Random prompts from pieces the grammar cares about.
fn random_prompt(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "::", "::", ":", "2", "0", "1", "-", ".", "+", " ", " ", "\t", "a", "cat", "b", "x",
        "--no", " --no ", ",", "e", "é", "猫", "🍎", "::-0.5 ", "::2 ", "inf", "nan", "\n",
    ];
    let n = rng.below(16);
    (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect()
}

#[test]
fn random_strings_never_panic_and_round_trip() {
    let mut rng = Rng(0x5EED_0BC1_4DEA);
    let (mut ok, total) = (0, 100_000);
    for _ in 0..total {
        let prompt = random_prompt(&mut rng);
        let Ok(parsed) = parse(&prompt) else { continue };
        ok += 1;
        let canonical = parsed.to_canonical();
        let again =
            parse(&canonical).unwrap_or_else(|e| panic!("{prompt:?} -> {canonical:?}: {e}"));
        assert_eq!(again, parsed, "{prompt:?} -> {canonical:?}");
        assert_eq!(
            again.to_canonical(),
            canonical,
            "canonical form is a fixed point"
        );
        let positive: f64 = parsed
            .normalized_weights()
            .iter()
            .filter(|w| **w > 0.0)
            .sum();
        assert!(
            (positive - 1.0).abs() < 1e-9,
            "{prompt:?}: positive weights sum to {positive}"
        );
    }
    eprintln!("{ok} of {total} random prompts parsed and round-tripped");
    // The generator must reach both outcomes often enough to test anything.
    assert!(
        ok > total / 10 && ok < total * 9 / 10,
        "{ok} of {total} parsed"
    );
}
