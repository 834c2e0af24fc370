//! Multi-process runs under torchrun or Slurm: one process per GPU (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`, or Slurm's variables), the NCCL id handed out by a TCP rendezvous, each process
//! loading only its shard. Rank 0 reads the inputs (tokenization, tiling) and prints; the others receive the inputs
//! by broadcast and stay quiet. Only `generate` runs this way: `chat` and `serve` use `--tp N` in one process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use nvlm_dist::{rendezvous, Comm, LaunchEnv, NcclComm};
use nvlm_tensor::{CudaDevice, DType, Device, Tensor};

/// How long ranks wait for each other at the rendezvous.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

/// The launch environment when this process is one of several (`WORLD_SIZE` > 1), else `None`.
pub fn launch_env() -> anyhow::Result<Option<LaunchEnv>> {
    Ok(LaunchEnv::from_env()?.filter(|l| l.world_size > 1))
}

/// Refuses `command` in a multi-process launch, saying what to run instead.
pub fn refuse(command: &str) -> anyhow::Result<()> {
    if let Some(launch) = launch_env()? {
        bail!(
            "this process was launched as rank {} of {} (torchrun/Slurm variables): only `nvlm generate` runs across \
             processes; run `nvlm {command}` as one process with --tp N over the GPUs of one node",
            launch.rank,
            launch.world_size
        );
    }
    Ok(())
}

/// This process's GPU: `cuda:LOCAL_RANK`, after checking the device and `--tp` the user gave.
pub fn device_of(launch: &LaunchEnv, device: Device, tensor_parallel: usize) -> anyhow::Result<Device> {
    if device == Device::Cpu {
        bail!(
            "rank {} of {}: a multi-process run drives one GPU per process; pass --device cuda (for CPU tests use one \
             process with --tp N)",
            launch.rank,
            launch.world_size
        );
    }
    if tensor_parallel != 1 && tensor_parallel != launch.world_size {
        bail!(
            "--tp {tensor_parallel} under a launch of {} processes: the processes are the tensor-parallel ranks, so \
             leave --tp out or set it to {}",
            launch.world_size,
            launch.world_size
        );
    }
    Ok(Device::Cuda(launch.local_rank))
}

/// The NCCL group of all processes: rank 0 makes the id, the rendezvous hands it to every rank, each joins on its GPU.
pub fn process_group(launch: &LaunchEnv) -> anyhow::Result<Arc<dyn Comm>> {
    let id = match launch.rank {
        0 => Some(NcclComm::unique_id()?),
        _ => None,
    };
    let payload = rendezvous(launch, id.as_ref().map(|id| &id[..]), RENDEZVOUS_TIMEOUT)
        .context("meeting the other ranks")?;
    let id: [u8; 128] = payload.try_into().map_err(|bytes: Vec<u8>| {
        anyhow::anyhow!("the rendezvous sent {} bytes, not an NCCL id", bytes.len())
    })?;
    let device = CudaDevice::get(launch.local_rank)?;
    let comm =
        NcclComm::new(device, launch.rank, launch.world_size, &id).context("joining the NCCL group")?;
    Ok(Arc::new(comm))
}

/// What one generation needs: prompt ids, and the tiles (`[N, 448, 448, 3]` u8, concatenated) with each image's
/// tile count.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Inputs {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// Tiles of all images.
    pub tiles: Vec<u8>,
    /// Tiles per image, in prompt order.
    pub tile_counts: Vec<usize>,
}

/// Rank 0's inputs on every rank: rank 0 passes what it prepared (or its error, which the others hear about instead
/// of waiting forever), the others pass anything and get rank 0's.
pub fn share_inputs(group: &dyn Comm, prepared: anyhow::Result<Inputs>) -> anyhow::Result<Inputs> {
    let lead = group.rank() == 0;
    let (header, inputs) = match (&prepared, lead) {
        (Ok(inputs), true) => (
            vec![
                1,
                inputs.ids.len() as i64,
                inputs.tiles.len() as i64,
                inputs.tile_counts.len() as i64,
            ],
            inputs.clone(),
        ),
        // Rank 0 failed: a zero flag tells the others to stop.
        (Err(_), true) => (vec![0; 4], Inputs::default()),
        (_, false) => (vec![0; 4], Inputs::default()),
    };
    let header = group
        .broadcast(&Tensor::from_vec(header, &[4])?, 0)?
        .to_vec::<i64>()?;
    if lead {
        prepared.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    }
    if header[0] == 0 {
        bail!("rank 0 could not prepare the inputs (see its error)");
    }
    let [ids_len, tiles_len, counts_len] = [header[1], header[2], header[3]].map(|v| v as usize);
    let ids: Vec<i64> = inputs.ids.iter().map(|&v| i64::from(v)).collect();
    let counts: Vec<i64> = inputs.tile_counts.iter().map(|&v| v as i64).collect();
    let send = |values: Tensor| -> anyhow::Result<Tensor> { Ok(group.broadcast(&values, 0)?) };
    let ids = send(vector_or_zeros(ids, ids_len, DType::I64)?)?.to_vec::<i64>()?;
    let tiles = send(vector_or_zeros(inputs.tiles, tiles_len, DType::U8)?)?.to_vec::<u8>()?;
    let counts = send(vector_or_zeros(counts, counts_len, DType::I64)?)?.to_vec::<i64>()?;
    Ok(Inputs {
        ids: ids.into_iter().map(|v| v as u32).collect(),
        tiles,
        tile_counts: counts.into_iter().map(|v| v as usize).collect(),
    })
}

/// `values` as a host vector when it holds `len` of them (rank 0), else `len` zeros to receive into.
fn vector_or_zeros<T: nvlm_tensor::Element>(
    values: Vec<T>,
    len: usize,
    dtype: DType,
) -> anyhow::Result<Tensor> {
    Ok(if values.len() == len {
        Tensor::from_vec(values, &[len])?
    } else {
        Tensor::zeros(&[len], dtype, Device::Cpu)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nvlm_dist::ThreadGroup;

    fn inputs() -> Inputs {
        Inputs {
            ids: vec![151644, 8948, 7, 151645],
            tiles: (0..2 * 448 * 448 * 3).map(|i| (i % 251) as u8).collect(),
            tile_counts: vec![1, 1],
        }
    }

    /// `share_inputs` on `ranks` threads, each passing `prepare(rank)`; the results (errors as text) in rank order.
    fn share_on(
        ranks: usize,
        prepare: impl Fn(usize) -> anyhow::Result<Inputs> + Sync,
    ) -> Vec<Result<Inputs, String>> {
        std::thread::scope(|scope| {
            let prepare = &prepare;
            let handles: Vec<_> = ThreadGroup::new(ranks)
                .into_iter()
                .map(|comm| {
                    scope.spawn(move || share_inputs(&comm, prepare(comm.rank())).map_err(|e| e.to_string()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn every_rank_gets_rank_zeros_inputs() {
        // Other ranks never read the files: whatever they pass is ignored.
        let results = share_on(3, |rank| match rank {
            0 => Ok(inputs()),
            _ => Err(anyhow::anyhow!("no inputs here")),
        });
        for (rank, got) in results.into_iter().enumerate() {
            assert_eq!(got.as_ref(), Ok(&inputs()), "rank {rank}");
        }
    }

    #[test]
    fn a_failure_on_rank_zero_reaches_every_rank() {
        let results = share_on(2, |rank| match rank {
            0 => Err(anyhow::anyhow!("cannot open cat.png")),
            _ => Ok(Inputs::default()),
        });
        assert_eq!(results[0], Err("cannot open cat.png".to_string()));
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .contains("rank 0 could not prepare"));
    }

    #[test]
    fn launch_checks_name_the_fix() {
        let launch = LaunchEnv {
            rank: 1,
            world_size: 4,
            local_rank: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
        };
        let cpu = device_of(&launch, Device::Cpu, 1).unwrap_err().to_string();
        assert!(cpu.contains("--device cuda"), "{cpu}");
        let tp = device_of(&launch, Device::Cuda(0), 2).unwrap_err().to_string();
        assert!(tp.contains("--tp 2") && tp.contains("set it to 4"), "{tp}");
        assert_eq!(device_of(&launch, Device::Cuda(0), 4).unwrap(), Device::Cuda(1));
        assert_eq!(device_of(&launch, Device::Cuda(0), 1).unwrap(), Device::Cuda(1));
    }
}
