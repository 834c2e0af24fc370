//! A small TCP rendezvous: rank 0 listens on `MASTER_ADDR:MASTER_PORT`, every other rank connects and says who it
//! is, and once all have arrived rank 0 hands each the same payload (the NCCL unique id). Every failure (a rank that
//! never arrives, two processes claiming one rank, disagreeing world sizes) is an error on every rank that is
//! listening, naming the cause, within the timeout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::{DistError, LaunchEnv, Result};

const MAGIC: &[u8; 8] = b"NVLMRDV1";
const POLL: Duration = Duration::from_millis(20);

fn failure(message: impl Into<String>) -> DistError {
    DistError::Launch(message.into())
}

/// Distributes rank 0's `payload` to every rank of `env`'s world and returns it. Rank 0 passes `Some(payload)`,
/// the others `None`. Fails after `timeout` if the group does not assemble.
pub fn rendezvous(env: &LaunchEnv, payload: Option<&[u8]>, timeout: Duration) -> Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    match (env.rank, payload) {
        (0, Some(payload)) => serve(env, payload, deadline, timeout),
        (0, None) => Err(failure("rendezvous: rank 0 must provide the payload")),
        (_, Some(_)) => Err(failure("rendezvous: only rank 0 provides the payload")),
        (_, None) => join(env, deadline, timeout),
    }
}

fn serve(env: &LaunchEnv, payload: &[u8], deadline: Instant, timeout: Duration) -> Result<Vec<u8>> {
    let address = (env.master_addr.as_str(), env.master_port);
    let listener = TcpListener::bind(address)
        .or_else(|_| TcpListener::bind(("0.0.0.0", env.master_port)))
        .map_err(|e| {
            failure(format!(
                "rank 0 cannot listen on port {}: {e} (set MASTER_PORT to a free port)",
                env.master_port
            ))
        })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| failure(format!("rendezvous socket: {e}")))?;
    let mut arrived: Vec<Option<TcpStream>> = (0..env.world_size).map(|_| None).collect();
    let mut problem = None;
    while arrived[1..].iter().any(Option::is_none) && problem.is_none() {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .and_then(|_| {
                        stream.set_read_timeout(Some(
                            deadline.saturating_duration_since(Instant::now()).max(POLL),
                        ))
                    })
                    .map_err(|e| failure(format!("rendezvous socket: {e}")))?;
                match read_hello(&mut stream) {
                    Ok((rank, size)) if size != env.world_size => {
                        problem = Some(format!(
                            "rank {rank} was started with WORLD_SIZE={size}, rank 0 with {}",
                            env.world_size
                        ));
                        let _ = send(&mut stream, Err(problem.as_deref().unwrap_or_default()));
                    }
                    Ok((rank, _)) if rank == 0 || rank >= env.world_size || arrived[rank].is_some() => {
                        problem = Some(format!("two processes claim rank {rank} (or it is out of range)"));
                        let _ = send(&mut stream, Err(problem.as_deref().unwrap_or_default()));
                    }
                    Ok((rank, _)) => arrived[rank] = Some(stream),
                    Err(e) => {
                        problem = Some(format!("a process connected but did not introduce itself: {e}"))
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> = (1..env.world_size).filter(|&r| arrived[r].is_none()).collect();
                    problem = Some(format!(
                        "rank(s) {missing:?} never arrived at {}:{} within {timeout:?}",
                        env.master_addr, env.master_port
                    ));
                } else {
                    std::thread::sleep(POLL);
                }
            }
            Err(e) => problem = Some(format!("accepting a rank: {e}")),
        }
    }
    let outcome = match &problem {
        Some(message) => Err(message.as_str()),
        None => Ok(payload),
    };
    for stream in arrived.iter_mut().flatten() {
        send(stream, outcome).map_err(|e| failure(format!("sending the rendezvous payload: {e}")))?;
    }
    match problem {
        Some(message) => Err(failure(format!("rendezvous: {message}"))),
        None => Ok(payload.to_vec()),
    }
}

fn join(env: &LaunchEnv, deadline: Instant, timeout: Duration) -> Result<Vec<u8>> {
    let target = format!("{}:{}", env.master_addr, env.master_port);
    let mut stream = loop {
        let attempt = target
            .to_socket_addrs()
            .map_err(|e| failure(format!("MASTER_ADDR {target}: {e}")))?
            .find_map(|address| {
                TcpStream::connect_timeout(&address, POLL.max(Duration::from_millis(200))).ok()
            });
        if let Some(stream) = attempt {
            break stream;
        }
        if Instant::now() >= deadline {
            return Err(failure(format!(
                "rendezvous: rank {} could not reach rank 0 at {target} within {timeout:?} (is rank 0 running, and \
                 MASTER_ADDR/MASTER_PORT the same everywhere?)",
                env.rank
            )));
        }
        std::thread::sleep(POLL);
    };
    let io = |e: std::io::Error| failure(format!("rendezvous with rank 0 at {target}: {e}"));
    stream
        .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(POLL)))
        .map_err(io)?;
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(&(env.rank as u64).to_le_bytes());
    hello.extend_from_slice(&(env.world_size as u64).to_le_bytes());
    stream.write_all(&hello).map_err(io)?;
    let mut status = [0u8; 1];
    stream.read_exact(&mut status).map_err(|e| {
        failure(format!(
            "rendezvous: rank 0 at {target} did not answer within {timeout:?}: {e}"
        ))
    })?;
    let body = read_frame(&mut stream).map_err(io)?;
    match status[0] {
        0 => Ok(body),
        _ => Err(failure(format!(
            "rendezvous failed at rank 0: {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}

fn read_hello(stream: &mut TcpStream) -> std::io::Result<(usize, usize)> {
    let mut hello = [0u8; 24];
    stream.read_exact(&mut hello)?;
    if &hello[..8] != MAGIC {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an nvlm rendezvous",
        ));
    }
    let word = |at: usize| u64::from_le_bytes(hello[at..at + 8].try_into().unwrap_or_default()) as usize;
    Ok((word(8), word(16)))
}

fn send(stream: &mut TcpStream, outcome: std::result::Result<&[u8], &str>) -> std::io::Result<()> {
    let (status, body) = match outcome {
        Ok(payload) => (0u8, payload),
        Err(message) => (1u8, message.as_bytes()),
    };
    stream.write_all(&[status])?;
    stream.write_all(&(body.len() as u64).to_le_bytes())?;
    stream.write_all(body)
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "oversized rendezvous payload",
        ));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    Ok(body)
}
