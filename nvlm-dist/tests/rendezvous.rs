//! The launcher's environment parsing and the TCP rendezvous on loopback: ranks as threads, ranks as separate
//! processes (this test binary re-run as children), and the failures a user meets (a missing rank, a rank claimed
//! twice, disagreeing world sizes, no rank 0).

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nvlm_dist::{rendezvous, LaunchEnv, DEFAULT_MASTER_PORT};

const PAYLOAD: &[u8] = b"an NCCL unique id is 128 opaque bytes";
const CHILD_VAR: &str = "NVLM_RENDEZVOUS_CHILD";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(rank: usize, world_size: usize, port: u16) -> LaunchEnv {
    LaunchEnv {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
    }
}

fn from(vars: &[(&str, &str)]) -> nvlm_dist::Result<Option<LaunchEnv>> {
    let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    LaunchEnv::from_vars(|name| vars.get(name).cloned())
}

#[test]
fn torchrun_and_slurm_environments_parse() {
    assert_eq!(from(&[]).unwrap(), None, "no world size: a single-process run");
    let torchrun = from(&[
        ("RANK", "5"),
        ("WORLD_SIZE", "16"),
        ("LOCAL_RANK", "5"),
        ("MASTER_ADDR", "node-a"),
        ("MASTER_PORT", "6000"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(
        (
            torchrun.rank,
            torchrun.world_size,
            torchrun.local_rank,
            torchrun.master_addr.as_str(),
            torchrun.master_port
        ),
        (5, 16, 5, "node-a", 6000)
    );
    let slurm = from(&[
        ("SLURM_PROCID", "9"),
        ("SLURM_NTASKS", "16"),
        ("SLURM_LOCALID", "1"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!((slurm.rank, slurm.world_size, slurm.local_rank), (9, 16, 1));
    assert_eq!(slurm.master_port, DEFAULT_MASTER_PORT);
    assert_eq!(
        from(&[("SLURM_NTASKS", "8")]).unwrap(),
        None,
        "an salloc shell is not a launch"
    );
    for (vars, needle) in [
        (&[("WORLD_SIZE", "2")][..], "RANK"),
        (&[("WORLD_SIZE", "2"), ("RANK", "2")][..], "does not fit"),
        (&[("WORLD_SIZE", "two"), ("RANK", "0")][..], "WORLD_SIZE"),
        (
            &[("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "99999")][..],
            "MASTER_PORT",
        ),
    ] {
        let err = from(vars).unwrap_err().to_string();
        assert!(err.contains(needle), "{vars:?}: {err}");
    }
}

#[test]
fn four_ranks_as_threads_receive_rank_zeros_payload() {
    let port = free_port();
    let ranks: Vec<_> = (0..4)
        .map(|rank| {
            std::thread::spawn(move || {
                let payload = (rank == 0).then_some(PAYLOAD);
                rendezvous(&env(rank, 4, port), payload, Duration::from_secs(20))
            })
        })
        .collect();
    for (rank, handle) in ranks.into_iter().enumerate() {
        assert_eq!(handle.join().unwrap().unwrap(), PAYLOAD, "rank {rank}");
    }
}

fn spawn_child(rank: usize, world_size: usize, port: u16) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "three_processes_on_loopback_receive_rank_zeros_payload",
            "--nocapture",
        ])
        .env(CHILD_VAR, format!("{rank},{world_size},{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn three_processes_on_loopback_receive_rank_zeros_payload() {
    if let Ok(spec) = std::env::var(CHILD_VAR) {
        // A child process: "rank,world,port"; print the payload it received.
        let parts: Vec<usize> = spec.split(',').map(|p| p.parse().unwrap()).collect();
        let got = rendezvous(
            &env(parts[0], parts[1], parts[2] as u16),
            None,
            Duration::from_secs(20),
        )
        .unwrap();
        println!("RECEIVED {}", String::from_utf8(got).unwrap());
        return;
    }
    let port = free_port();
    let children: Vec<Child> = (1..3).map(|rank| spawn_child(rank, 3, port)).collect();
    let ours = rendezvous(&env(0, 3, port), Some(PAYLOAD), Duration::from_secs(20)).unwrap();
    assert_eq!(ours, PAYLOAD);
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("RECEIVED {}", String::from_utf8_lossy(PAYLOAD))),
            "{stdout}"
        );
    }
}

#[test]
fn a_rank_that_never_arrives_is_named_on_every_waiting_rank() {
    let port = free_port();
    let timeout = Duration::from_millis(800);
    let rank1 =
        std::thread::spawn(move || rendezvous(&env(1, 3, port), None, timeout + Duration::from_secs(5)));
    let err0 = rendezvous(&env(0, 3, port), Some(PAYLOAD), timeout)
        .unwrap_err()
        .to_string();
    assert!(err0.contains("[2]") && err0.contains("never arrived"), "{err0}");
    let err1 = rank1.join().unwrap().unwrap_err().to_string();
    assert!(err1.contains("never arrived"), "rank 1 hears why: {err1}");
}

#[test]
fn disagreeing_world_sizes_and_duplicate_ranks_are_errors() {
    let port = free_port();
    let timeout = Duration::from_secs(10);
    let wrong = std::thread::spawn(move || rendezvous(&env(1, 4, port), None, timeout));
    let err = rendezvous(&env(0, 2, port), Some(PAYLOAD), timeout)
        .unwrap_err()
        .to_string();
    assert!(err.contains("WORLD_SIZE=4"), "{err}");
    let heard = wrong.join().unwrap().unwrap_err().to_string();
    assert!(heard.contains("WORLD_SIZE=4"), "{heard}");

    let port = free_port();
    let twins: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || rendezvous(&env(1, 3, port), None, timeout)))
        .collect();
    let err = rendezvous(&env(0, 3, port), Some(PAYLOAD), timeout)
        .unwrap_err()
        .to_string();
    assert!(err.contains("claim rank 1"), "{err}");
    for twin in twins {
        assert!(
            twin.join().unwrap().is_err(),
            "a twin of a duplicated rank must not proceed"
        );
    }
}

#[test]
fn no_rank_zero_is_a_clear_timeout() {
    let err = rendezvous(&env(1, 2, free_port()), None, Duration::from_millis(500))
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not reach rank 0"), "{err}");
}
