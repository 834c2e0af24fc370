//! MMMU's `parse_multi_choice_response`: the letter a free-text answer picks, with the seeded random fallback.

use crate::PyRandom;

/// Which letter `response` chooses among `choices` (`index2ans` maps letters to option texts, in file order).
/// Returns the letter and whether it came from the random fallback.
pub fn parse_multi_choice(
    response: &str,
    choices: &[String],
    index2ans: &[(String, String)],
    rng: &mut PyRandom,
) -> (String, bool) {
    let mut r = response.to_string();
    for c in [',', '.', '!', '?', ';', ':', '\''] {
        r = r.trim_matches(c).to_string();
    }
    let r = format!(" {r} ");
    let mut candidates: Vec<&str> = Vec::new();
    let mut bracketed = false;
    let mut by_letter = true;
    for choice in choices {
        if r.contains(&format!("({choice})")) {
            candidates.push(choice);
            bracketed = true;
        }
    }
    if candidates.is_empty() {
        for choice in choices {
            if r.contains(&format!(" {choice} ")) {
                candidates.push(choice);
            }
        }
    }
    let lower = r.to_lowercase();
    if candidates.is_empty()
        && r.split(crate::normalize::is_py_space)
            .filter(|w| !w.is_empty())
            .count()
            > 5
    {
        for (letter, answer) in index2ans {
            if lower.contains(&answer.to_lowercase()) {
                candidates.push(letter);
                by_letter = false;
            }
        }
    }
    match candidates.len() {
        0 => (rng.choice(choices).clone(), true),
        1 => (candidates[0].to_string(), false),
        _ => {
            let position = |c: &str| -> Option<usize> {
                if !by_letter {
                    let answer = index2ans
                        .iter()
                        .find(|(l, _)| l == c)
                        .map(|(_, a)| a.to_lowercase())
                        .unwrap_or_default();
                    lower.rfind(&answer)
                } else if bracketed {
                    r.rfind(&format!("({c})"))
                } else {
                    r.rfind(&format!(" {c} "))
                }
            };
            // np.argmax over positions (-1 when absent): the largest, the earliest candidate on ties.
            let mut best = 0;
            let mut best_pos: i64 = -2;
            for (i, c) in candidates.iter().enumerate() {
                let p = position(c).map_or(-1, |p| p as i64);
                if p > best_pos {
                    best = i;
                    best_pos = p;
                }
            }
            (candidates[best].to_string(), false)
        }
    }
}
