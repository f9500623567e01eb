//! Alertmanager's webhook payload (version 4), parsed and validated.
//!
//! Validation is all-or-nothing: a payload with one malformed alert is
//! rejected whole, before anything is stopped.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::notebook::{NotebookId, Timestamp};

pub(crate) const SUPPORTED_VERSION: &str = "4";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertStatus {
    Firing,
    Resolved,
}

/// A string only: serde's derived enum also reads `{"firing": null}`,
/// which Alertmanager never sends.
impl<'de> Deserialize<'de> for AlertStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "firing" => Ok(AlertStatus::Firing),
            "resolved" => Ok(AlertStatus::Resolved),
            other => Err(de::Error::unknown_variant(other, &["firing", "resolved"])),
        }
    }
}

impl AlertStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// A webhook payload that [`parse`] accepted: the fields nbidle checks;
/// others (groupLabels, externalURL, …) are accepted and ignored so newer
/// Alertmanagers keep working. The fields nbidle checks but does not use
/// are read so that a payload is accepted or refused whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    #[expect(dead_code, reason = "validated, not used")]
    version: String,
    #[serde(default)]
    #[expect(dead_code, reason = "validated, not used")]
    group_key: String,
    #[expect(dead_code, reason = "validated, not used")]
    status: AlertStatus,
    #[serde(default)]
    #[expect(dead_code, reason = "validated, not used")]
    receiver: String,
    /// The alerts of the group, in Alertmanager's order.
    #[serde(deserialize_with = "objects")]
    pub alerts: Vec<Alert>,
}

/// One alert of a payload: what decides whether it stops a notebook.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub(crate) status: AlertStatus,
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    #[expect(dead_code, reason = "validated, not used")]
    annotations: BTreeMap<String, String>,
    pub(crate) starts_at: Timestamp,
    /// When Alertmanager considers the alert over, if it says (firing
    /// alerts often carry the zero time). Read leniently: it was never
    /// validated, and a payload is not refused for it.
    #[serde(default, deserialize_with = "lenient_time")]
    pub(crate) ends_at: Option<Timestamp>,
    #[serde(default)]
    #[expect(dead_code, reason = "validated, not used")]
    fingerprint: String,
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_str().and_then(|s| s.parse().ok()))
}

impl Alert {
    pub(crate) fn alertname(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The notebook the alert names, from its `namespace` and `notebook` labels.
    pub(crate) fn notebook(&self) -> Option<NotebookId> {
        let ns = self.labels.get("namespace")?;
        let name = self.labels.get("notebook")?;
        Some(NotebookId::new(ns, name))
    }
}

/// Reads a list of `T` each from a JSON object only: serde's derived
/// structs also read an array of their field values, in order, which
/// Alertmanager never sends.
fn objects<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Vec::<Object<T>>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(PhantomData)).map(Object)
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

/// Parses a webhook body. Errors name the offending field
/// (`alerts[3].startsAt`).
pub fn parse(body: &[u8]) -> Result<WebhookPayload> {
    // The version decides how to read the rest, so check it first: an
    // unknown version gets "unsupported version", not a confusing field error.
    let v: VersionOnly = serde_json::from_slice(body)
        .map_err(|e| Error::invalid("body", format!("not a JSON object: {e}")))?;
    match v.version {
        Some(serde_json::Value::String(s)) if s == SUPPORTED_VERSION => {}
        Some(other) => {
            return Err(Error::invalid(
                "version",
                format!(
                "unsupported payload version {other}; nbidle understands \"{SUPPORTED_VERSION}\""
            ),
            ))
        }
        None => return Err(Error::invalid("version", "missing")),
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let payload: WebhookPayload = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        Error::invalid(
            if path == "." { "body".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    for (i, a) in payload.alerts.iter().enumerate() {
        for key in ["namespace", "notebook"] {
            if a.labels.get(key).is_some_and(|v| v.is_empty()) {
                return Err(Error::invalid(
                    format!("alerts[{i}].labels.{key}"),
                    "is empty",
                ));
            }
        }
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const SAMPLE: &str = r#"{
      "version": "4", "groupKey": "{}:{namespace=\"local\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "nbidle",
      "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
      "alerts": [{
        "status": "firing",
        "labels": {"alertname": "NotebookIdle", "namespace": "local", "notebook": "demo", "nbidle_action": "stop"},
        "annotations": {"summary": "idle"},
        "startsAt": "2026-11-28T10:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom", "fingerprint": "abc"
      }]
    }"#;

    fn field(body: &str) -> String {
        match parse(body.as_bytes()) {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn parses_alertmanager_payload() {
        let p = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(p.alerts.len(), 1);
        let a = &p.alerts[0];
        assert_eq!(a.alertname(), "NotebookIdle");
        assert_eq!(a.notebook(), Some(NotebookId::new("local", "demo")));
        assert_eq!(a.status, AlertStatus::Firing);
    }

    #[test]
    fn rejects_with_the_field_named() {
        assert_eq!(
            field(&SAMPLE.replace("\"version\": \"4\"", "\"version\": \"3\"")),
            "version"
        );
        assert_eq!(field(&SAMPLE.replace("\"version\": \"4\",", "")), "version");
        assert_eq!(
            field(&SAMPLE.replace("2026-11-28T10:00:00.123456789Z", "yesterday")),
            "alerts[0].startsAt"
        );
        assert_eq!(
            field(&SAMPLE.replace(
                "\"status\": \"firing\",\n        \"labels\"",
                "\"status\": \"burning\",\n        \"labels\""
            )),
            "alerts[0].status"
        );
        assert_eq!(
            field(&SAMPLE.replace("\"notebook\": \"demo\"", "\"notebook\": \"\"")),
            "alerts[0].labels.notebook"
        );
        assert_eq!(
            field(&SAMPLE.replace("\"notebook\": \"demo\"", "\"notebook\": 7")),
            "alerts[0].labels.notebook"
        );
        assert_eq!(field("[1,2]"), "body");
        assert_eq!(field("{\"version\":\"4\",\"status\":\"firing\"}"), "body");
    }

    /// serde's derived types also read an enum from `{"firing": null}` and
    /// a struct from an array of its field values; Alertmanager sends
    /// neither, and an alert in either form must not stop anything.
    #[test]
    fn statuses_are_strings_and_alerts_objects() {
        let (start, end) = (
            SAMPLE.find("[{").unwrap() + 1,
            SAMPLE.rfind("}]").unwrap() + 1,
        );
        let with_alert = |alert: &str| format!("{}{alert}{}", &SAMPLE[..start], &SAMPLE[end..]);
        let alert = &SAMPLE[start..end];
        assert!(parse(with_alert(alert).as_bytes()).is_ok());
        let map_status =
            alert.replacen(r#""status": "firing""#, r#""status": {"firing": null}"#, 1);
        assert_eq!(field(&with_alert(&map_status)), "alerts[0].status");
        let top = SAMPLE.replace(
            r#""status": "firing", "receiver""#,
            r#""status": {"firing": null}, "receiver""#,
        );
        assert_eq!(field(&top), "status");
        let array = r#"["firing",
            {"alertname": "NotebookIdle", "namespace": "local", "notebook": "demo", "nbidle_action": "stop"},
            {}, "2026-11-28T10:00:00Z", "abc"]"#;
        assert_eq!(field(&with_alert(array)), "alerts[0]");
        let whole = format!(r#"["4", "", "firing", "", [{alert}]]"#);
        assert_eq!(field(&whole), "body");
    }
}
