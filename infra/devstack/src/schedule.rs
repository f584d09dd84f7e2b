//! Schedules of `template.yaml` (`Type: Schedule` events of serverless functions), so the local
//! stack fires scheduled handlers at the rate the deployment will (`make dev`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml::Value;

use crate::template::TemplateError;

/// `rate(N unit)` as a duration; `None` for anything else (cron expressions are not run locally).
pub fn parse_rate(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (n, unit) = inner.trim().split_once(' ')?;
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let unit_secs = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * unit_secs))
}

/// Every function's schedule rates, by the function's logical id.
pub fn parse(text: &str) -> Result<BTreeMap<String, Vec<Duration>>, TemplateError> {
    let doc: Value = serde_yaml::from_str(text)?;
    let mut out: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let Some(resources) = doc.get("Resources").and_then(Value::as_mapping) else {
        return Ok(out);
    };
    for (id, resource) in resources {
        let (Some(id), Some("AWS::Serverless::Function")) = (id.as_str(), resource.get("Type").and_then(Value::as_str))
        else {
            continue;
        };
        let events = resource
            .get("Properties")
            .and_then(|p| p.get("Events"))
            .and_then(Value::as_mapping);
        for (_, event) in events.into_iter().flatten() {
            if event.get("Type").and_then(Value::as_str) != Some("Schedule") {
                continue;
            }
            let expression = event
                .get("Properties")
                .and_then(|p| p.get("Schedule"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(rate) = parse_rate(expression) {
                out.entry(id.to_owned()).or_default().push(rate);
            }
        }
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<BTreeMap<String, Vec<Duration>>, TemplateError> {
    parse(&std::fs::read_to_string(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate(1 hour)"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_rate("rate(5 minutes)"), Some(Duration::from_secs(300)));
        assert_eq!(parse_rate("rate(2 days)"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_rate("cron(0 * * * ? *)"), None);
        assert_eq!(parse_rate("rate(0 hours)"), None);
        assert_eq!(parse_rate("rate(1 fortnight)"), None);
    }

    #[test]
    fn the_template_schedules_the_retention_sweep() {
        let schedules = load(&crate::workspace_root().join("template.yaml")).unwrap();
        let retention = schedules
            .get("RetentionFunction")
            .expect("RetentionFunction has a schedule");
        assert!(!retention.is_empty());
    }
}
