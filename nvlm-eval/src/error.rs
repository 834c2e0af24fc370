//! The error type of `nvlm-eval`.

/// What scoring can fail with; messages name the line and field.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A prediction line is not valid JSON or lacks a field the task reads.
    #[error("predictions line {line}: {detail}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The ground-truth file is missing or malformed.
    #[error("ground truth: {0}")]
    GroundTruth(String),
    /// The task name is unknown.
    #[error("unknown task `{0}`: expected one of vqav2, textvqa, chartqa, ai2d, ocrbench, mathvista, mmmu, docvqa, infovqa, realworldqa")]
    UnknownTask(String),
    /// The predictions hold no sample.
    #[error("no predictions to score")]
    Empty,
}

/// `Result` with [`EvalError`].
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
