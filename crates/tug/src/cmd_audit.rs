//! `tug audit`: the server's audit trail, newest first.

use serde_json::Value;

use crate::cli::{AuditArgs, OutputFormat};
use crate::client::{Client, Endpoint};
use crate::output;

fn str_of<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let client = Client::new(&Endpoint::from(&args.server))?;
    let mut query: Vec<(&str, String)> = [
        ("actor", &args.actor),
        ("action", &args.action),
        ("service", &args.service),
        ("environment", &args.environment),
        ("since", &args.since),
        ("until", &args.until),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
    .collect();
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(before) = args.before {
        query.push(("before", before.to_string()));
    }
    let answer = client.block_on(client.get("/api/v1/audit", &query))?;
    match args.server.output {
        OutputFormat::Json => output::json(&answer),
        OutputFormat::Text => {
            for r in answer
                .get("records")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                output::line(&text_line(r));
            }
            if let Some(next) = answer.get("next").and_then(Value::as_i64) {
                output::diagnostic(&format!("older records: tug audit --before {next}"));
            }
        }
    }
    Ok(())
}

/// `id  time  actor  action  where  result  message`, `-` for what a record does not name.
fn text_line(r: &Value) -> String {
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    let place = match (str_of(r, "service"), str_of(r, "environment")) {
        ("", "") => match (str_of(r, "repository"), str_of(r, "branch")) {
            ("", _) => "-".to_owned(),
            (repository, branch) => format!("{repository}@{branch}"),
        },
        (service, "") => service.to_owned(),
        (service, env) => format!("{}/{env}", or_dash(service)),
    };
    let result = match str_of(r, "code") {
        "" => str_of(r, "result").to_owned(),
        code => format!("{} ({code})", str_of(r, "result")),
    };
    format!(
        "{}  {}  {}  {}  {}  {}  {}",
        r.get("id").and_then(Value::as_i64).unwrap_or_default(),
        str_of(r, "at"),
        or_dash(str_of(r, "actor")),
        or_dash(str_of(r, "action")),
        place,
        result,
        str_of(r, "message"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::text_line;

    #[test]
    fn a_line_names_the_place_and_the_refusal_code() {
        let refused = json!({
            "id": 7, "at": "2026-01-31T12:00:00Z", "actor": "ci", "action": "deploy",
            "repository": "platform", "branch": "main", "result": "refused",
            "code": "permission_denied", "message": "no"
        });
        assert_eq!(
            text_line(&refused),
            "7  2026-01-31T12:00:00Z  ci  deploy  platform@main  refused (permission_denied)  no"
        );
        let release = json!({
            "id": 8, "at": "t", "actor": "ci", "action": "release", "service": "api",
            "environment": "dev", "result": "accepted", "code": null, "message": "job j"
        });
        assert_eq!(
            text_line(&release),
            "8  t  ci  release  api/dev  accepted  job j"
        );
    }
}
