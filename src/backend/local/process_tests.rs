//! Every process of a notebook: ended by its stop, never adopted as its
//! server or killed at start-up, and accounted to it.

use std::path::Path;
use std::time::Duration;

use super::procfs::MARKER_ENV;
use super::tests::{backend, cfg, local, pid_and_ticks, user_stop, wait_status};
use super::Backend;
use crate::backend::StopOutcome;
use crate::notebook::Status;

/// The marker of notebook `name` of a backend whose data dir is
/// `<dir>/data`.
fn marker(dir: &Path, name: &str) -> String {
    dir.join("data/notebooks")
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

/// The state letter of a process, if it exists.
fn state(pid: i32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Exists and has not exited (a zombie has).
fn alive(pid: i32) -> bool {
    state(pid).is_some_and(|s| s != b'Z' && s != b'X')
}

/// Live processes whose environment carries `marker`.
fn marked_pids(marker: &str) -> Vec<i32> {
    let want = format!("{MARKER_ENV}={marker}");
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
        })
        .filter(|&pid| alive(pid))
        .collect();
    pids.sort_unstable();
    pids
}

/// Polls until `f` holds (up to 10 s).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A process carrying notebook `name`'s marker, in a process group of its
/// own: a job a user started in a terminal (`nohup … &`), left over.
fn leftover(dir: &Path, name: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("300").env(MARKER_ENV, marker(dir, name));
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn().unwrap()
}

fn write_record(dir: &Path, name: &str, desired: &str) {
    let notebooks = dir.join("data/notebooks");
    std::fs::create_dir_all(&notebooks).unwrap();
    let record = format!(
        r#"{{"desired":"{desired}","pid":null,"pid_start_ticks":null,"boot_id":null,"started_at":null,"stopped_at":null,"stopped_by":{}}}"#,
        if desired == "stopped" {
            r#"{"trigger":"user"}"#
        } else {
            "null"
        }
    );
    std::fs::write(notebooks.join(format!("{name}.json")), record).unwrap();
}

fn sh(script: &str) -> Vec<String> {
    ["sh", "-c", script].map(String::from).to_vec()
}

#[tokio::test]
async fn a_marked_leftover_is_neither_adopted_nor_killed_and_the_server_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    // The record says running; its server died while nbidle was down, and
    // a job the user started from one of its terminals still runs.
    write_record(dir.path(), "a", "running");
    let mut job = leftover(dir.path(), "a");
    let job_pid = job.id() as i32;
    let b = backend(dir.path(), &cfg(dir.path(), &["a"])).await;
    let id = local("a");
    let (server, ticks) = pid_and_ticks(&b, &id);
    assert_ne!(server, job_pid, "the job was adopted as the server");
    assert!(
        super::procfs::process_alive(server, ticks),
        "a new server runs"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(job_pid), "the job was killed at start-up");
    assert_eq!(b.get(&id).await.unwrap().status, Status::Starting);

    // The next stop ends it with the server.
    assert!(matches!(user_stop(&b, &id).await, StopOutcome::Stopped(_)));
    wait_status(&b, &id, Status::Stopped).await;
    let status = tokio::task::spawn_blocking(move || job.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.code().is_none(),
        "the job ended by a signal: {status}"
    );
    assert!(!alive(server));
    b.shutdown().await;
}

#[tokio::test]
async fn a_stopped_notebook_s_leftover_is_left_alone_at_start_up_and_a_user_s_stop_ends_it() {
    let dir = tempfile::tempdir().unwrap();
    write_record(dir.path(), "a", "stopped");
    let mut job = leftover(dir.path(), "a");
    let job_pid = job.id() as i32;
    let b = backend(dir.path(), &cfg(dir.path(), &["a"])).await;
    let id = local("a");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(job_pid), "killed at start-up, outside any stop");
    assert_eq!(b.get(&id).await.unwrap().status, Status::Stopped);

    // A stop asked for by a user is the way out.
    assert!(matches!(
        user_stop(&b, &id).await,
        StopOutcome::AlreadyStopped(_)
    ));
    let status = tokio::task::spawn_blocking(move || job.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.code().is_none(), "ended by a signal: {status}");
    wait_status(&b, &id, Status::Stopped).await;
    b.shutdown().await;
}

/// A notebook that leaves its process group and session in every way a
/// terminal's user can: `setsid`, a `nohup` job, one that ignores SIGTERM,
/// and a child that dropped the marker while its parent lives.
const ESCAPES: &str = "setsid sleep 301 &
setsid sh -c 'trap \"\" TERM; exec sleep 302' &
setsid sh -c 'env -u NBIDLE_NOTEBOOK sleep 303 & echo $! > unmarked.pid; wait' &
nohup sleep 304 > /dev/null 2>&1 &
exec sleep 300";

/// Waits until the notebook `name` runs all of `ESCAPES`; returns the
/// marked processes and the unmarked one.
async fn escapes_running(dir: &Path, name: &str) -> (Vec<i32>, i32) {
    let m = marker(dir, name);
    let pid_file = dir.join("ws").join(name).join("unmarked.pid");
    until("the escapes", || {
        marked_pids(&m).len() == 5 && pid_file.exists()
    })
    .await;
    let unmarked: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(unmarked));
    (marked_pids(&m), unmarked)
}

#[tokio::test]
async fn a_stop_ends_every_process_of_the_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["a"]);
    c.notebooks[0].command = sh(ESCAPES);
    let b = backend(dir.path(), &c).await;
    let id = local("a");
    let (marked, unmarked) = escapes_running(dir.path(), "a").await;

    assert!(matches!(user_stop(&b, &id).await, StopOutcome::Stopped(_)));
    wait_status(&b, &id, Status::Stopped).await;
    let left: Vec<i32> = marked
        .iter()
        .copied()
        .chain([unmarked])
        .filter(|&p| alive(p))
        .collect();
    assert_eq!(left, Vec::<i32>::new(), "survived the stop");
    assert_eq!(marked_pids(&marker(dir.path(), "a")), Vec::<i32>::new());
    assert_eq!(b.processes().unwrap().stop_survivors, 0);
    b.shutdown().await;
}

#[tokio::test]
async fn stop_on_exit_ends_every_process_of_every_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["a", "b"]);
    c.notebooks[0].command = sh(ESCAPES);
    // A server that died, leaving a job behind.
    c.notebooks[1].command = sh("setsid sleep 305 & exit 0");
    let b = backend(dir.path(), &c).await;
    let (marked, unmarked) = escapes_running(dir.path(), "a").await;
    let m_b = marker(dir.path(), "b");
    until("b's job", || marked_pids(&m_b).len() == 1).await;
    let job = marked_pids(&m_b)[0];

    b.shutdown().await;
    let left: Vec<i32> = marked
        .iter()
        .copied()
        .chain([unmarked, job])
        .filter(|&p| alive(p))
        .collect();
    assert_eq!(left, Vec::<i32>::new(), "survived stop_on_exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_during_a_stop_waits_for_it_and_the_new_server_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["a"]);
    c.notebooks[0].command =
        sh("trap '' TERM; setsid sh -c 'trap \"\" TERM; exec sleep 302' & : > trapped; exec sleep 1000");
    let b = backend(dir.path(), &c).await;
    let id = local("a");
    let m = marker(dir.path(), "a");
    let trapped = dir.path().join("ws/a/trapped");
    until("the traps", || {
        trapped.exists() && marked_pids(&m).len() == 2
    })
    .await;
    let old = marked_pids(&m);

    std::fs::remove_file(&trapped).unwrap();
    assert!(matches!(user_stop(&b, &id).await, StopOutcome::Stopped(_)));
    b.start(&id).await.unwrap();
    let (server, ticks) = pid_and_ticks(&b, &id);
    let gone: Vec<i32> = old.iter().copied().filter(|&p| alive(p)).collect();
    assert_eq!(gone, Vec::<i32>::new(), "the old life's processes are gone");
    // Past the old stop's grace period: nothing of it reaches the new life.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        super::procfs::process_alive(server, ticks),
        "the new server runs"
    );
    assert_eq!(marked_pids(&m).len(), 2, "the new life's processes run");
    b.shutdown().await;
}

// Accounting through the backend.

#[tokio::test]
async fn a_notebook_s_cpu_counter_keeps_what_exited_processes_used() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["a", "idle"]);
    c.notebooks[0].command = sh("timeout 2 sh -c 'while :; do :; done'; exec sleep 300");
    let b = backend(dir.path(), &c).await;
    let index = b.slot(&local("a")).unwrap().index;
    let mut last = 0.0;
    let mut busy_processes = 0;
    for _ in 0..30 {
        let (cpu, rss, n) = b.scan().await.usage(index);
        assert!(cpu >= last, "the counter went back from {last} to {cpu}");
        assert!(rss > 0);
        busy_processes = busy_processes.max(n);
        last = cpu;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        busy_processes >= 3,
        "sh, timeout and the loop: {busy_processes}"
    );
    let (cpu, _, n) = b.scan().await.usage(index);
    assert_eq!(n, 1, "only the server is left");
    assert!(cpu > 0.3, "the loop's CPU is counted after its exit: {cpu}");
    let report = b.processes().unwrap();
    let ids: Vec<_> = report
        .notebooks
        .iter()
        .map(|u| u.id.name.as_str())
        .collect();
    assert_eq!(ids, ["a", "idle"]);
    assert!(report.notebooks[0].cpu_seconds >= cpu);
    assert!(report.notebooks[1].cpu_seconds < 0.1, "{report:?}");
    assert_eq!(report.notebooks[1].processes, 1);
    assert!(
        report.processes_read > 2 && report.scan_seconds > 0.0,
        "{report:?}"
    );
    b.shutdown().await;
}
