//! Where this process sits in a multi-process launch, read from the environment torchrun and Slurm set.

use crate::{DistError, Result};

/// This process's place in a launch of `world_size` processes (one per GPU), and where rank 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank within this node (which GPU to use).
    pub local_rank: usize,
    /// Host name or address of rank 0.
    pub master_addr: String,
    /// Port rank 0 listens on for the rendezvous.
    pub master_port: u16,
}

/// The port torchrun uses when `MASTER_PORT` is unset.
pub const DEFAULT_MASTER_PORT: u16 = 29500;

impl LaunchEnv {
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (torchrun), falling back to Slurm's
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`. `None` when neither names a world size (a single-process run).
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        LaunchEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// [`LaunchEnv::from_env`] over any variable lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let first = |names: &[&'static str]| names.iter().find_map(|&n| var(n).map(|v| (n, v)));
        let Some((size_name, size)) = first(&["WORLD_SIZE", "SLURM_NTASKS"]) else {
            return Ok(None);
        };
        let number = |name: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse()
                .map_err(|_| DistError::Launch(format!("{name}={value:?} is not a non-negative integer")))
        };
        let world_size = number(size_name, &size)?;
        let rank = match first(&["RANK", "SLURM_PROCID"]) {
            Some((name, value)) => number(name, &value)?,
            None => {
                return Err(DistError::Launch(format!(
                    "{size_name} is set but RANK (or SLURM_PROCID) is not"
                )))
            }
        };
        let local_rank = match first(&["LOCAL_RANK", "SLURM_LOCALID"]) {
            Some((name, value)) => number(name, &value)?,
            None => rank,
        };
        if world_size == 0 || rank >= world_size {
            return Err(DistError::Launch(format!(
                "rank {rank} does not fit a world of {world_size} processes"
            )));
        }
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".to_string());
        let master_port = match var("MASTER_PORT") {
            Some(port) => port
                .trim()
                .parse()
                .map_err(|_| DistError::Launch(format!("MASTER_PORT={port:?} is not a port number")))?,
            None => DEFAULT_MASTER_PORT,
        };
        Ok(Some(LaunchEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }
}
