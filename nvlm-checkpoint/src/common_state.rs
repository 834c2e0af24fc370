//! `common.pt`: the non-sharded part of a Megatron checkpoint, whose `args` namespace holds the hyper-parameters.

use std::collections::BTreeMap;
use std::path::Path;

use crate::pickle::{Arena, Id, Value};
use crate::torch_save::TorchArchive;
use crate::{CheckpointError, Result};

/// One value of Megatron's `args`.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    /// None.
    None,
    /// A bool.
    Bool(bool),
    /// An int.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A list or tuple of plain values.
    List(Vec<ArgValue>),
    /// Anything else (a dtype, an enum, a class), by its class name.
    Other(String),
}

impl ArgValue {
    /// As an int.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            ArgValue::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// As a float (ints widen).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            ArgValue::Float(v) => Some(*v),
            ArgValue::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// As a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            ArgValue::Bool(v) => Some(*v),
            _ => None,
        }
    }
}

/// What `common.pt` says about the checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CommonState {
    /// `args`, attribute by attribute.
    pub args: BTreeMap<String, ArgValue>,
    /// `iteration`, when present.
    pub iteration: Option<i64>,
}

fn plain(a: &Arena, id: Id) -> ArgValue {
    match a.get(id) {
        Value::None => ArgValue::None,
        Value::Bool(b) => ArgValue::Bool(*b),
        Value::Float(f) => ArgValue::Float(*f),
        Value::Str(s) => ArgValue::Str(s.clone()),
        Value::Tuple(items) | Value::List(items) => {
            ArgValue::List(items.iter().map(|&i| plain(a, i)).collect())
        }
        _ => match a.int(id) {
            Some(v) => ArgValue::Int(v),
            None => ArgValue::Other(a.class_name(id).unwrap_or_else(|| "?".into())),
        },
    }
}

impl CommonState {
    /// Reads `dir/common.pt`.
    pub fn read(dir: &Path) -> Result<CommonState> {
        let path = dir.join("common.pt");
        let bytes = std::fs::read(&path).map_err(CheckpointError::io(&path))?;
        let archive = TorchArchive::open(&bytes, path.display().to_string())?;
        let a = &archive.arena;
        let mut state = CommonState::default();
        if let Some(args) = a.dict_get(archive.root, "args") {
            if let Some(entries) = a.object_state(args).and_then(|s| a.dict_entries(s)) {
                for &(k, v) in entries {
                    if let Some(k) = a.str(k) {
                        state.args.insert(k.to_string(), plain(a, v));
                    }
                }
            }
        }
        state.iteration = a.dict_get(archive.root, "iteration").and_then(|i| a.int(i));
        Ok(state)
    }

    /// `args.<name>` as an int.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.args.get(name).and_then(ArgValue::as_int)
    }
}
