//! NVLM-D benchmark scoring, reproducing the upstream scorers bit for bit (`nvlm-d.md` §11 and
//! `../shared/fixtures/eval/README.md`): Megatron-LM's `evaluate_*.py` at tag NVLM-1.0 (and main for DocVQA and
//! RealWorldQA), open_flamingo's VQA normalisation, and MMMU's parsers with Python's seeded `random`.

mod error;
mod mmmu;
mod multi_choice;
mod normalize;
mod pyfloat;
mod pyrandom;
mod tasks;

pub use error::{EvalError, Result};
pub use normalize::{process_digit_article, process_punctuation, vqa_normalize};
pub use pyrandom::PyRandom;
pub use tasks::{score, SampleValue, Score, Task};
