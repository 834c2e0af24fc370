//! MMMU's open-question parsing and matching (`parse_open_response`, `extract_numbers`, `normalize_str`,
//! `eval_open`, `eval_multi_choice`).

use fancy_regex::Regex;
use std::sync::OnceLock;

use crate::pyfloat::py_float;

/// A normalised prediction or answer: a number rounded to 2 decimals, or a lowercased string.
#[derive(Debug, Clone, PartialEq)]
pub enum Norm {
    /// A number (`float` of the text without commas, `round(x, 2)`).
    Number(f64),
    /// A lowercased string.
    Text(String),
}

/// Python's `round(x, 2)` (correctly rounded, ties to even on the exact binary value).
fn round2(x: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.2}").parse().unwrap_or(x)
}

/// `normalize_str`.
pub fn normalize(text: &str) -> Vec<Norm> {
    let s = text.trim_matches(crate::normalize::is_py_space);
    if let Some(v) = py_float(&s.replace(',', "")) {
        return vec![Norm::Number(round2(v))];
    }
    let lower = s.to_lowercase();
    if lower.chars().count() == 1 {
        return vec![Norm::Text(format!(" {lower}")), Norm::Text(format!("{lower} "))];
    }
    vec![Norm::Text(lower)]
}

fn regexes() -> &'static [Regex; 3] {
    static R: OnceLock<[Regex; 3]> = OnceLock::new();
    R.get_or_init(|| {
        [
            Regex::new(r"-?\b\d{1,3}(?:,\d{3})+\b").expect("regex"),
            Regex::new(r"-?\d+(?:\.\d+)?[eE][+-]?\d+").expect("regex"),
            Regex::new(r"-?(?:\d+\.\d+|\.\d+|\d+)(?![eE][+-]?\d+)(?![,\d])").expect("regex"),
        ]
    })
}

/// `extract_numbers`: comma-grouped, then scientific, then simple numbers, as strings.
fn extract_numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for re in regexes() {
        out.extend(
            re.find_iter(text)
                .filter_map(|m| m.ok())
                .map(|m| m.as_str().to_string()),
        );
    }
    out
}

/// `parse_open_response`: the candidate answers of a free-text response, normalised and de-duplicated.
pub fn parse_open(response: &str) -> Vec<Norm> {
    let text = response
        .trim_matches(crate::normalize::is_py_space)
        .trim_matches('.')
        .to_lowercase();
    // Split on `\.\s(?=[A-Z])|\n`: the text is lowercase, so only newlines split.
    let pieces: Vec<&str> = text.split('\n').collect();
    let mut indicators = vec![
        "could be ",
        "so ",
        "is ",
        "thus ",
        "therefore ",
        "final ",
        "answer ",
        "result ",
    ];
    let mut keys: Vec<String> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if i == pieces.len() - 1 {
            indicators.push("=");
        }
        let mut shortest: Option<String> = None;
        for indicator in &indicators {
            if piece.contains(indicator) {
                let tail = piece
                    .rsplit(indicator)
                    .next()
                    .unwrap_or_default()
                    .trim_matches(crate::normalize::is_py_space)
                    .to_string();
                if shortest
                    .as_ref()
                    .is_none_or(|s| s.is_empty() || tail.chars().count() < s.chars().count())
                {
                    // Python: `if not shortest` (None or empty) replaces; otherwise only a strictly shorter one.
                    shortest = Some(tail);
                }
            }
        }
        if let Some(s) = shortest {
            if !s.is_empty()
                && ![":", ",", ".", "!", "?", ";", "'"]
                    .contains(&s.trim_matches(crate::normalize::is_py_space))
            {
                keys.push(s);
            }
        }
    }
    if keys.is_empty() {
        keys.push(text.clone());
    }
    let mut candidates: Vec<String> = keys.clone();
    for key in &keys {
        candidates.extend(extract_numbers(key));
    }
    let mut out: Vec<Norm> = Vec::new();
    for c in candidates {
        for n in normalize(&c) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// A ground truth: one string or several.
pub enum Gold {
    /// One answer.
    One(String),
    /// Any of these.
    Any(Vec<String>),
}

/// `eval_open`: some string prediction contains some string answer, or some number prediction equals a number answer.
pub fn eval_open(gold: &Gold, predictions: &[Norm]) -> bool {
    let answers: Vec<Norm> = match gold {
        Gold::One(a) => normalize(a),
        Gold::Any(list) => list.iter().flat_map(|a| normalize(a)).collect(),
    };
    predictions.iter().any(|p| match p {
        Norm::Text(pred) => answers
            .iter()
            .any(|a| matches!(a, Norm::Text(t) if pred.contains(t.as_str()))),
        Norm::Number(v) => answers.iter().any(|a| matches!(a, Norm::Number(x) if x == v)),
    })
}

/// `eval_multi_choice`: the letter equals the answer (or one of them).
pub fn eval_multi_choice(gold: &Gold, letter: &str) -> bool {
    match gold {
        Gold::One(a) => a == letter,
        Gold::Any(list) => list.iter().any(|a| a == letter),
    }
}
