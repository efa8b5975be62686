//! `timeline.html`, Jepsen's timeline: one column per process (the nemesis
//! last), time flowing down, each op a box from its invocation to its
//! completion, coloured ok `#6DB6FE` / info `#FFAA26` / fail `#FEB5DA`
//! (an op that never completed is `#eeeeee`). Hovering shows the op, its
//! wall time since the start, and its duration. At most [`OP_LIMIT`] ops
//! are drawn, as in Jepsen.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::history::{History, Op, OpType, Process};

/// Jepsen's `op-limit`.
pub const OP_LIMIT: usize = 10_000;
/// Nanoseconds per pixel (Jepsen's timescale is 1e6: 1 px per ms).
const NS_PER_PX: f64 = 1e6;
const COL_WIDTH: usize = 100;
const GUTTER: usize = 106;
const MIN_HEIGHT_PX: f64 = 16.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(t: Option<OpType>) -> &'static str {
    match t {
        Some(OpType::Ok) => "#6DB6FE",
        Some(OpType::Info) => "#FFAA26",
        Some(OpType::Fail) => "#FEB5DA",
        _ => "#eeeeee",
    }
}

/// Renders the timeline HTML.
pub fn render(history: &History, title: &str) -> String {
    // Pair every op (client and nemesis) with its completion.
    let mut open: BTreeMap<Process, usize> = BTreeMap::new();
    let mut pairs: Vec<(&Op, Option<&Op>)> = Vec::new();
    for op in &history.ops {
        let starts = match op.process {
            Process::Nemesis => !open.contains_key(&op.process),
            Process::Client(_) => op.is_invoke(),
        };
        if starts {
            open.insert(op.process, pairs.len());
            pairs.push((op, None));
        } else if let Some(i) = open.remove(&op.process) {
            pairs[i].1 = Some(op);
        }
        if pairs.len() >= OP_LIMIT && open.is_empty() {
            break;
        }
    }
    pairs.truncate(OP_LIMIT);
    let mut procs: Vec<Process> = pairs.iter().map(|p| p.0.process).collect();
    procs.sort();
    procs.dedup();
    // Clients first (ascending), nemesis last.
    procs.sort_by_key(|p| match p {
        Process::Client(n) => (0, *n),
        Process::Nemesis => (1, 0),
    });
    let col: BTreeMap<Process, usize> = procs.iter().enumerate().map(|(i, p)| (*p, i)).collect();
    let end = history.end_time();

    let mut body = String::new();
    for (i, p) in procs.iter().enumerate() {
        let _ = write!(
            body,
            "<div class=\"head\" style=\"left:{}px\">{}</div>",
            GUTTER + i * COL_WIDTH,
            escape(&p.to_string())
        );
    }
    for (inv, cmp) in &pairs {
        let top = inv.time as f64 / NS_PER_PX;
        let stop = cmp.map_or(end, |c| c.time);
        let dur_ns = stop.saturating_sub(inv.time);
        let height = (dur_ns as f64 / NS_PER_PX).max(MIN_HEIGHT_PX);
        let res = cmp.unwrap_or(inv);
        let mut label = format!("{} {}", inv.f.as_str(), crate::history::edn(&res.value));
        if let Some(k) = &inv.key {
            label = format!("{} {k} {}", inv.f.as_str(), crate::history::edn(&res.value));
        }
        let mut hover = format!(
            "Op: {}\nInvoked: {}\nWall time: {:.3} s\nDuration: {:.3} ms",
            serde_json::to_string(res).unwrap_or_default(),
            serde_json::to_string(inv).unwrap_or_default(),
            inv.time as f64 / 1e9,
            dur_ns as f64 / 1e6
        );
        if cmp.is_none() {
            hover.push_str("\n(never completed)");
        }
        let _ = write!(
            body,
            "<div class=\"op\" style=\"top:{top:.1}px;left:{}px;height:{height:.1}px;background:{}\" title=\"{}\">{}</div>",
            GUTTER + col[&inv.process] * COL_WIDTH,
            color(cmp.map(|c| c.kind)),
            escape(&hover),
            escape(&label),
        );
    }
    let height = end as f64 / NS_PER_PX + 100.0;
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t} timeline</title><style>\n\
         body {{ font-family: Helvetica, Arial, sans-serif; font-size: 11px; }}\n\
         .ops {{ position: relative; height: {height:.0}px; margin-top: 24px; }}\n\
         .op {{ position: absolute; width: {w}px; overflow: hidden; border-radius: 2px; \
         box-shadow: 0 1px 2px rgba(0,0,0,.3); padding: 1px 2px; box-sizing: border-box; }}\n\
         .op:hover {{ z-index: 10; overflow: visible; min-width: {w}px; }}\n\
         .head {{ position: absolute; top: -20px; width: {w}px; font-weight: bold; }}\n\
         </style></head><body><h1>{t}</h1><p>{n} ops ({limit} at most), one column per process; hover for details.</p>\
         <div class=\"ops\">{body}</div></body></html>\n",
        t = escape(title),
        w = COL_WIDTH - 4,
        n = pairs.len(),
        limit = OP_LIMIT,
    )
}

pub fn write(history: &History, path: &Path, title: &str) -> anyhow::Result<()> {
    std::fs::write(path, render(history, title))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::F;
    use crate::history::test_support::H;
    use serde_json::{Value, json};

    #[test]
    fn timeline_has_a_box_per_op_with_jepsen_colours() {
        let mut h = H::new();
        h.invoke(0, F::Add, "counter-0", json!(1))
            .ok(0, F::Add, "counter-0", json!(1))
            .invoke(1, F::Read, "counter-0", Value::Null)
            .info(1, F::Read, "counter-0", Value::Null)
            .invoke(0, F::Add, "counter-0", json!(2))
            .fail(0, F::Add, "counter-0", json!(2))
            .nemesis(F::Kill, json!("one"))
            .nemesis(F::Kill, json!({"n1": {"killed_pid": 5}}));
        let html = render(&h.build(), "t<1>");
        assert_eq!(html.matches("class=\"op\"").count(), 4);
        assert!(html.contains("#6DB6FE") && html.contains("#FFAA26") && html.contains("#FEB5DA"));
        assert!(html.contains("t&lt;1&gt;"));
        assert!(html.contains(":nemesis"));
        assert!(html.contains("Duration: 1.000 ms"));
    }

    #[test]
    fn timeline_is_limited_to_10000_ops() {
        let mut h = H::new();
        for i in 0..(OP_LIMIT as u64 + 50) {
            h.invoke(i % 5, F::Read, "counter-0", Value::Null).ok(
                i % 5,
                F::Read,
                "counter-0",
                json!(0),
            );
        }
        let html = render(&h.build(), "big");
        assert_eq!(html.matches("class=\"op\"").count(), OP_LIMIT);
    }
}
