//! `kubernetes.apply: true`: nbidle keeps the monitoring objects it
//! generates (PrometheusRule, PodMonitor, ServiceMonitor,
//! AlertmanagerConfig) applied in the cluster, with server-side apply under
//! the field manager `nbidle`. The objects are exactly what `nbidle rules`
//! and `nbidle manifests` print for the same config, so a config change
//! reaches Prometheus and Alertmanager with the next rollout.
//!
//! Applied at start-up and again every `REAPPLY` (an object deleted by hand
//! comes back); every replica applies the same objects, which server-side
//! apply makes harmless. A failure (CRDs not installed, RBAC missing) is
//! logged and retried; it never stops nbidle from serving.

use std::future::Future;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::manifests::{self, Manifest};
use crate::rules::{self, Format};

pub(crate) const FIELD_MANAGER: &str = "nbidle";
const REAPPLY: Duration = Duration::from_secs(600);
const RETRY: Duration = Duration::from_secs(30);

/// The objects to apply, each with its namespace set.
pub(crate) fn objects(cfg: &Config) -> Result<Vec<Value>> {
    let mut texts = vec![rules::render(cfg, Format::PrometheusRule)?];
    for m in [
        Manifest::PodMonitor,
        Manifest::ServiceMonitor,
        Manifest::AlertmanagerConfig,
    ] {
        texts.push(manifests::render(cfg, m)?);
    }
    let mut out = Vec::new();
    for text in texts {
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(doc)?;
            if v.is_null() {
                continue;
            }
            if v["metadata"]["namespace"].is_null() {
                v["metadata"]["namespace"] = cfg.kubernetes.namespace.clone().into();
            }
            out.push(v);
        }
    }
    Ok(out)
}

fn resource(obj: &Value) -> Result<(ApiResource, String, String)> {
    let field = |k: &str| {
        obj.pointer(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Error::invalid("manifest", format!("{k} missing")))
    };
    let api_version = field("/apiVersion")?;
    let kind = field("/kind")?;
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let plural = format!("{}s", kind.to_lowercase());
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.clone(),
        kind,
        plural,
    };
    Ok((ar, field("/metadata/namespace")?, field("/metadata/name")?))
}

/// Applies every object once; the first failure is returned.
pub(crate) async fn apply_all(client: &Client, objects: &[Value]) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for obj in objects {
        let (ar, ns, name) = resource(obj)?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
        api.patch(&name, &params, &Patch::Apply(obj))
            .await
            .map_err(|e| Error::kube(format!("applying {} {ns}/{name}", ar.kind), e))?;
    }
    Ok(())
}

/// Applies now and every `REAPPLY`, retrying failures every `RETRY`,
/// until `shutdown` resolves; an apply in flight then ends too (the next
/// start-up applies again).
pub(crate) async fn run(client: Client, objects: Vec<Value>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let applied = tokio::select! {
            _ = &mut shutdown => return,
            applied = apply_all(&client, &objects) => applied,
        };
        let pause = match applied {
            Ok(()) => {
                tracing::info!(objects = objects.len(), "monitoring objects applied");
                REAPPLY
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not apply monitoring objects; retrying");
                RETRY
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_object_gets_a_namespace_and_a_resource() {
        let cfg = Config::from_yaml(
            "kubernetes:\n  namespace: mon\n  notebook_namespaces: [a, b]\nbackend:\n  kind: kubeflow\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let objs = objects(&cfg).unwrap();
        let kinds: Vec<String> = objs
            .iter()
            .map(|o| {
                let (ar, ns, name) = resource(o).unwrap();
                format!("{} {ns}/{name}", ar.plural)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "prometheusrules mon/nbidle-idle",
                "podmonitors mon/nbidle-notebooks",
                "servicemonitors mon/nbidle",
                "alertmanagerconfigs a/nbidle",
                "alertmanagerconfigs b/nbidle",
            ]
        );
    }
}
