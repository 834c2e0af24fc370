//! A process group whose ranks are threads of one process, for CPU tests of sharded models. Collectives exchange
//! host tensors through shared slots; reductions add in rank order, so every rank gets bit-identical results.

use std::sync::{Arc, Barrier, Mutex};

use nvlm_tensor::{DType, Device, Tensor};

use crate::{Comm, DistError, Result};

struct Shared {
    size: usize,
    slots: Mutex<Vec<Option<Tensor>>>,
    barrier: Barrier,
}

/// One rank of an in-process group.
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `size` communicators, one per rank, to hand to `size` threads.
    pub fn new(size: usize) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            size,
            slots: Mutex::new(vec![None; size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Publishes `tensor`, waits for everyone, hands all ranks' tensors to `read`, waits again (so slots are not
    /// overwritten by the next collective while someone still reads).
    fn exchange<T>(&self, tensor: &Tensor, read: impl FnOnce(&[Tensor]) -> Result<T>) -> Result<T> {
        let host = tensor.to_device(Device::Cpu)?;
        self.shared
            .slots
            .lock()
            .map_err(|_| DistError::Group("a rank panicked".into()))?[self.rank] = Some(host);
        self.shared.barrier.wait();
        let all: Vec<Tensor> = {
            let slots = self
                .shared
                .slots
                .lock()
                .map_err(|_| DistError::Group("a rank panicked".into()))?;
            slots
                .iter()
                .map(|s| {
                    s.clone()
                        .ok_or_else(|| DistError::Group("a rank did not publish".into()))
                })
                .collect::<Result<_>>()?
        };
        let result = read(&all);
        self.shared.barrier.wait();
        result
    }

    fn check_same(op: &'static str, all: &[Tensor], leading_may_differ: bool) -> Result<()> {
        let first = &all[0];
        for (rank, t) in all.iter().enumerate() {
            let same_shape = if leading_may_differ {
                t.shape().get(1..) == first.shape().get(1..)
            } else {
                t.shape() == first.shape()
            };
            if t.dtype() != first.dtype() || !same_shape {
                return Err(DistError::Mismatch {
                    op,
                    rank,
                    detail: format!(
                        "{} {:?} where rank 0 passed {} {:?}",
                        t.dtype(),
                        t.shape(),
                        first.dtype(),
                        first.shape()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_f32_vec()?)
}

impl Comm for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, tensor: &Tensor) -> Result<Tensor> {
        let device = tensor.device();
        let out = self.exchange(tensor, |all| {
            Self::check_same("all_reduce_sum", all, false)?;
            let mut sum = vec![0f32; all[0].numel()];
            for t in all {
                for (s, v) in sum.iter_mut().zip(f32_values(t)?) {
                    *s += v;
                }
            }
            let reduced = Tensor::from_vec(sum, all[0].shape())?;
            Ok(if all[0].dtype() == DType::F32 {
                reduced
            } else {
                reduced.to_dtype(all[0].dtype())?
            })
        })?;
        Ok(out.to_device(device)?)
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Tensor> {
        let device = tensor.device();
        let out = self.exchange(tensor, |all| {
            Self::check_same("all_gather", all, true)?;
            let mut bytes = Vec::new();
            for t in all {
                bytes.extend_from_slice(t.cpu_bytes()?);
            }
            let mut shape = all[0].shape().to_vec();
            shape[0] = all.iter().map(|t| t.shape()[0]).sum();
            Ok(Tensor::from_bytes(&bytes, all[0].dtype(), &shape, Device::Cpu)?)
        })?;
        Ok(out.to_device(device)?)
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.size() {
            return Err(DistError::Group(format!(
                "broadcast from rank {root} in a group of {}",
                self.size()
            )));
        }
        let device = tensor.device();
        let out = self.exchange(tensor, |all| {
            Self::check_same("broadcast", all, false)?;
            Ok(all[root].clone())
        })?;
        Ok(out.to_device(device)?)
    }

    fn barrier(&self) -> Result<()> {
        self.shared.barrier.wait();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f(comm)` on `size` threads and returns their results in rank order.
    fn on_threads<T: Send>(size: usize, f: impl Fn(&ThreadGroup) -> T + Sync) -> Vec<T> {
        let comms = ThreadGroup::new(size);
        std::thread::scope(|s| {
            let handles: Vec<_> = comms.iter().map(|c| s.spawn(|| f(c))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread"))
                .collect()
        })
    }

    #[test]
    fn all_reduce_sums_in_rank_order_on_every_rank() {
        for size in [1, 2, 4] {
            let results = on_threads(size, |c| {
                let mine: Vec<f32> = (0..6).map(|i| (c.rank() * 10 + i) as f32 + 0.25).collect();
                c.all_reduce_sum(&Tensor::from_vec(mine, &[2, 3]).unwrap())
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap()
            });
            let want: Vec<f32> = (0..6)
                .map(|i| (0..size).map(|r| (r * 10 + i) as f32 + 0.25).sum())
                .collect();
            for r in &results {
                assert_eq!(r, &want, "size {size}");
            }
        }
    }

    #[test]
    fn all_gather_broadcast_and_barrier() {
        let results = on_threads(3, |c| {
            let rows = c.rank() + 1; // ranks may contribute different row counts
            let mine = Tensor::from_vec(vec![c.rank() as i32; rows * 2], &[rows, 2]).unwrap();
            let gathered = c.all_gather(&mine).unwrap();
            c.barrier().unwrap();
            let root = Tensor::from_vec(vec![c.rank() as f32 * 7.0; 4], &[4]).unwrap();
            let b = c.broadcast(&root, 2).unwrap();
            (
                gathered.shape().to_vec(),
                gathered.to_vec::<i32>().unwrap(),
                b.to_vec::<f32>().unwrap(),
            )
        });
        for (shape, values, broadcast) in results {
            assert_eq!(shape, vec![6, 2]);
            assert_eq!(values, vec![0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
            assert_eq!(broadcast, vec![14.0; 4]);
        }
    }

    #[test]
    fn mismatched_shapes_are_errors_on_every_rank() {
        let results = on_threads(2, |c| {
            let t = Tensor::from_vec(vec![1f32; 2 + c.rank()], &[2 + c.rank()]).unwrap();
            c.all_reduce_sum(&t).err().map(|e| e.to_string())
        });
        for r in results {
            let e = r.expect("an error");
            assert!(e.contains("all_reduce_sum") && e.contains("rank 1"), "{e}");
        }
    }
}
