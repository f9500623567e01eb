use super::exposition::render;
use super::*;
use crate::backend::JupyterEndpoint;
use crate::notebook::Status;

fn facts(probe: Option<ProbeResult>, autostop: bool) -> NotebookFacts {
    NotebookFacts {
        state: NotebookState {
            id: NotebookId::new("local", "nb"),
            status: Status::Running,
            message: None,
            autostop,
            idle_after_seconds: 1800,
            owner: Some("al\"ice".into()),
            started_at: Some("2026-01-01T08:00:00Z".parse::<Timestamp>().unwrap()),
            stopped_at: None,
            stopped_by: None,
            url: None,
        },
        pods: vec!["nb-0".into()],
        last_activity: max_opt(
            probe.as_ref().and_then(|p| p.last_activity),
            Some(
                "2026-01-01T08:00:00Z"
                    .parse::<Timestamp>()
                    .unwrap()
                    .unix_seconds(),
            ),
        ),
        probe,
        probed_at: None,
    }
}

#[test]
fn a_failed_probe_exports_failure_and_no_activity() {
    let text = render_all(&[facts(
        Some(ProbeResult {
            ok: false,
            ..Default::default()
        }),
        true,
    )]);
    assert!(text.contains("nbidle_notebook_probe_success{namespace=\"local\",notebook=\"nb\"} 0"));
    assert!(!text.contains("nbidle_notebook_last_activity_timestamp_seconds{"));
    assert!(!text.contains("nbidle_notebook_kernels{"));
    assert!(text.contains("owner=\"al\\\"ice\""));
}

#[test]
fn no_kernels_means_activity_at_start_and_opt_out_exports_no_threshold() {
    let ok = ProbeResult {
        ok: true,
        ..Default::default()
    };
    let text = render_all(&[facts(Some(ok), false)]);
    let start = "2026-01-01T08:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .unix_seconds();
    assert!(text.contains(&format!("nbidle_notebook_last_activity_timestamp_seconds{{namespace=\"local\",notebook=\"nb\"}} {start}")));
    assert!(!text.contains("nbidle_notebook_idle_after_seconds{"));
    assert!(!text
        .contains("nbidle_notebook_kernels{namespace=\"local\",notebook=\"nb\",state=\"busy\"}"));
}

fn render_all(f: &[NotebookFacts]) -> String {
    render(f, f64::INFINITY)
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
    let start = "2026-01-01T08:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .unix_seconds();
    let f = [facts(
        Some(ProbeResult {
            ok: true,
            ..Default::default()
        }),
        true,
    )];
    assert!(
        !render(&f, start + 1799.0).contains("nbidle_notebook_idle_deadline_timestamp_seconds{")
    );
    assert!(render(&f, start + 1800.0).contains("nbidle_notebook_idle_deadline_timestamp_seconds{"));
}

#[test]
fn the_deadline_is_last_activity_or_start_plus_idle_time() {
    let start = "2026-01-01T08:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .unix_seconds();
    let never_used = render_all(&[facts(
        Some(ProbeResult {
            ok: true,
            ..Default::default()
        }),
        true,
    )]);
    assert!(never_used.contains(&format!(
        "nbidle_notebook_idle_deadline_timestamp_seconds{{namespace=\"local\",notebook=\"nb\",owner=\"al\\\"ice\"}} {}",
        start + 1800.0
    )));
    let used = ProbeResult {
        ok: true,
        last_activity: Some(start + 600.0),
        ..Default::default()
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

/// A fixed notebook list for exercising rounds; the Jupyter side is a
/// real HTTP server whose answers the test changes between rounds.
struct OneNotebook(NotebookState, String);

#[async_trait::async_trait]
impl Backend for OneNotebook {
    async fn list(&self) -> crate::Result<Vec<NotebookState>> {
        Ok(vec![self.0.clone()])
    }
    async fn get(&self, _: &NotebookId) -> crate::Result<NotebookState> {
        Ok(self.0.clone())
    }
    async fn stop(
        &self,
        id: &NotebookId,
        _: crate::backend::StopRequest,
    ) -> crate::Result<crate::backend::StopOutcome> {
        Err(crate::Error::NotFound(id.clone()))
    }
    async fn start(&self, _: &NotebookId) -> crate::Result<NotebookState> {
        Ok(self.0.clone())
    }
    async fn scrape_targets(&self) -> crate::Result<Vec<crate::backend::ScrapeTarget>> {
        Ok(vec![])
    }
    async fn jupyter_endpoints(&self) -> crate::Result<Vec<JupyterEndpoint>> {
        Ok(vec![JupyterEndpoint {
            id: self.0.id.clone(),
            base_url: self.1.clone(),
            token: None,
            pods: Vec::new(),
        }])
    }
}

/// A Jupyter stand-in on loopback whose `/api/kernels` answers what
/// `kernels` holds at the time; its base URL.
async fn jupyter_answering(kernels: Arc<RwLock<String>>) -> String {
    use warp::Filter;
    let routes = warp::path!("api" / "kernels")
        .map(move || kernels.read().unwrap().clone())
        .or(warp::path!("api" / "terminals").map(|| "[]".to_string()))
        .or(warp::path!("api" / "status")
            .map(|| r#"{"started":"2026-01-01T08:00:00Z"}"#.to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    format!("http://127.0.0.1:{port}/")
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
    let state = facts(None, true).state;
    let deadline = Timestamp::now().unix_seconds() + warn_before + 60.0;
    let last = deadline - state.idle_after_seconds as f64;
    let last = time::OffsetDateTime::from_unix_timestamp(last as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let kernels = Arc::new(RwLock::new(format!(
        r#"[{{"execution_state":"idle","last_activity":"{last}"}}]"#
    )));
    let backend = Arc::new(OneNotebook(state.clone(), jupyter_answering(kernels).await));
    let e = Exporter::from_config(backend, &cfg);
    e.round().await;
    let text = e.render();
    assert!(
        text.contains("nbidle_notebook_idle_deadline_timestamp_seconds{"),
        "a deadline {warn_before}s + 60s ahead is not published:\n{text}"
    );
}

#[tokio::test]
async fn closing_the_last_kernel_does_not_forget_its_activity() {
    let kernels = Arc::new(RwLock::new(
        r#"[{"execution_state":"idle","last_activity":"2026-01-01T09:30:00Z"}]"#.to_string(),
    ));
    let state = facts(None, true).state;
    let backend = Arc::new(OneNotebook(
        state.clone(),
        jupyter_answering(kernels.clone()).await,
    ));
    let cfg = ExporterConfig::default();
    let e = Exporter::new(backend, cfg, Duration::from_secs(300));
    let at_930 = "2026-01-01T09:30:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .unix_seconds();
    e.round().await;
    assert_eq!(e.facts(&state.id).unwrap().last_activity, Some(at_930));
    // The user shuts the kernel down: no kernels, no terminals.
    *kernels.write().unwrap() = "[]".into();
    e.round().await;
    assert_eq!(
        e.facts(&state.id).unwrap().last_activity,
        Some(at_930),
        "remembered"
    );
    let text = render(&e.snapshot.read().unwrap(), f64::INFINITY);
    assert!(text.contains(&format!("}} {}", at_930 + 1800.0)), "{text}");
}

#[tokio::test]
async fn a_server_started_outside_nbidle_is_as_young_as_the_server() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    // The backend's record says 08:00 (the object's creation); the
    // server was started at 10:00 by someone else (kubectl scale).
    let status_reads = Arc::new(AtomicUsize::new(0));
    let reads = status_reads.clone();
    let routes = warp::path!("api" / "kernels")
        .map(|| "[]")
        .or(warp::path!("api" / "terminals").map(|| "[]"))
        .or(warp::path!("api" / "status").map(move || {
            reads.fetch_add(1, Ordering::SeqCst);
            r#"{"started":"2026-01-01T10:00:00Z"}"#
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let state = facts(None, true).state;
    let backend = Arc::new(OneNotebook(
        state.clone(),
        format!("http://127.0.0.1:{port}/"),
    ));
    let e = Exporter::new(backend, ExporterConfig::default(), Duration::from_secs(300));
    let at_10 = "2026-01-01T10:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .unix_seconds();
    for _ in 0..3 {
        e.round().await;
        assert_eq!(e.facts(&state.id).unwrap().last_activity, Some(at_10));
    }
    // The server's start is read once a life, not at every probe.
    assert_eq!(status_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_answer_over_a_limit_is_a_failed_probe_with_its_reason() {
    // What /api/kernels answers, changed between rounds.
    let kernels = Arc::new(RwLock::new(String::new()));
    let state = facts(None, true).state;
    let backend = Arc::new(OneNotebook(
        state.clone(),
        jupyter_answering(kernels.clone()).await,
    ));
    let cfg = ExporterConfig {
        max_response_bytes: 16 * 1024,
        max_kernels: 3,
        ..ExporterConfig::default()
    };
    let e = Exporter::new(backend, cfg, Duration::from_secs(300));
    let kernel = r#"{"execution_state":"idle","last_activity":"2026-01-01T09:30:00Z"}"#;
    let array = |n: usize| format!("[{}]", vec![kernel; n].join(","));
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
        *kernels.write().unwrap() = body;
        e.round().await;
        let p = e.facts(&state.id).unwrap().probe.unwrap();
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
    use warp::Filter;
    // No /api/terminals route: warp answers 404, as a server without
    // the terminals extension does.
    let routes = warp::path!("api" / "kernels")
        .map(|| r#"[{"execution_state":"busy","last_activity":"2026-01-01T09:30:00Z"}]"#)
        .or(warp::path!("api" / "status").map(|| r#"{"started":"2026-01-01T08:00:00Z"}"#));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(routes).incoming(listener).run());
    let state = facts(None, true).state;
    let backend = Arc::new(OneNotebook(
        state.clone(),
        format!("http://127.0.0.1:{port}/"),
    ));
    let e = Exporter::new(backend, ExporterConfig::default(), Duration::from_secs(300));
    e.round().await;
    let p = e.facts(&state.id).unwrap().probe.unwrap();
    assert!(p.ok, "{:?}", p.failure);
    assert_eq!((p.busy_kernels(), p.terminals), (1, 0));
}
