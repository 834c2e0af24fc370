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
    /// Reads `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT` (torchrun), else Slurm's
    /// `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` (under `srun`). `None` for a single-process run.
    pub fn from_env() -> Result<Option<LaunchEnv>> {
        LaunchEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// [`LaunchEnv::from_env`] over any variable lookup (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>> {
        let number = |name: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse()
                .map_err(|_| DistError::Launch(format!("{name}={value:?} is not a non-negative integer")))
        };
        // torchrun sets WORLD_SIZE and RANK; `srun` sets SLURM_NTASKS and SLURM_PROCID (an `salloc` shell sets only
        // SLURM_NTASKS: a single process, not a launch).
        let names = match (var("WORLD_SIZE"), var("SLURM_PROCID")) {
            (Some(_), _) => ["WORLD_SIZE", "RANK", "LOCAL_RANK"],
            (None, Some(_)) if var("SLURM_NTASKS").is_some() => {
                ["SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"]
            }
            _ => return Ok(None),
        };
        let [size_name, rank_name, local_name] = names;
        let world_size = number(size_name, &var(size_name).unwrap_or_default())?;
        let rank = match var(rank_name) {
            Some(value) => number(rank_name, &value)?,
            None => {
                return Err(DistError::Launch(format!(
                    "{size_name} is set but {rank_name} is not"
                )))
            }
        };
        let local_rank = match var(local_name) {
            Some(value) => number(local_name, &value)?,
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
