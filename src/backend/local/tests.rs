use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::procfs::{gone, proc_start_ticks, process_alive, signal_group};
use super::slot::{parse_record, Desired, Persisted};
use super::supervise::find_program;
use super::{Backend, DataDirLock, LocalBackend};
use crate::backend::{StopOutcome, StopRequest};
use crate::config::{HumanDuration, LocalConfig, LocalNotebook};
use crate::error::Error;
use crate::notebook::{
    IdleBounds, NotebookId, NotebookState, Status, StopCause, Timestamp, LOCAL_NAMESPACE,
};

pub(super) fn cfg(dir: &Path, names: &[&str]) -> LocalConfig {
    LocalConfig {
        stop_grace_period: HumanDuration(Duration::from_secs(2)),
        stop_on_exit: true,
        process_scan_interval: HumanDuration(Duration::from_secs(1)),
        notebooks: names
            .iter()
            .map(|n| LocalNotebook {
                name: n.to_string(),
                command: vec!["sleep".into(), "300".into()],
                workdir: dir.join("ws").join(n),
                url: "http://127.0.0.1:9/".into(),
                token: None,
                env: Default::default(),
                autostop: true,
                idle_after: None,
                owner: None,
                wake_on_visit: None,
            })
            .collect(),
        ..LocalConfig::default()
    }
}

pub(super) async fn user_stop(b: &LocalBackend, id: &NotebookId) -> StopOutcome {
    let req = StopRequest {
        cause: StopCause::User { by: None },
        unless_started_after: None,
    };
    b.stop(id, req).await.unwrap()
}

pub(super) fn bounds() -> IdleBounds {
    IdleBounds {
        default: Duration::from_secs(1800),
        min: None,
        max: None,
    }
}

/// A backend over `c` with its data dir in `dir`, recovered.
pub(super) async fn backend(dir: &Path, c: &LocalConfig) -> Arc<LocalBackend> {
    LocalBackend::new(c, &dir.join("data"), bounds())
        .await
        .unwrap()
}

pub(super) fn local(name: &str) -> NotebookId {
    NotebookId::new(LOCAL_NAMESPACE, name)
}

/// A command that cannot be spawned.
const MISSING: &str = "/nonexistent/jupyter";

pub(super) fn pid_and_ticks(b: &LocalBackend, id: &NotebookId) -> (i32, Option<u64>) {
    b.slot(id)
        .unwrap()
        .with(|st| (st.p.pid.unwrap(), st.p.pid_start_ticks))
}

#[tokio::test]
async fn a_start_that_cannot_spawn_keeps_the_io_error_as_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["bad"]);
    c.notebooks[0].command = vec![MISSING.into()];
    let b = backend(dir.path(), &c).await;
    let e = b.start(&local("bad")).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(r#"backend: starting local/bad: "/nonexistent/jupyter": "#),
        "{e}"
    );
    let source = std::error::Error::source(&e).expect("a source");
    assert_eq!(
        source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
        Some(std::io::ErrorKind::NotFound),
        "{source:?}"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_notebook_that_cannot_start_is_failed_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["bad", "good"]);
    c.notebooks[0].command = vec![MISSING.into()];
    let b = backend(dir.path(), &c).await;
    let bad = b.get(&local("bad")).await.unwrap();
    assert_eq!(bad.status, Status::Failed);
    assert!(bad.message.unwrap().contains("/nonexistent/jupyter"));
    assert_eq!(
        b.get(&local("good")).await.unwrap().status,
        Status::Starting
    );
    b.shutdown().await;
}

pub(super) async fn wait_status(b: &LocalBackend, id: &NotebookId, want: Status) -> NotebookState {
    for _ in 0..100 {
        let s = b.get(id).await.unwrap();
        if s.status == want {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{id} never reached {want:?}: {:?}",
        b.get(id).await.unwrap()
    );
}

#[tokio::test]
async fn stop_keeps_workdir_and_survives_restart_and_start_adopts_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), &["a"]);
    let id = local("a");
    let b = backend(dir.path(), &c).await;
    let (pid, ticks) = pid_and_ticks(&b, &id);
    assert!(process_alive(pid, ticks));
    std::fs::write(dir.path().join("ws/a/keep.txt"), "x").unwrap();

    let out = user_stop(&b, &id).await;
    assert!(matches!(out, StopOutcome::Stopped(_)));
    let s = wait_status(&b, &id, Status::Stopped).await;
    assert_eq!(s.stopped_by, Some(StopCause::User { by: None }));
    assert!(!process_alive(pid, ticks));
    assert!(dir.path().join("ws/a/keep.txt").exists());
    let again = user_stop(&b, &id).await;
    assert!(matches!(again, StopOutcome::AlreadyStopped(_)));

    // A new backend on the same data dir keeps it stopped.
    drop(b);
    let b = backend(dir.path(), &c).await;
    assert_eq!(b.get(&id).await.unwrap().status, Status::Stopped);

    b.start(&id).await.unwrap();
    let (pid2, ticks2) = pid_and_ticks(&b, &id);
    assert!(process_alive(pid2, ticks2));
    // A restart of nbidle adopts the live process instead of spawning another.
    drop(b);
    let b2 = backend(dir.path(), &c).await;
    assert_eq!(b2.slot(&id).unwrap().with(|st| st.p.pid), Some(pid2));
    b2.shutdown().await;
    assert!(!process_alive(pid2, ticks2));
}

#[tokio::test]
async fn stop_is_refused_for_a_notebook_started_after_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), &cfg(dir.path(), &["a"])).await;
    let id = local("a");
    let before = Timestamp(Timestamp::now().0 - time::Duration::minutes(5));
    let out = b
        .stop(
            &id,
            StopRequest {
                cause: StopCause::User { by: None },
                unless_started_after: Some(before),
            },
        )
        .await
        .unwrap();
    assert!(matches!(out, StopOutcome::StartedSince(_)));
    assert!(!b.get(&id).await.unwrap().status.is_down());
    b.shutdown().await;
}

#[tokio::test]
async fn unknown_notebook_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), &cfg(dir.path(), &[])).await;
    let err = b.get(&NotebookId::new("local", "nope")).await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)));
}

#[test]
fn a_bare_program_is_found_on_path_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let tool = bin.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    let path = format!("{}:/usr/bin", dir.path().join("none").display());
    // Not executable yet: not found.
    assert_eq!(find_program("tool", Some(&path)), PathBuf::from("tool"));
    let path = format!("{}:{}", dir.path().join("none").display(), bin.display());
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    assert_eq!(find_program("tool", Some(&path)), tool);
    assert_eq!(find_program("./tool", Some(&path)), PathBuf::from("./tool"));
    assert_eq!(
        find_program("tool", Some("rel:/usr/bin")),
        PathBuf::from("tool")
    );
}

#[test]
fn a_record_that_cannot_be_used_says_why() {
    let ok = parse_record(Ok(Some(br#"{"desired":"stopped","pid":null}"#.to_vec()))).unwrap();
    assert_eq!(ok.desired, Desired::Stopped);
    assert_eq!(parse_record(Ok(None)).unwrap().desired, Desired::Running);
    let full = serde_json::to_string(&Persisted {
        desired: Desired::Stopped,
        stopped_by: Some(StopCause::User { by: None }),
        ..Persisted::default()
    })
    .unwrap();
    let cases: [(&[u8], &str); 5] = [
        (b"", "EOF while parsing"),
        (&full.as_bytes()[..full.len() / 2], "EOF while parsing"),
        (b"\x00\xffgarbage", "expected value"),
        (br#""stopped""#, "invalid type"),
        (b"[]", "invalid length"),
    ];
    for (bytes, want) in cases {
        let e = parse_record(Ok(Some(bytes.to_vec()))).unwrap_err();
        assert!(e.contains(want), "{bytes:?}: {e}");
    }
    assert_eq!(
        parse_record(Err("unreadable: denied".into())).unwrap_err(),
        "unreadable: denied"
    );
}

#[tokio::test]
async fn a_corrupt_record_is_unknown_neither_started_nor_stopped_and_a_user_stop_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("notebooks")).unwrap();
    std::fs::write(data.join("notebooks/bad.json"), "").unwrap();
    let b = backend(dir.path(), &cfg(dir.path(), &["bad", "good"])).await;
    let bad = local("bad");
    let s = b.get(&bad).await.unwrap();
    assert_eq!(s.status, Status::Unknown);
    let msg = s.message.unwrap();
    assert!(
        msg.contains("notebooks/bad.json") && msg.contains("EOF"),
        "{msg}"
    );
    assert!(!msg.contains(&dir.path().display().to_string()), "{msg}");
    assert_eq!(b.slot(&bad).unwrap().with(|st| st.p.pid), None);
    let good = local("good");
    assert_eq!(b.get(&good).await.unwrap().status, Status::Starting);
    assert!(b
        .scrape_targets()
        .await
        .unwrap()
        .iter()
        .all(|t| t.id == good));

    // An alert stops nothing, a start is refused, the file is untouched.
    let alert = StopRequest {
        cause: StopCause::IdleAlert {
            alertname: "NotebookIdle".into(),
            alert_starts_at: Timestamp::now(),
        },
        unless_started_after: None,
    };
    let out = b.stop(&bad, alert).await.unwrap();
    assert!(matches!(out, StopOutcome::NotRunning(_)), "{out:?}");
    let e = b.start(&bad).await.unwrap_err().to_string();
    assert!(e.contains("/api/v1/notebooks/local/bad/stop"), "{e}");
    assert_eq!(b.get(&bad).await.unwrap().status, Status::Unknown);
    assert_eq!(std::fs::read(data.join("notebooks/bad.json")).unwrap(), b"");

    // A user's stop writes a fresh record; then a start is ordinary.
    assert!(matches!(user_stop(&b, &bad).await, StopOutcome::Stopped(_)));
    let s = b.get(&bad).await.unwrap();
    assert_eq!((s.status, s.message), (Status::Stopped, None));
    let rec: Persisted =
        serde_json::from_slice(&std::fs::read(data.join("notebooks/bad.json")).unwrap()).unwrap();
    assert_eq!(rec.desired, Desired::Stopped);
    b.start(&bad).await.unwrap();
    assert_eq!(b.get(&bad).await.unwrap().status, Status::Starting);
    b.shutdown().await;
}

#[tokio::test]
async fn a_failed_start_is_failed_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["a"]);
    let b = backend(dir.path(), &c).await;
    let id = local("a");
    user_stop(&b, &id).await;
    wait_status(&b, &id, Status::Stopped).await;
    b.shutdown().await;
    drop(b);
    c.notebooks[0].command = vec![MISSING.into()];
    let b = backend(dir.path(), &c).await;
    let e = b.start(&id).await.unwrap_err().to_string();
    let s = b.get(&id).await.unwrap();
    assert_eq!(s.status, Status::Failed);
    assert_eq!(s.message.as_deref(), Some(e.as_str()));
    assert!(e.contains("/nonexistent/jupyter"), "{e}");
}

#[tokio::test]
async fn open_spawns_nothing_and_synced_waits_for_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = LocalBackend::open(
        &cfg(dir.path(), &["a"]),
        &data,
        bounds(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    let id = local("a");
    assert_eq!(b.get(&id).await.unwrap().status, Status::Unknown);
    assert!(!data.join("notebooks/a.json").exists(), "nothing spawned");
    let early = tokio::time::timeout(Duration::from_millis(200), b.synced()).await;
    assert!(early.is_err(), "not synced before recovery");
    // The lock is held from open on.
    assert!(DataDirLock::acquire(&data).is_err());
    b.clone().recover().await;
    tokio::time::timeout(Duration::from_secs(1), b.synced())
        .await
        .expect("synced after recovery");
    assert_eq!(b.get(&id).await.unwrap().status, Status::Starting);
    b.shutdown().await;
}

#[tokio::test]
async fn stop_on_exit_stops_are_stops() {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(dir.path(), &cfg(dir.path(), &["a", "b"])).await;
    let ids = ["a", "b"].map(local);
    let mut pids = Vec::new();
    for id in &ids {
        pids.push(pid_and_ticks(&b, id));
    }
    b.shutdown().await;
    // Give the processes' watchers time to run: they must not call
    // nbidle's own stops failures.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, (pid, ticks)) in ids.iter().zip(pids) {
        assert!(!process_alive(pid, ticks));
        let s = b.get(id).await.unwrap();
        assert_eq!((s.status, s.message), (Status::Stopped, None), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_behind_a_stop_in_its_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), &["stubborn", "other"]);
    c.stop_grace_period = HumanDuration(Duration::from_secs(3));
    // Ready once the trap is set: the stop's SIGTERM must be ignored.
    c.notebooks[0].command = ["sh", "-c", "trap '' TERM; : > trapped; sleep 1000"]
        .map(String::from)
        .to_vec();
    let b = backend(dir.path(), &c).await;
    let stubborn = local("stubborn");
    let other = local("other");
    let trapped = dir.path().join("ws/stubborn/trapped");
    for _ in 0..100 {
        if trapped.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(trapped.exists(), "the shell never set its trap");

    let stopping = Instant::now();
    let stop = {
        let b = b.clone();
        let id = stubborn.clone();
        tokio::spawn(async move { user_stop(&b, &id).await })
    };
    // Reads throughout the grace period, until the SIGKILL.
    let mut slowest = Duration::ZERO;
    let mut reads = 0;
    while stopping.elapsed() < Duration::from_millis(2500) {
        let t = Instant::now();
        let all = b.list().await.unwrap();
        let one = b.get(&stubborn).await.unwrap();
        let two = b.get(&other).await.unwrap();
        let waited = t.elapsed();
        slowest = slowest.max(waited);
        assert!(
            waited < Duration::from_millis(200),
            "list() and get() waited {waited:?}, {:?} into the stop",
            t - stopping
        );
        if t - stopping > Duration::from_millis(200) {
            assert!(stop.is_finished(), "the stop waited for its grace period");
            assert_eq!(one.status, Status::Stopping);
            assert_eq!(all[1].status, Status::Stopping, "{all:?}");
        }
        assert!(!two.status.is_down(), "{two:?}");
        reads += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(stop.await.unwrap(), StopOutcome::Stopped(_)));
    eprintln!("{reads} reads during the grace period, the slowest {slowest:?}");
    wait_status(&b, &stubborn, Status::Stopped).await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_adopted_process_is_watched_to_its_end() {
    let mut p = std::process::Command::new("sleep");
    std::os::unix::process::CommandExt::process_group(p.arg("300"), 0);
    let mut p = p.spawn().unwrap();
    let pid = p.id() as i32;
    let ticks = proc_start_ticks(pid);
    let watch = tokio::spawn(gone(pid, ticks));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watch.is_finished());
    signal_group(pid, libc::SIGTERM);
    // Reaped by its parent (this test), as an adopted process is by
    // whoever its parent is.
    tokio::task::spawn_blocking(move || p.wait())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), watch)
        .await
        .expect("the exit is seen at once")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_do_not_wait_behind_an_operation_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["a", "b"];
    let b = backend(dir.path(), &cfg(dir.path(), &names)).await;
    let [a, other] = names.map(local);
    // What a stop or a start holds across its awaits: a record's sync on a
    // slow disk, a spawn, the wait for a previous process to exit.
    let held = b.slot(&a).unwrap().operation().await;
    let t = Instant::now();
    let reads = async {
        let all = b.list().await.unwrap();
        let one = b.get(&a).await.unwrap();
        b.get(&other).await.unwrap();
        b.scrape_targets().await.unwrap();
        b.jupyter_endpoints().await.unwrap();
        (all, one)
    };
    let (all, one) = tokio::time::timeout(Duration::from_millis(200), reads)
        .await
        .unwrap_or_else(|_| panic!("reads waited {:?} for the operation", t.elapsed()));
    eprintln!(
        "reads took {:?} while an operation held the lock",
        t.elapsed()
    );
    assert_eq!(all.len(), 2);
    assert_eq!(one.status, Status::Starting);
    // Another operation on it waits for the one in progress.
    let stop = tokio::spawn({
        let (b, a) = (b.clone(), a.clone());
        async move { user_stop(&b, &a).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stop.is_finished(), "a stop ran inside another operation");
    drop(held);
    let out = tokio::time::timeout(Duration::from_secs(2), stop)
        .await
        .expect("the stop runs once the operation has ended")
        .unwrap();
    assert!(matches!(out, StopOutcome::Stopped(_)), "{out:?}");
    b.shutdown().await;
}
