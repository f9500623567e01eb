//! Values several sections share: durations, labels, the `tls_config` of
//! Prometheus and Alertmanager, and the checks of names, label keys and
//! values, label selectors and URLs. The checks return a bare message; the
//! section that calls them adds its key.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

/// A duration written as humantime (`30m`, `1h 30m`, `90s`) or a bare number
/// of minutes (the seed's `autostop.duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub(crate) const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }

    pub(crate) fn parse(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return minutes(s.parse().map_err(|e| format!("{s:?}: {e}"))?);
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("{s:?} is not a duration like 30m or 1h30m: {e}"))
    }

    /// The duration in Prometheus's format (`1h30m`, `45s`), whole seconds.
    pub(crate) fn prometheus(self) -> String {
        prometheus_duration(self.0)
    }
}

fn minutes(m: u64) -> std::result::Result<HumanDuration, String> {
    m.checked_mul(60)
        .map(HumanDuration::secs)
        .ok_or_else(|| format!("{m} minutes is too long"))
}

pub(crate) fn prometheus_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prometheus())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Minutes(u64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration like 30m, 1h30m or a number of minutes")
        })? {
            Raw::Minutes(m) => minutes(m).map_err(serde::de::Error::custom),
            Raw::Text(s) => HumanDuration::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Kubernetes object labels, from `"k:v,k:v"` or a YAML map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Labels(pub(crate) BTreeMap<String, String>);

impl Labels {
    pub(crate) fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once(':')
                .or_else(|| part.split_once('='))
                .ok_or_else(|| format!("{part:?} is not key:value"))?;
            map.insert(k.trim().to_string(), v.trim().to_string());
        }
        Ok(Labels(map))
    }

    pub(super) fn validate(&self, field: &str) -> Result<()> {
        for (k, v) in &self.0 {
            check_label_key(k).map_err(|m| Error::config(format!("{field}.{k}"), m))?;
            check_label_value(v).map_err(|m| Error::config(format!("{field}.{k}"), m))?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Map(BTreeMap<String, serde_yaml::Value>),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected \"key:value,key:value\" or a map of labels")
        })? {
            Raw::Text(s) => Labels::parse(&s).map_err(serde::de::Error::custom),
            Raw::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    serde_yaml::Value::String(s) => Ok((k, s)),
                    serde_yaml::Value::Bool(b) => Ok((k, b.to_string())),
                    serde_yaml::Value::Number(n) => Ok((k, n.to_string())),
                    _ => Err(serde::de::Error::custom(format!(
                        "label {k:?}: value must be a string"
                    ))),
                })
                .collect::<std::result::Result<_, _>>()
                .map(Labels),
        }
    }
}

/// A client's `tls_config` in the generated Prometheus and Alertmanager
/// configs: how they verify nbidle's certificate. The paths are on their
/// machines, so they are written as given, not resolved.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsClientConfig {
    pub(crate) ca_file: Option<String>,
    /// A client certificate, for `client_auth_type: RequireAndVerifyClientCert`.
    pub(crate) cert_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) server_name: Option<String>,
}

impl TlsClientConfig {
    /// `field`: where this `tls_config` is (`prometheus.tls_config`).
    pub(super) fn validate(&self, field: &str) -> Result<()> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::config(
                format!("{field}.key_file"),
                "set cert_file and key_file together",
            ));
        }
        for (k, v) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("server_name", &self.server_name),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(Error::config(format!("{field}.{k}"), "must not be empty"));
            }
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// An equality-based label selector: `key`, `!key`, `key=value`,
/// `key==value`, `key!=value`, comma-separated. (Set-based terms such as
/// `key in (a,b)` are not accepted: their commas make a simple check wrong.)
pub(super) fn check_label_selector(sel: &str) -> std::result::Result<(), String> {
    if sel.trim().is_empty() {
        return Err("must not be empty".into());
    }
    for term in sel.split(',') {
        let term = term.trim();
        let (key, value) = if let Some((k, v)) = term.split_once("!=") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once("==") {
            (k, Some(v))
        } else if let Some((k, v)) = term.split_once('=') {
            (k, Some(v))
        } else {
            (term.strip_prefix('!').unwrap_or(term), None)
        };
        check_label_key(key.trim()).map_err(|m| format!("{term:?}: {m}"))?;
        if let Some(v) = value {
            check_label_value(v.trim()).map_err(|m| format!("{term:?}: {m}"))?;
        }
    }
    Ok(())
}

/// A Kubernetes label key: optional DNS-subdomain prefix, `/`, a name of at
/// most 63 characters starting and ending with an alphanumeric.
pub(super) fn check_label_key(key: &str) -> std::result::Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!(
                    "label key prefix {prefix:?} is not a DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    check_label_value(name)
        .map_err(|_| format!("label key {key:?} is not a valid Kubernetes label name"))?;
    if name.is_empty() {
        return Err("label key is empty".into());
    }
    Ok(())
}

pub(super) fn check_label_value(v: &str) -> std::result::Result<(), String> {
    let ok = v.len() <= 63
        && v.chars().all(is_name_char)
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a valid Kubernetes label value (at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends)"))
    }
}

/// A notebook name must be usable as a Prometheus label value and in URLs
/// and file names: a DNS-1123 label.
pub(crate) fn check_notebook_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"))
    }
}

/// An absolute `http` or `https` URL with a host.
pub(super) fn check_url(url: &str) -> std::result::Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(format!("{url:?}: scheme must be http or https"));
    }
    if u.host_str().is_none() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{parse, MINIMAL};

    #[test]
    fn durations_accept_humantime_and_bare_minutes() {
        assert_eq!(
            HumanDuration::parse("45").unwrap().0,
            Duration::from_secs(2700)
        );
        assert_eq!(
            HumanDuration::parse("1h 30m").unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(HumanDuration::parse("90s").unwrap().prometheus(), "1m30s");
        assert!(HumanDuration::parse("soon").is_err());
        let c = parse(&MINIMAL.replace("auth:", "autostop:\n  idle_after: 10\nauth:")).unwrap();
        assert_eq!(c.autostop.idle_after.0, Duration::from_secs(600));
    }
}
