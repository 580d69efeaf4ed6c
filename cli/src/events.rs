//! `tessera events`: the event stream (server-sent events derived from the
//! audit log), read until caught up or, with `--follow`, until interrupted.

use crate::output::{Failure, Row, rows};
use crate::request::{Ctx, Query, no_answer, refusal};
use anyhow::Result;
use clap::Args;
use http_body_util::BodyExt;
use serde_json::json;
use tessera_core::api;

/// Largest single event the stream parser accepts.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// `tessera events` options.
#[derive(Args)]
pub struct EventsArgs {
    /// Keep streaming new events until interrupted.
    #[arg(long)]
    follow: bool,
    /// Only these kinds (comma-separated or repeated): certificate.issued,
    /// certificate.renewed, certificate.revoked, certificate.expiring,
    /// ca.state_changed, node.banned.
    #[arg(long, value_delimiter = ',')]
    kinds: Vec<String>,
    /// Only events after this event ID (default: from the start, or from
    /// now with --follow).
    #[arg(long)]
    after: Option<i64>,
}

/// Parses event kind names (`--kind`, `--kinds`) into kinds; a bad name is a
/// usage error.
pub fn parse_kinds(kinds: &[String]) -> Result<Vec<api::EventKind>> {
    let list = api::EventKind::parse_list(&kinds.join(","))
        .map_err(|e| Failure::usage(format!("--kind: {e}")))?;
    Ok(list)
}

/// Runs `tessera events`: one line (table) or one JSON object per event as it
/// arrives.
pub async fn run(ctx: &Ctx, args: EventsArgs) -> Result<()> {
    let EventsArgs {
        follow,
        kinds,
        after,
    } = args;
    let kinds = parse_kinds(&kinds)?;
    if after.is_some_and(|a| a < 0) {
        return Err(Failure::usage("--after: an event ID, not negative").into());
    }
    let path = Query::new("/v1/events")
        .param("follow", follow)
        .list("kinds", kinds.iter().map(|k| k.as_str()))
        .opt("after", after);
    let mut s = ctx
        .client
        .stream(path.path(), &[])
        .await
        .map_err(no_answer)?;
    if !s.status.is_success() {
        let body = s
            .body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        // The stream keeps its own mapping: 404 and 409 exit 2 here, where
        // `Ctx::call_raw` gives 3 and 4.
        let code = match s.status.as_u16() {
            401 | 403 => 4,
            400..=499 => 2,
            _ => 5,
        };
        return Err(Failure::new(code, refusal(s.status, &body)).into());
    }
    if !ctx.out.json {
        print!("{}", rows(api::Event::HEADERS, std::iter::empty()));
    }
    let mut parser = tessera_core::sse::SseParser::new(MAX_EVENT_BYTES);
    // Without --follow the JSON output is one document like other lists;
    // with it, one object per line as events arrive.
    let mut collected: Vec<api::Event> = vec![];
    while let Some(frame) = s.body.frame().await {
        let frame = frame.map_err(|e| Failure::new(5, format!("event stream: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for e in parser
            .feed(&data)
            .map_err(|e| Failure::new(5, e.to_string()))?
        {
            let ev: api::Event = serde_json::from_str(&e.data)
                .map_err(|e| Failure::new(5, format!("event stream: {e}")))?;
            if ctx.out.json && !follow {
                collected.push(ev);
            } else if ctx.out.json {
                println!("{}", serde_json::to_string(&ev)?);
            } else {
                // Not aligned: rows print as they arrive, before the widths are known.
                println!("{}", ev.cells().join("  "));
            }
        }
    }
    if ctx.out.json && !follow {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "items": collected }))?
        );
    }
    Ok(())
}
