//! Midjourney-style multi-prompts (DESIGN.md, "Prompts"): `apple:: tart::` is two
//! sub-prompts, `apple::2 tart::-0.5` weights them, `--no worm` pushes away from one.
//!
//! # Grammar
//!
//! - A prompt with no `::` is one sub-prompt of weight 1, encoded whole: `apple tart`
//!   is one phrase for the text encoder, unlike `apple:: tart::`.
//! - Otherwise `::` ends a sub-prompt. A weight may follow the `::` directly (no space):
//!   `apple::2`. Text after the last `::` is one more sub-prompt of weight 1
//!   (`a:: b` = `a::1 b::1`); a trailing `::` with nothing after it adds nothing.
//! - A weight is a plain decimal number: an optional sign, digits, optionally a point
//!   and digits (`2`, `-0.5`, `.5`, `+1.`). No exponents, `inf` or `nan`: a weight is
//!   something a person types, and Rust's float parser would accept all three. If the
//!   character right after `::` is a digit, sign or point, the word up to the next
//!   whitespace is the weight and must be a number (`a::2x` is an error, not `a::2 x`);
//!   any other character starts the next sub-prompt (`space::ship` = `space:: ship::`).
//! - `--no X` (a word of its own) is `X::-0.5`, Midjourney's value. Like Midjourney's
//!   parameter it comes after the weighted sub-prompts: its text runs to the next `--no`
//!   or the end, must not contain `::`, and a comma list `--no a, b` is two negatives
//!   (Midjourney documents `--no a, b` as `a::-.5 b::-.5`).
//! - Errors: a prompt that is empty or whitespace, an empty sub-prompt (`a:: ::2`), an
//!   empty `--no` or `--no` list item, a malformed or non-finite weight, `:::` (ambiguous:
//!   write `a: ::` for a text ending in a colon), weights whose sum is not positive, and
//!   A1111's `<lora:NAME:WEIGHT>` (LoRAs are `--lora FILE[:WEIGHT]`: merged into the
//!   model at load, so they cannot differ between sub-prompts).
//!   Sub-prompt text is trimmed; inner whitespace is kept (the tokenizer ignores it).
//!
//! # Errors
//!
//! [`Error::BadInput`] with three lines: the message, then the prompt indented by two
//! spaces, then a `^` under the character where parsing failed:
//!
//! ```text
//! weight `2x` is not a number
//!   apple::2x tart
//!          ^
//! ```
//!
//! Whitespace and control characters in the echoed prompt show as one space each and
//! columns count wide (CJK, emoji) characters as two, so the caret lines up in a
//! terminal; a prompt wider than [`ECHO_WIDTH`] columns is cut around the caret with `…`.

use unicode_width::UnicodeWidthChar;

use crate::{Error, Result};

/// The weight `--no X` gives `X` (Midjourney's `--no` is `::-.5`).
pub const NO_WEIGHT: f64 = -0.5;

/// Widest echo of the prompt in an error, in terminal columns.
pub const ECHO_WIDTH: usize = 76;

/// One weighted piece of a prompt, encoded by the text encoder on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct SubPrompt {
    pub text: String,
    pub weight: f64,
}

/// A parsed prompt: its sub-prompts in the order written, `--no` ones last.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiPrompt {
    pub parts: Vec<SubPrompt>,
}

impl MultiPrompt {
    /// Weights divided by the sum of the positive weights, as composable diffusion uses
    /// them: `eps = eps_uncond + g * sum_i w_i (eps_i - eps_uncond)`. Positive weights sum
    /// to 1; negative ones keep their ratio to them.
    pub fn normalized_weights(&self) -> Vec<f64> {
        let positive: f64 = self.parts.iter().map(|p| p.weight.max(0.0)).sum();
        self.parts.iter().map(|p| p.weight / positive).collect()
    }

    /// The prompt written with every weight explicit, `text::w` joined by spaces:
    /// `cat::2 hat --no dog` -> `cat::2 hat::1 dog::-0.5`. Parsing it gives `self` back
    /// (weights print as their shortest exact decimal, never with an exponent).
    pub fn to_canonical(&self) -> String {
        let part = |p: &SubPrompt| {
            // `a:` + `::` would read as the ambiguous `:::`.
            let gap = if p.text.ends_with(':') { " " } else { "" };
            format!("{}{gap}::{}", p.text, p.weight)
        };
        self.parts.iter().map(part).collect::<Vec<_>>().join(" ")
    }
}

/// Parses a prompt; see the module docs for the grammar and the error format.
pub fn parse(prompt: &str) -> Result<MultiPrompt> {
    parse_parts(prompt).map_err(|f| Error::BadInput(f.render(prompt)))
}

/// A parse error: what went wrong, and the byte offset it points at.
struct Failure {
    at: usize,
    message: String,
}

type Parsed<T> = std::result::Result<T, Failure>;

fn fail<T>(at: usize, message: impl Into<String>) -> Parsed<T> {
    Err(Failure {
        at,
        message: message.into(),
    })
}

/// A sub-prompt with where its weight was written, for the sum error's caret.
struct Part {
    sub: SubPrompt,
    weight_at: usize,
}

fn parse_parts(prompt: &str) -> Parsed<MultiPrompt> {
    if prompt.trim().is_empty() {
        return fail(0, "prompt is empty");
    }
    if let Some(at) = prompt.find("<lora:") {
        return fail(
            at,
            "`<lora:NAME:WEIGHT>` is not prompt text in easel: LoRAs are merged into the \
             model for the whole run, given as --lora FILE[:WEIGHT] (e.g. --lora NAME.safetensors:0.8)",
        );
    }
    let flags = no_flags(prompt);
    let main_end = flags.first().copied().unwrap_or(prompt.len());
    let mut parts = weighted_parts(prompt, main_end)?;
    for (i, &flag) in flags.iter().enumerate() {
        let end = flags.get(i + 1).copied().unwrap_or(prompt.len());
        parts.extend(no_parts(prompt, flag, end)?);
    }
    check_sum(&parts)?;
    Ok(MultiPrompt {
        parts: parts.into_iter().map(|p| p.sub).collect(),
    })
}

/// Byte offsets of each `--no` that stands as a word of its own.
fn no_flags(prompt: &str) -> Vec<usize> {
    let spaced = |c: Option<char>| c.is_none_or(char::is_whitespace);
    prompt
        .match_indices("--no")
        .map(|(i, _)| i)
        .filter(|&i| {
            spaced(prompt[..i].chars().next_back()) && spaced(prompt[i + 4..].chars().next())
        })
        .collect()
}

/// The sub-prompts in `prompt[..end]`, the part before any `--no`.
fn weighted_parts(prompt: &str, end: usize) -> Parsed<Vec<Part>> {
    let text = &prompt[..end];
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(found) = text[start..].find("::") {
        let sep = start + found;
        if text[sep + 2..].starts_with(':') {
            let message = "`:::` is ambiguous: write `a: ::` for a text ending in `:`";
            return fail(sep + 2, message);
        }
        let (weight, next) = weight_after(text, sep + 2)?;
        parts.push(sub_prompt(text, start, sep, weight, sep + 2)?);
        start = next;
    }
    let rest = &text[start..];
    if !rest.trim().is_empty() {
        parts.push(sub_prompt(text, start, text.len(), 1.0, start)?);
    }
    Ok(parts)
}

/// The weight written right after a `::` ending at `at` (1 if none) and where the next
/// sub-prompt starts.
fn weight_after(text: &str, at: usize) -> Parsed<(f64, usize)> {
    let starts_number = |c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.');
    if !text[at..].starts_with(starts_number) {
        return Ok((1.0, at));
    }
    let len = text[at..]
        .find(char::is_whitespace)
        .unwrap_or(text.len() - at);
    let word = &text[at..at + len];
    if !is_decimal(word) {
        return fail(at, format!("weight `{word}` is not a number"));
    }
    match word.parse::<f64>() {
        Ok(w) if w.is_finite() => Ok((w, at + len)),
        _ => fail(at, format!("weight `{word}` is too large")),
    }
}

/// `[+-]?(digits(.digits?)?|.digits)`: what [`parse`] accepts as a weight.
fn is_decimal(word: &str) -> bool {
    let unsigned = word.strip_prefix(['+', '-']).unwrap_or(word);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty())
}

/// The trimmed text of `prompt[start..end]` as a sub-prompt; empty text is an error at
/// `end` (the `::` or `,` that closes it).
fn sub_prompt(
    prompt: &str,
    start: usize,
    end: usize,
    weight: f64,
    weight_at: usize,
) -> Parsed<Part> {
    let text = prompt[start..end].trim();
    if text.is_empty() {
        return fail(end, "empty sub-prompt: write some text before `::`");
    }
    Ok(Part {
        sub: SubPrompt {
            text: text.to_owned(),
            weight,
        },
        weight_at,
    })
}

/// The negatives of the `--no` at `flag`, whose list runs to `end`.
fn no_parts(prompt: &str, flag: usize, end: usize) -> Parsed<Vec<Part>> {
    let list_start = flag + "--no".len();
    let list = &prompt[list_start..end];
    if list.trim().is_empty() {
        return fail(flag, "`--no` needs something after it: `--no dog`");
    }
    if let Some(i) = list.find("::") {
        return fail(
            list_start + i,
            "`::` after `--no`: put weighted sub-prompts before `--no`",
        );
    }
    let mut parts = Vec::new();
    let mut start = list_start;
    for (i, _) in list.match_indices(',').chain([(list.len(), "")]) {
        let item_end = list_start + i;
        if prompt[start..item_end].trim().is_empty() {
            // Point at the comma that closes the empty item, or the one before a last one.
            let comma = if item_end < end { item_end } else { start - 1 };
            return fail(comma, "empty item in the `--no` list");
        }
        parts.push(sub_prompt(prompt, start, item_end, NO_WEIGHT, flag)?);
        start = item_end + 1;
    }
    Ok(parts)
}

/// The weights must sum to a positive number: something to move towards.
fn check_sum(parts: &[Part]) -> Parsed<()> {
    let sum: f64 = parts.iter().map(|p| p.sub.weight).sum();
    let positive: f64 = parts.iter().map(|p| p.sub.weight.max(0.0)).sum();
    if !positive.is_finite() {
        return fail(0, "weights are too large to add up");
    }
    if sum > 0.0 {
        return Ok(());
    }
    let first = parts.iter().find(|p| p.sub.weight <= 0.0);
    let at = first.map_or(0, |p| p.weight_at);
    fail(
        at,
        format!(
            "weights sum to {sum}: the sum must be positive (add a sub-prompt to move towards)"
        ),
    )
}

impl Failure {
    /// The message, the prompt, and a caret under the failing character (module docs).
    fn render(&self, prompt: &str) -> String {
        with_caret(&self.message, prompt, self.at)
    }
}

/// `message`, then `text` indented by two spaces, then a `^` under byte offset `at`
/// (the error format of the module docs, also used by `--schedule`).
pub fn with_caret(message: &str, text: &str, at: usize) -> String {
    let (echo, column) = echo(text, at);
    format!("{message}\n  {echo}\n  {}^", " ".repeat(column))
}

/// The prompt as one terminal line and the column of byte offset `at` in it.
fn echo(prompt: &str, at: usize) -> (String, usize) {
    let shown = |c: char| {
        if c.is_whitespace() || c.is_control() {
            ' '
        } else {
            c
        }
    };
    let chars: Vec<(char, usize)> = prompt
        .chars()
        .map(shown)
        .map(|c| (c, c.width().unwrap_or(1)))
        .collect();
    // A caret past the end (or inside a character) points at the end of it.
    let mut at = at.min(prompt.len());
    while !prompt.is_char_boundary(at) {
        at -= 1;
    }
    let caret = prompt[..at].chars().count();
    // Start late enough that the caret sits at most half the echo in.
    let mut first = 0;
    let mut before: usize = chars[..caret].iter().map(|&(_, w)| w).sum();
    while before > ECHO_WIDTH / 2 {
        before -= chars[first].1;
        first += 1;
    }
    let mut line = String::from(if first > 0 { "…" } else { "" });
    let column = line.chars().count() + before;
    let mut used = column - before;
    for &(c, w) in &chars[first..] {
        if used + w > ECHO_WIDTH {
            line.push('…');
            break;
        }
        line.push(c);
        used += w;
    }
    (line, column)
}
