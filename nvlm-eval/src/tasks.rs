//! The per-task scorers and the prediction-file reader.

use serde_json::Value;

use crate::mmmu::{eval_multi_choice, eval_open, parse_open, Gold};
use crate::multi_choice::parse_multi_choice;
use crate::normalize::{is_py_space, process_digit_article, process_punctuation, vqa_normalize};
use crate::pyfloat::py_float;
use crate::{EvalError, PyRandom, Result};

/// A benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// VQAv2 (accuracy min(1, matches / 3)).
    Vqav2,
    /// TextVQA (same rule).
    Textvqa,
    /// ChartQA (relaxed accuracy).
    Chartqa,
    /// AI2D (exact after normalisation).
    Ai2d,
    /// OCRBench (substring count, out of 1000).
    Ocrbench,
    /// MathVista testmini.
    Mathvista,
    /// MMMU validation.
    Mmmu,
    /// DocVQA (ANLS).
    Docvqa,
    /// InfoVQA (ANLS, as DocVQA).
    Infovqa,
    /// RealWorldQA (exact after normalisation).
    Realworldqa,
}

impl Task {
    /// Every task.
    pub const ALL: [Task; 10] = [
        Task::Vqav2,
        Task::Textvqa,
        Task::Chartqa,
        Task::Ai2d,
        Task::Ocrbench,
        Task::Mathvista,
        Task::Mmmu,
        Task::Docvqa,
        Task::Infovqa,
        Task::Realworldqa,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Task::Vqav2 => "vqav2",
            Task::Textvqa => "textvqa",
            Task::Chartqa => "chartqa",
            Task::Ai2d => "ai2d",
            Task::Ocrbench => "ocrbench",
            Task::Mathvista => "mathvista",
            Task::Mmmu => "mmmu",
            Task::Docvqa => "docvqa",
            Task::Infovqa => "infovqa",
            Task::Realworldqa => "realworldqa",
        }
    }

    /// From the command-line name.
    pub fn from_name(name: &str) -> Result<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| EvalError::UnknownTask(name.to_string()))
    }

    /// The prediction field the scorer reads.
    pub fn answer_key(self) -> &'static str {
        if self == Task::Mmmu {
            "prediction"
        } else {
            "answer"
        }
    }
}

/// One sample's value (or the total): a float, or an integer count (OCRBench).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    /// A float.
    Float(f64),
    /// An integer.
    Int(i64),
}

impl SampleValue {
    /// As JSON.
    pub fn to_json(self) -> Value {
        match self {
            SampleValue::Float(v) => serde_json::Number::from_f64(v)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            SampleValue::Int(v) => Value::from(v),
        }
    }
}

/// A task's score.
#[derive(Debug, Clone)]
pub struct Score {
    /// The task.
    pub task: Task,
    /// The score, as the upstream scorer returns it.
    pub score: SampleValue,
    /// Scored samples.
    pub n: usize,
    /// `(sample id, value)` in scoring order.
    pub per_sample: Vec<(String, SampleValue)>,
}

/// `all_choices` letters and `index2ans` (letter, option text) pairs, in file order.
type Choices = (Vec<String>, Vec<(String, String)>);

struct Line {
    number: usize,
    id: String,
    value: Value,
}

impl Line {
    fn error(&self, detail: impl Into<String>) -> EvalError {
        EvalError::Line {
            line: self.number,
            detail: detail.into(),
        }
    }

    fn str(&self, key: &str) -> Result<&str> {
        self.value[key]
            .as_str()
            .ok_or_else(|| self.error(format!("`{key}` is missing or not a string")))
    }

    /// `gt_answer` as a list (a bare string becomes one entry).
    fn gts(&self) -> Result<Vec<String>> {
        match &self.value["gt_answer"] {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.error("`gt_answer` holds a non-string"))
                })
                .collect(),
            _ => Err(self.error("`gt_answer` is missing")),
        }
    }

    fn single_gt(&self) -> Result<String> {
        let gts = self.gts()?;
        if gts.len() != 1 {
            return Err(self.error(format!(
                "expected exactly one ground-truth answer, found {}",
                gts.len()
            )));
        }
        Ok(gts.into_iter().next().expect("one"))
    }

    fn choices(&self) -> Result<Choices> {
        let choices = self.value["all_choices"]
            .as_array()
            .ok_or_else(|| self.error("`all_choices` is missing"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.error("`all_choices` holds a non-string"))
            })
            .collect::<Result<Vec<_>>>()?;
        if choices.is_empty() {
            return Err(self.error("`all_choices` is empty"));
        }
        let index2ans = self.value["index2ans"]
            .as_object()
            .ok_or_else(|| self.error("`index2ans` is missing"))?
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    v.as_str()
                        .ok_or_else(|| self.error("`index2ans` holds a non-string"))?
                        .to_string(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((choices, index2ans))
    }
}

fn read_lines(predictions: &str, task: Task) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (i, text) in predictions.lines().enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let number = i + 1;
        let value: Value = serde_json::from_str(text).map_err(|e| EvalError::Line {
            line: number,
            detail: format!("not JSON: {e}"),
        })?;
        let id = match &value["sample_id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(EvalError::Line {
                    line: number,
                    detail: "`sample_id` is missing".into(),
                })
            }
        };
        let line = Line { number, id, value };
        line.str(task.answer_key())?;
        lines.push(line);
    }
    if lines.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok(lines)
}

/// First occurrence of each sample id wins (Megatron's `merge_input_files`).
fn dedup(lines: Vec<Line>) -> Vec<Line> {
    let mut seen = std::collections::HashSet::new();
    lines.into_iter().filter(|l| seen.insert(l.id.clone())).collect()
}

/// `sum(values) / len(values) * 100`, summed left to right as Python does.
fn mean_percent(values: &[(String, SampleValue)]) -> f64 {
    let sum = values.iter().fold(0.0f64, |s, (_, v)| {
        s + if let SampleValue::Float(x) = v { *x } else { 0.0 }
    });
    sum / values.len() as f64 * 100.0
}

fn float_score(task: Task, per_sample: Vec<(String, SampleValue)>) -> Score {
    Score {
        task,
        score: SampleValue::Float(mean_percent(&per_sample)),
        n: per_sample.len(),
        per_sample,
    }
}

fn bool_value(b: bool) -> SampleValue {
    SampleValue::Float(if b { 1.0 } else { 0.0 })
}

/// Scores `predictions` (JSON lines) for `task`; `gt` is MMMU's `answer_dict.json`.
pub fn score(task: Task, predictions: &str, gt: Option<&Value>) -> Result<Score> {
    let lines = read_lines(predictions, task)?;
    match task {
        Task::Vqav2 | Task::Textvqa => {
            let per = dedup(lines)
                .iter()
                .map(|l| {
                    let pred = vqa_normalize(l.str("answer")?);
                    let matches = l.gts()?.iter().filter(|g| vqa_normalize(g) == pred).count();
                    Ok((l.id.clone(), SampleValue::Float((matches as f64 / 3.0).min(1.0))))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(float_score(task, per))
        }
        Task::Chartqa => {
            let per = dedup(lines)
                .iter()
                .map(|l| {
                    let pred = vqa_normalize(l.str("answer")?);
                    let gt = vqa_normalize(&l.single_gt()?);
                    let (pred, gt) = (pred.trim_end_matches('%'), gt.trim_end_matches('%'));
                    let correct = match (py_float(pred), py_float(gt)) {
                        (Some(p), Some(g)) => p >= g * 0.95 && p <= g * 1.05,
                        _ => pred == gt,
                    };
                    Ok((l.id.clone(), bool_value(correct)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(float_score(task, per))
        }
        Task::Ai2d | Task::Realworldqa => {
            let per = dedup(lines)
                .iter()
                .map(|l| {
                    Ok((
                        l.id.clone(),
                        bool_value(vqa_normalize(l.str("answer")?) == vqa_normalize(&l.single_gt()?)),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(float_score(task, per))
        }
        Task::Docvqa | Task::Infovqa => {
            let per = lines
                .iter()
                .map(|l| {
                    let pred = vqa_normalize(l.str("answer")?);
                    let best = l
                        .gts()?
                        .iter()
                        .map(|g| anls(&pred, &vqa_normalize(g)))
                        .fold(0.0f64, f64::max);
                    Ok((l.id.clone(), SampleValue::Float(best)))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(float_score(task, per))
        }
        Task::Ocrbench => ocrbench(dedup(lines)),
        Task::Mathvista => mathvista(dedup(lines)),
        Task::Mmmu => mmmu(
            lines,
            gt.ok_or_else(|| EvalError::GroundTruth("mmmu needs --gt answer_dict.json".into()))?,
        ),
    }
}

/// Python's `" ".join(s.strip().lower().split())`.
fn squash(s: &str) -> String {
    s.to_lowercase()
        .split(is_py_space)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// ANLS of one (already VQA-normalised) prediction against one answer.
fn anls(pred: &str, gt: &str) -> f64 {
    let (p, g) = (squash(pred), squash(gt));
    let length = p
        .to_uppercase()
        .chars()
        .count()
        .max(g.to_uppercase().chars().count());
    let nl = if length == 0 {
        0.0
    } else {
        levenshtein(&p, &g) as f64 / length as f64
    };
    if nl < 0.5 {
        1.0 - nl
    } else {
        0.0
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

const OCRBENCH_CATEGORIES: [&str; 10] = [
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    "Handwritten Mathematical Expression Recognition",
];

fn ocrbench(lines: Vec<Line>) -> Result<Score> {
    let mut total = 0i64;
    let mut per = Vec::with_capacity(lines.len());
    for l in &lines {
        let category = l.str("data_type")?;
        if !OCRBENCH_CATEGORIES.contains(&category) {
            return Err(l.error(format!("`data_type` `{category}` is not an OCRBench category")));
        }
        let answer = l.str("answer")?;
        let hme = l.value["dataset_name"].as_str() == Some("HME100k");
        let mut count = 0i64;
        for gt in l.gts()? {
            let matched = if hme {
                let clean = |s: &str| s.trim_matches(is_py_space).replace('\n', " ").replace(' ', "");
                clean(answer).contains(&clean(&gt))
            } else {
                let clean = |s: &str| s.to_lowercase().trim_matches(is_py_space).replace('\n', " ");
                clean(answer).contains(&clean(&gt))
            };
            count += i64::from(matched);
        }
        total += count;
        per.push((l.id.clone(), SampleValue::Int(count)));
    }
    Ok(Score {
        task: Task::Ocrbench,
        score: SampleValue::Int(total),
        n: per.len(),
        per_sample: per,
    })
}

/// MathVista's `extra_processing`: trim all-zero decimals or truncate to 2, drop `%` and one trailing `.`.
fn extra_processing(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = text.to_string();
    if let Some(dot) = chars.iter().position(|&c| c == '.') {
        let (int, frac) = (&chars[..dot], &chars[dot + 1..]);
        let digits = |s: &[char]| !s.is_empty() && s.iter().all(|&c| crate::pyfloat::is_decimal(c));
        if digits(int) && digits(frac) {
            let all_zero = frac.iter().all(|&c| py_float(&c.to_string()) == Some(0.0));
            out = if all_zero {
                int.iter().collect()
            } else {
                chars[..(dot + 3).min(chars.len())].iter().collect()
            };
        }
    }
    out = out.replace('%', "");
    if out.is_empty() {
        return None;
    }
    if out.ends_with('.') {
        out.pop();
    }
    Some(out)
}

/// MathVista's `extract_answer`: with letters and no `e+`, the number after `answer is`.
fn extract_answer(text: &str) -> String {
    use fancy_regex::Regex;
    use std::sync::OnceLock;
    static TEMPLATE: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (template, number) = TEMPLATE.get_or_init(|| {
        (
            Regex::new(r"answer is -*\d+\.*\d*").expect("regex"),
            Regex::new(r"-*\d+\.*\d*").expect("regex"),
        )
    });
    if text.chars().any(|c| c.is_ascii_alphabetic()) && !text.contains("e+") {
        if let Ok(Some(m)) = template.find(text) {
            let found = m.as_str();
            return match number.find(found) {
                Ok(Some(n)) => n.as_str().to_string(),
                _ => found.to_string(),
            };
        }
    }
    text.to_string()
}

fn mathvista(lines: Vec<Line>) -> Result<Score> {
    let mut rng = PyRandom::new(42);
    let mut per = Vec::with_capacity(lines.len());
    let mut correct = 0usize;
    for l in &lines {
        let answer = l.str("answer")?;
        let gt = l.single_gt()?;
        let ok = if l.str("question_type")? == "multi_choice" {
            let (choices, index2ans) = l.choices()?;
            parse_multi_choice(answer, &choices, &index2ans, &mut rng).0 == gt
        } else {
            let pred = extra_processing(&process_digit_article(&process_punctuation(answer)))
                .map(|p| extract_answer(&p))
                .ok_or_else(|| l.error("the free-form prediction normalises to an empty string (the upstream scorer crashes here)"))?;
            let gt = extra_processing(&process_digit_article(&process_punctuation(&gt)))
                .ok_or_else(|| l.error("the ground truth normalises to an empty string"))?;
            pred == gt
        };
        correct += usize::from(ok);
        per.push((l.id.clone(), bool_value(ok)));
    }
    let score = correct as f64 / lines.len() as f64 * 100.0;
    Ok(Score {
        task: Task::Mathvista,
        score: SampleValue::Float(score),
        n: per.len(),
        per_sample: per,
    })
}

/// The 30 MMMU subjects, in `CAT_SHORT2LONG` order.
const MMMU_SUBJECTS: [&str; 30] = [
    "Accounting",
    "Agriculture",
    "Architecture_and_Engineering",
    "Art",
    "Art_Theory",
    "Basic_Medical_Science",
    "Biology",
    "Chemistry",
    "Clinical_Medicine",
    "Computer_Science",
    "Design",
    "Diagnostics_and_Laboratory_Medicine",
    "Economics",
    "Electronics",
    "Energy_and_Power",
    "Finance",
    "Geography",
    "History",
    "Literature",
    "Manage",
    "Marketing",
    "Materials",
    "Math",
    "Mechanical_Engineering",
    "Music",
    "Pharmacy",
    "Physics",
    "Psychology",
    "Public_Health",
    "Sociology",
];

fn mmmu(lines: Vec<Line>, gt: &Value) -> Result<Score> {
    // convert_to_mmmu_format: MC parsing (and its random draws) on every line in file order, then first id wins.
    let mut rng = PyRandom::new(42);
    let mut predictions: Vec<(String, String)> = Vec::new();
    for l in &lines {
        let mut prediction = l.str("prediction")?.to_string();
        if l.str("question_type")? == "multiple-choice" {
            let (choices, index2ans) = l.choices()?;
            prediction = parse_multi_choice(&prediction, &choices, &index2ans, &mut rng).0;
        }
        if !predictions.iter().any(|(id, _)| *id == l.id) {
            predictions.push((l.id.clone(), prediction));
        }
    }
    let category = |id: &str| -> String {
        let parts: Vec<&str> = id.split('_').collect();
        if parts.len() < 2 {
            String::new()
        } else {
            parts[1..parts.len() - 1].join("_")
        }
    };
    let mut weighted = 0.0f64;
    let mut total = 0usize;
    let mut per = Vec::new();
    for subject in MMMU_SUBJECTS {
        let samples: Vec<&(String, String)> = predictions
            .iter()
            .filter(|(id, _)| category(id) == subject)
            .collect();
        if samples.is_empty() {
            continue;
        }
        let mut correct = 0usize;
        for (id, prediction) in samples.iter().map(|s| (&s.0, &s.1)) {
            let entry = &gt[id.as_str()];
            let question_type = entry["question_type"]
                .as_str()
                .ok_or_else(|| EvalError::GroundTruth(format!("no `question_type` for `{id}`")))?;
            let gold = match &entry["ground_truth"] {
                Value::String(s) => Gold::One(s.clone()),
                Value::Array(items) => Gold::Any(
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                ),
                _ => return Err(EvalError::GroundTruth(format!("no `ground_truth` for `{id}`"))),
            };
            let ok = if question_type == "multiple-choice" {
                eval_multi_choice(&gold, prediction)
            } else {
                eval_open(&gold, &parse_open(prediction))
            };
            correct += usize::from(ok);
            per.push((id.clone(), bool_value(ok)));
        }
        let n = samples.len();
        let accuracy = correct as f64 / n as f64;
        weighted += accuracy * n as f64;
        total += n;
    }
    if total == 0 {
        return Err(EvalError::Empty);
    }
    let overall: f64 = format!("{:.3}", weighted / total as f64)
        .parse()
        .expect("a formatted float");
    Ok(Score {
        task: Task::Mmmu,
        score: SampleValue::Float(overall * 100.0),
        n: total,
        per_sample: per,
    })
}
