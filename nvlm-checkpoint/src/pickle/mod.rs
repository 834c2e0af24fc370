//! A pickle reader that never executes anything: an interpreter for the opcodes of protocols 2-5 that PyTorch and
//! Megatron checkpoints use, building a tree of values in an arena. Calls (`REDUCE`, `NEWOBJ`) and `BUILD` are
//! recorded, not performed; only globals from an allow-list of modules are accepted at all, and the readers give
//! meaning to the few they need (`torch.Size`, dtypes, tensor rebuild functions, DCP metadata classes).

mod value;
mod vm;

pub use value::{Arena, Id, Value};
pub use vm::{load, ALLOWED_MODULE_PREFIXES};
