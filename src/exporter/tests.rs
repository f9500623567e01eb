//! The exposition over hand-made facts, and probe rounds over a Jupyter
//! stand-in on loopback ([`Jupyter`]) listed by the in-memory backend.

use std::sync::atomic::{AtomicUsize, Ordering};

use warp::Filter;

use super::exposition::render;
use super::filework::{self, FileWork};
use super::*;
use crate::backend::memory::MemoryBackend;
use crate::notebook::Status;

/// The notebook's start in [`facts`], and the stand-in's by default.
const START: &str = "2026-01-01T08:00:00Z";

/// Unix seconds of an RFC 3339 time.
fn unix(rfc3339: &str) -> f64 {
    rfc3339.parse::<Timestamp>().unwrap().unix_seconds()
}

fn id() -> NotebookId {
    NotebookId::new("local", "nb")
}

/// A probe that answered, with nothing running.
fn answered() -> ProbeResult {
    ProbeResult {
        ok: true,
        ..Default::default()
    }
}

/// The exporters' `warn_before` here.
const WARN_BEFORE: Duration = Duration::from_secs(120);

/// A running notebook `local/nb`, started at [`START`], idle after 30
/// minutes, with one pod; its last activity is the probe's or the start.
fn facts(probe: Option<ProbeResult>, autostop: bool) -> NotebookFacts {
    NotebookFacts {
        state: NotebookState {
            id: id(),
            status: Status::Running,
            message: None,
            autostop,
            idle_after_seconds: 1800,
            owner: Some("al\"ice".into()),
            started_at: Some(START.parse::<Timestamp>().unwrap()),
            stopped_at: None,
            stopped_by: None,
            url: None,
        },
        pods: vec!["nb-0".into()],
        last_activity: max_opt(
            probe.as_ref().and_then(|p| p.last_activity),
            Some(unix(START)),
        ),
        probe,
        probed_at: None,
        deadline_floor: None,
    }
}

fn render_all(f: &[NotebookFacts]) -> String {
    render(f, f64::INFINITY)
}

#[test]
fn a_failed_probe_exports_failure_and_no_activity() {
    let text = render_all(&[facts(Some(ProbeResult::default()), true)]);
    assert!(text.contains("nbidle_notebook_probe_success{namespace=\"local\",notebook=\"nb\"} 0"));
    assert!(!text.contains("nbidle_notebook_last_activity_timestamp_seconds{"));
    assert!(!text.contains("nbidle_notebook_kernels{"));
    assert!(text.contains("owner=\"al\\\"ice\""));
}

#[test]
fn no_kernels_means_activity_at_start_and_opt_out_exports_no_threshold() {
    let text = render_all(&[facts(Some(answered()), false)]);
    let start = unix(START);
    assert!(text.contains(&format!("nbidle_notebook_last_activity_timestamp_seconds{{namespace=\"local\",notebook=\"nb\"}} {start}")));
    assert!(!text.contains("nbidle_notebook_idle_after_seconds{"));
    assert!(!text
        .contains("nbidle_notebook_kernels{namespace=\"local\",notebook=\"nb\",state=\"busy\"}"));
}

#[test]
fn pods_are_published_even_when_the_probe_fails() {
    // The guards' join must hold while Jupyter does not answer: a busy
    // GPU keeps a notebook whose server is too loaded to reply.
    let text = render_all(&[facts(Some(ProbeResult::default()), true)]);
    assert!(text
        .contains("nbidle_notebook_pod_info{namespace=\"local\",notebook=\"nb\",pod=\"nb-0\"} 1"));
}

#[test]
fn far_deadlines_are_left_out() {
    let start = unix(START);
    let f = [facts(Some(answered()), true)];
    assert!(
        !render(&f, start + 1799.0).contains("nbidle_notebook_idle_deadline_timestamp_seconds{")
    );
    assert!(render(&f, start + 1800.0).contains("nbidle_notebook_idle_deadline_timestamp_seconds{"));
}

#[test]
fn the_deadline_is_last_activity_or_start_plus_idle_time() {
    let start = unix(START);
    let never_used = render_all(&[facts(Some(answered()), true)]);
    assert!(never_used.contains(&format!(
        "nbidle_notebook_idle_deadline_timestamp_seconds{{namespace=\"local\",notebook=\"nb\",owner=\"al\\\"ice\"}} {}",
        start + 1800.0
    )));
    let used = ProbeResult {
        last_activity: Some(start + 600.0),
        ..answered()
    };
    assert!(
        render_all(&[facts(Some(used.clone()), true)]).contains(&format!("}} {}", start + 2400.0))
    );
    for text in [
        render_all(&[facts(Some(used), false)]),
        render_all(&[facts(Some(ProbeResult::default()), true)]),
        render_all(&[facts(None, true)]),
    ] {
        assert!(
            !text.contains("nbidle_notebook_idle_deadline_timestamp_seconds{"),
            "{text}"
        );
    }
}

/// A Jupyter stand-in on loopback. `/api/kernels` answers what
/// [`Jupyter::answer_kernels`] last set; `/api/terminals` an empty list, or
/// 404 as a server without the terminals extension does; `/api/status` the
/// server's `started`, counting the reads; `/metrics` what
/// [`Jupyter::answer_metrics`] last set, 404 before.
struct Jupyter {
    url: String,
    kernels: Arc<RwLock<String>>,
    status_reads: Arc<AtomicUsize>,
    metrics: Arc<RwLock<Option<String>>>,
}

impl Jupyter {
    async fn start(kernels: &str, started: &'static str, terminals: bool) -> Jupyter {
        let answer = Arc::new(RwLock::new(kernels.to_string()));
        let status_reads = Arc::new(AtomicUsize::new(0));
        let (kernels, reads) = (answer.clone(), status_reads.clone());
        let metrics = Arc::new(RwLock::new(None::<String>));
        let exposition = metrics.clone();
        let routes = warp::path!("api" / "kernels")
            .map(move || kernels.read().unwrap().clone())
            .or(
                warp::path!("api" / "terminals").and_then(move || async move {
                    match terminals {
                        true => Ok("[]"),
                        false => Err(warp::reject::not_found()),
                    }
                }),
            )
            .or(warp::path!("api" / "status").map(move || {
                reads.fetch_add(1, Ordering::SeqCst);
                format!(r#"{{"started":"{started}"}}"#)
            }))
            .or(warp::path!("metrics").and_then(move || {
                let body = exposition.read().unwrap().clone();
                async move { body.ok_or_else(warp::reject::not_found) }
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(warp::serve(routes).incoming(listener).run());
        Jupyter {
            url: format!("http://127.0.0.1:{port}/"),
            kernels: answer,
            status_reads,
            metrics,
        }
    }

    fn answer_metrics(&self, body: impl Into<String>) {
        *self.metrics.write().unwrap() = Some(body.into());
    }

    fn answer_kernels(&self, body: impl Into<String>) {
        *self.kernels.write().unwrap() = body.into();
    }

    /// A backend listing one notebook, [`facts`]'s, served here.
    fn backend(&self) -> Arc<MemoryBackend> {
        let state = NotebookState {
            url: Some(self.url.clone()),
            ..facts(None, true).state
        };
        Arc::new(MemoryBackend::new([state]))
    }

    /// An exporter over [`Jupyter::backend`], publishing deadlines five
    /// minutes ahead, a life's deadline [`WARN_BEFORE`] after its first
    /// answer at the soonest.
    fn exporter(&self, cfg: ExporterConfig) -> Arc<Exporter> {
        Exporter::new(self.backend(), cfg, Duration::from_secs(300), WARN_BEFORE)
    }
}

/// One kernel in `state`, last active at `at`.
fn kernel(state: &str, at: &str) -> String {
    format!(r#"{{"execution_state":"{state}","last_activity":"{at}"}}"#)
}

#[tokio::test]
async fn at_the_default_intervals_a_deadline_is_published_before_the_warning_is_due() {
    let cfg = crate::config::Config::from_yaml(
        "auth: {webhook_token: wh, api_tokens: [api]}\nbackend:\n  kind: local\n  local:\n    notebooks: []\n",
        std::path::Path::new("/etc/nbidle"),
    )
    .unwrap();
    let warn_before = cfg.autostop.warn_before.0.as_secs_f64();
    // Idle until warn_before plus a minute from now: the warning rule,
    // a scrape and an evaluation behind the exporter, must already see
    // the deadline to fire on time a minute from now.
    let idle_after = facts(None, true).state.idle_after_seconds as f64;
    let deadline = Timestamp::now().unix_seconds() + warn_before + 60.0;
    let last = time::OffsetDateTime::from_unix_timestamp((deadline - idle_after) as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let jupyter = Jupyter::start(&format!("[{}]", kernel("idle", &last)), START, true).await;
    let e = Exporter::from_config(jupyter.backend(), &cfg);
    e.round().await;
    let text = e.render();
    assert!(
        text.contains("nbidle_notebook_idle_deadline_timestamp_seconds{"),
        "a deadline {warn_before}s + 60s ahead is not published:\n{text}"
    );
}

#[tokio::test]
async fn closing_the_last_kernel_does_not_forget_its_activity() {
    let at_930 = "2026-01-01T09:30:00Z";
    let jupyter = Jupyter::start(&format!("[{}]", kernel("idle", at_930)), START, true).await;
    let e = jupyter.exporter(ExporterConfig::default());
    e.round().await;
    assert_eq!(e.facts(&id()).unwrap().last_activity, Some(unix(at_930)));
    // The user shuts the kernel down: no kernels, no terminals.
    jupyter.answer_kernels("[]");
    e.round().await;
    assert_eq!(
        e.facts(&id()).unwrap().last_activity,
        Some(unix(at_930)),
        "remembered"
    );
}

#[tokio::test]
async fn a_notebook_first_seen_past_its_idle_time_is_warned_before_its_deadline() {
    // Idle since 09:30 on a day long gone, and nbidle sees it now for the
    // first time (just deployed, or restarted).
    let at_930 = "2026-01-01T09:30:00Z";
    let jupyter = Jupyter::start(&format!("[{}]", kernel("idle", at_930)), START, true).await;
    let e = jupyter.exporter(ExporterConfig::default());
    let before = Timestamp::now().unix_seconds();
    e.round().await;
    let after = Timestamp::now().unix_seconds();
    let f = e.facts(&id()).unwrap();
    assert_eq!(
        f.last_activity,
        Some(unix(at_930)),
        "activity is not made up"
    );
    // Not past: warn_before from now, so the warning rule fires at once
    // and JupyterLab counts down for all of it.
    let deadline = f.idle_deadline().unwrap();
    let w = WARN_BEFORE.as_secs_f64();
    assert!(
        (before + w..=after + w).contains(&deadline),
        "{before} + {w} <= {deadline} <= {after} + {w}"
    );
    let text = e.render();
    assert!(
        text.contains(&format!("owner=\"al\\\"ice\"}} {deadline}")),
        "published:\n{text}"
    );
    // The next round keeps the floor of this life.
    e.round().await;
    assert_eq!(e.facts(&id()).unwrap().idle_deadline(), Some(deadline));
}

#[tokio::test]
async fn a_server_started_outside_nbidle_is_as_young_as_the_server() {
    // The backend's record says 08:00 (the object's creation); the
    // server was started at 10:00 by someone else (kubectl scale).
    let at_10 = "2026-01-01T10:00:00Z";
    let jupyter = Jupyter::start("[]", at_10, true).await;
    let e = jupyter.exporter(ExporterConfig::default());
    for _ in 0..3 {
        e.round().await;
        assert_eq!(e.facts(&id()).unwrap().last_activity, Some(unix(at_10)));
    }
    // The server's start is read once a life, not at every probe.
    assert_eq!(jupyter.status_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_over_a_limit_is_a_failed_probe_with_its_reason() {
    let jupyter = Jupyter::start("", START, true).await;
    let e = jupyter.exporter(ExporterConfig {
        max_response_bytes: 16 * 1024,
        max_kernels: 3,
        ..ExporterConfig::default()
    });
    let array = |n: usize| {
        format!(
            "[{}]",
            vec![kernel("idle", "2026-01-01T09:30:00Z"); n].join(",")
        )
    };
    let cases = [
        (array(3), None),
        (array(4), Some(Reason::TooMany)),
        (
            format!("[{}]", " ".repeat(16 * 1024)),
            Some(Reason::TooLarge),
        ),
        (
            "[{\"execution_state\": 1}]".to_string(),
            Some(Reason::InvalidJson),
        ),
        (array(1), None),
    ];
    for (body, reason) in cases {
        jupyter.answer_kernels(body);
        e.round().await;
        let p = e.facts(&id()).unwrap().probe.unwrap();
        assert_eq!(p.failure.as_ref().map(|f| f.reason), reason);
        assert_eq!(p.ok, reason.is_none());
        let text = e.render();
        let series = reason.map(|r| {
            format!(
                "nbidle_notebook_probe_failure{{namespace=\"local\",notebook=\"nb\",reason=\"{}\"}} 1",
                r.as_str()
            )
        });
        assert_eq!(
            text.contains("nbidle_notebook_probe_failure{"),
            series.is_some(),
            "{text}"
        );
        if let Some(series) = series {
            assert!(text.contains(&series), "{text}");
            assert!(!text.contains("nbidle_notebook_kernels{"), "{text}");
        }
    }
    let text = e.render();
    for (reason, n) in [
        ("too_many", 1),
        ("too_large", 1),
        ("invalid_json", 1),
        ("timeout", 0),
    ] {
        assert!(
            text.contains(&format!(
                "nbidle_exporter_probe_failures_total{{reason=\"{reason}\"}} {n}\n"
            )),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_server_without_terminals_is_probed_without_them() {
    let kernels = format!("[{}]", kernel("busy", "2026-01-01T09:30:00Z"));
    let jupyter = Jupyter::start(&kernels, START, false).await;
    let e = jupyter.exporter(ExporterConfig::default());
    e.round().await;
    let p = e.facts(&id()).unwrap().probe.unwrap();
    assert!(p.ok, "{:?}", p.failure);
    assert_eq!((p.busy_kernels(), p.terminals), (1, 0));
}

/// The server's `/metrics` counting `writes` contents PUTs and `reads`
/// contents GETs, as jupyter_server writes them.
fn contents_requests(writes: u32, reads: u32) -> String {
    let h = "jupyter_server.services.contents.handlers.ContentsHandler";
    let mut text = format!(
        "# TYPE http_request_duration_seconds histogram\n\
         http_request_duration_seconds_count{{handler=\"jupyter_server.services.kernels.handlers.MainKernelHandler\",method=\"GET\",status_code=\"200\"}} 9.0\n\
         http_request_duration_seconds_count{{handler=\"{h}\",method=\"GET\",status_code=\"200\"}} {reads}.0\n"
    );
    if writes > 0 {
        text += &format!(
            "http_request_duration_seconds_count{{handler=\"{h}\",method=\"PUT\",status_code=\"200\"}} {writes}.0\n"
        );
    }
    text
}

#[tokio::test]
async fn saving_a_file_is_activity_and_reading_one_is_not() {
    let jupyter = Jupyter::start("[]", START, true).await;
    let e = jupyter.exporter(ExporterConfig::default());
    let last = |e: &Exporter| e.facts(&id()).unwrap().last_activity.unwrap();
    jupyter.answer_metrics(contents_requests(0, 3));
    e.round().await;
    assert_eq!(last(&e), unix(START), "nothing written yet");
    // An open tab polls: more reads, no write.
    jupyter.answer_metrics(contents_requests(0, 30));
    e.round().await;
    assert_eq!(last(&e), unix(START), "reads are not activity");
    // An autosave.
    jupyter.answer_metrics(contents_requests(1, 31));
    let before = Timestamp::now().unix_seconds();
    e.round().await;
    let saved = last(&e);
    assert!(
        saved >= before,
        "the save is activity at the probe: {saved} < {before}"
    );
    let probe = e.facts(&id()).unwrap().probe.unwrap();
    assert_eq!(probe.last_activity, Some(saved), "the re-check sees it too");
    let text = e.render();
    assert!(
        text.contains("nbidle_notebook_file_writes_total{namespace=\"local\",notebook=\"nb\"} 1\n"),
        "{text}"
    );
    let all = render(&e.last_round(), f64::INFINITY);
    assert!(
        all.contains(&format!("}} {}", saved + 1800.0)),
        "the deadline moved: {all}"
    );
    // No further save: the activity stays where it was.
    tokio::time::sleep(Duration::from_millis(20)).await;
    jupyter.answer_metrics(contents_requests(1, 60));
    e.round().await;
    assert_eq!(last(&e), saved);
    assert!(!e.render().contains("nbidle_notebook_file_work_unseen{"));
}

#[tokio::test]
async fn unreadable_file_work_is_unseen_and_the_probe_still_succeeds() {
    let kernels = format!("[{}]", kernel("idle", "2026-01-01T09:30:00Z"));
    let jupyter = Jupyter::start(&kernels, START, true).await;
    let e = jupyter.exporter(ExporterConfig {
        max_response_bytes: 16 * 1024,
        ..ExporterConfig::default()
    });
    let unseen = |reason: &str| {
        format!("nbidle_notebook_file_work_unseen{{namespace=\"local\",notebook=\"nb\",reason=\"{reason}\"}} 1\n")
    };
    let padded = format!("{}{}", "# padding\n".repeat(2000), contents_requests(4, 1));
    for (metrics, reason) in [
        (None, Some("http_status")),
        (Some(padded), Some("too_large")),
        (
            Some("# TYPE http_request_duration_seconds histogram\n".to_string()),
            Some("not_recorded"),
        ),
        (Some(contents_requests(4, 1)), None),
    ] {
        if let Some(m) = metrics {
            jupyter.answer_metrics(m);
        }
        e.round().await;
        let text = e.render();
        let p = e.facts(&id()).unwrap().probe.unwrap();
        assert!(p.ok, "{reason:?}: {:?}", p.failure);
        assert!(
            text.contains(
                "nbidle_notebook_kernels{namespace=\"local\",notebook=\"nb\",state=\"idle\"} 1"
            ),
            "{reason:?}: kernels hidden:\n{text}"
        );
        match reason {
            Some(r) => {
                assert!(text.contains(&unseen(r)), "{text}");
                assert!(
                    !text.contains("nbidle_notebook_file_writes_total{"),
                    "{text}"
                );
            }
            None => {
                assert!(
                    !text.contains("nbidle_notebook_file_work_unseen{"),
                    "{text}"
                );
                assert!(text.contains("nbidle_notebook_file_writes_total{namespace=\"local\",notebook=\"nb\"} 4\n"), "{text}");
            }
        }
    }
    // The probe failures counter is about probes, not file work.
    assert!(e
        .render()
        .contains("nbidle_exporter_probe_failures_total{reason=\"too_large\"} 0\n"));
}

#[tokio::test]
async fn a_server_recording_no_requests_is_unseen_from_its_first_probe() {
    let jupyter = Jupyter::start("[]", START, true).await;
    jupyter.answer_metrics("# TYPE http_request_duration_seconds histogram\n");
    let e = jupyter.exporter(ExporterConfig::default());
    // /metrics is read after the probe's kernels and terminals were
    // answered: a server that records requests shows those.
    for _ in 0..2 {
        e.round().await;
        let p = e.facts(&id()).unwrap().probe.unwrap();
        assert!(p.ok, "{:?}", p.failure);
        assert_eq!(
            p.file_work,
            Some(FileWork::Unseen(filework::Unseen::NotRecorded))
        );
    }
}
