//! `meridian bench compare`: the same load against two targets, A and B,
//! interleaved (A B A B … for `--rounds` rounds at each client count), so
//! that drift in the machine (other load, thermal, page cache) hits both
//! sides alike. Reports, per client count, each side's median throughput
//! with its min–max over the rounds, the ratio of the medians (A/B), and
//! the medians of the per-round p50, p99 and p99.9 latencies.
//!
//! `--json` prints the rounds themselves ([`Comparison`]);
//! `meridian bench report FILE...` turns several of those into one table
//! (that is how `benches/compare-redis.sh` prints its rows).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use meridian_client::Consistency;
use serde::{Deserialize, Serialize};

use super::stats::{RunStats, Table, fmt_ms, fmt_rate, fmt_ratio, median, min_max, ratio};
use super::target::{Target, Workload};
use super::{ClusterArgs, MAX_ROUNDS, ReadyTarget, WorkloadArgs, check_clients, parse_consistency};

/// Arguments of `meridian bench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Side A (meridian:PATH/client.toml, redis://HOST:PORT or local:N).
    #[arg(long)]
    pub a: Target,
    /// Side B.
    #[arg(long)]
    pub b: Target,
    /// Name of side A in the output.
    #[arg(long, default_value = "A")]
    pub a_label: String,
    /// Name of side B in the output.
    #[arg(long, default_value = "B")]
    pub b_label: String,
    /// Name of this comparison in the table (e.g. "periodic vs everysec").
    #[arg(long, default_value = "A vs B")]
    pub row: String,
    /// Rounds per client count (each round runs A, then B).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Concurrent clients; one set of rounds per count.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Meridian consistency level (ignored for Redis).
    #[arg(long, default_value = "local", value_parser = parse_consistency)]
    pub level: Consistency,
    /// Metrics address of A's node, to count its fsyncs (Meridian only).
    #[arg(long)]
    pub a_metrics: Option<SocketAddr>,
    /// Metrics address of B's node.
    #[arg(long)]
    pub b_metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Print the rounds as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `meridian bench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Files written from `meridian bench compare --json`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// One tab-separated line per row and client count instead of the table
    /// (for scripts; the header line names the columns, see [`tsv`]).
    #[arg(long)]
    pub tsv: bool,
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub label: String,
    pub target: String,
}

/// Every round at one client count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparePoint {
    pub clients: usize,
    pub a: Vec<RunStats>,
    pub b: Vec<RunStats>,
}

/// A whole comparison, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub row: String,
    pub a: Side,
    pub b: Side,
    pub workload: Workload,
    pub level: String,
    pub keys: u64,
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rounds: usize,
    pub points: Vec<ComparePoint>,
}

/// Medians over the rounds of one side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SideSummary {
    pub throughput: f64,
    pub throughput_min: f64,
    pub throughput_max: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub ops_per_fsync: Option<f64>,
    pub errors: u64,
}

impl SideSummary {
    pub fn of(rounds: &[RunStats]) -> SideSummary {
        let pick = |f: &dyn Fn(&RunStats) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
        let throughput = pick(&|r| r.throughput);
        let (lo, hi) = min_max(&throughput);
        let per_fsync: Vec<f64> = rounds.iter().filter_map(|r| r.ops_per_fsync).collect();
        SideSummary {
            throughput: median(&throughput),
            throughput_min: lo,
            throughput_max: hi,
            p50_us: median(&pick(&|r| r.latency.p50_us as f64)),
            p99_us: median(&pick(&|r| r.latency.p99_us as f64)),
            p999_us: median(&pick(&|r| r.latency.p999_us as f64)),
            ops_per_fsync: (!per_fsync.is_empty()).then(|| median(&per_fsync)),
            errors: rounds.iter().map(|r| r.errors).sum(),
        }
    }

    fn throughput_cell(&self) -> String {
        format!(
            "{} ({}–{})",
            fmt_rate(self.throughput),
            fmt_rate(self.throughput_min),
            fmt_rate(self.throughput_max)
        )
    }

    fn latency_cell(&self) -> String {
        format!(
            "{}/{}/{}",
            fmt_ms(self.p50_us),
            fmt_ms(self.p99_us),
            fmt_ms(self.p999_us)
        )
    }
}

/// The table of one or more comparisons, and a legend naming each side.
pub fn render(comparisons: &[Comparison]) -> String {
    let mut legend = String::new();
    let mut t = Table::new(&[
        "row",
        "clients",
        "A ops/s med (min–max)",
        "B ops/s med (min–max)",
        "A/B",
        "A p50/p99/p99.9 ms",
        "B p50/p99/p99.9 ms",
        "p50 A/B",
        "A ops/fsync",
        "errors A/B",
    ]);
    for c in comparisons {
        let workload = format!("{:?}", c.workload).to_lowercase();
        legend.push_str(&format!(
            "{}: A = {} ({}), B = {} ({}); {workload} workload, level {}, {} keys, \
             {}-byte keys, {}-byte values, {} rounds of {}s (+{}s warm-up)\n",
            c.row,
            c.a.label,
            c.a.target,
            c.b.label,
            c.b.target,
            c.level,
            c.keys,
            c.key_bytes,
            c.value_bytes,
            c.rounds,
            c.duration_s,
            c.warmup_s,
        ));
        for p in &c.points {
            let a = SideSummary::of(&p.a);
            let b = SideSummary::of(&p.b);
            t.row(vec![
                c.row.clone(),
                p.clients.to_string(),
                a.throughput_cell(),
                b.throughput_cell(),
                fmt_ratio(ratio(a.throughput, b.throughput)),
                a.latency_cell(),
                b.latency_cell(),
                fmt_ratio(ratio(a.p50_us, b.p50_us)),
                a.ops_per_fsync.map_or("-".into(), |r| format!("{r:.1}")),
                format!("{}/{}", a.errors, b.errors),
            ]);
        }
    }
    format!("{legend}\n{}", t.render())
}

/// The columns of [`tsv`].
pub const TSV_HEADER: &str = "row\tclients\ta_ops_s\tb_ops_s\tratio\ta_p50_ms\tb_p50_ms\t\
                              a_p99_ms\tb_p99_ms\ta_ops_per_fsync\ta_errors\tb_errors";

/// The same summaries as [`render`], one tab-separated line per row and
/// client count after a header ([`TSV_HEADER`]): medians over the rounds of
/// throughput (ops/s) and of the per-round p50/p99 (ms), the ratio of the
/// throughput medians (A/B), A's median ops per fsync (`-` when unknown),
/// and each side's failed operations summed over the rounds. Numbers are
/// plain (no `k` suffix), so a script can compare them.
pub fn tsv(comparisons: &[Comparison]) -> String {
    let mut out = format!("{TSV_HEADER}\n");
    for c in comparisons {
        for p in &c.points {
            let a = SideSummary::of(&p.a);
            let b = SideSummary::of(&p.b);
            let row = c.row.replace(['\t', '\n'], " ");
            out.push_str(&format!(
                "{row}\t{}\t{:.1}\t{:.1}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{}\n",
                p.clients,
                a.throughput,
                b.throughput,
                ratio(a.throughput, b.throughput).unwrap_or(0.0),
                a.p50_us / 1000.0,
                b.p50_us / 1000.0,
                a.p99_us / 1000.0,
                b.p99_us / 1000.0,
                a.ops_per_fsync.map_or("-".into(), |r| format!("{r:.1}")),
                a.errors,
                b.errors,
            ));
        }
    }
    out
}

/// Runs `meridian bench compare`.
pub async fn run(args: CompareArgs) -> Result<()> {
    check_clients(&args.clients)?;
    if args.rounds == 0 || args.rounds > MAX_ROUNDS {
        bail!("--rounds must be between 1 and {MAX_ROUNDS}");
    }
    args.workload.keyspace()?;
    let a = ReadyTarget::new(&args.a, None, args.a_metrics, &args.cluster).await?;
    let b = match ReadyTarget::new(&args.b, None, args.b_metrics, &args.cluster).await {
        Ok(b) => b,
        Err(e) => {
            a.close().await;
            return Err(e);
        }
    };
    let outcome = rounds(&args, &a, &b).await;
    a.close().await;
    b.close().await;
    let comparison = outcome?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print!("{}", render(std::slice::from_ref(&comparison)));
    }
    Ok(())
}

async fn rounds(args: &CompareArgs, a: &ReadyTarget, b: &ReadyTarget) -> Result<Comparison> {
    let w = &args.workload;
    let mut points = Vec::new();
    for &clients in &args.clients {
        let spec = w.spec(clients, args.level)?;
        let mut point = ComparePoint {
            clients,
            a: Vec::new(),
            b: Vec::new(),
        };
        for round in 1..=args.rounds {
            for (side, prepared, label) in [("a", a, &args.a_label), ("b", b, &args.b_label)] {
                let name = format!(
                    "{} c{clients} round {round}/{}: {label}",
                    args.row, args.rounds
                );
                let stats = prepared
                    .run(&spec, &name, !args.quiet)
                    .await
                    .with_context(|| name.clone())?;
                eprintln!(
                    "{name}: {} ops/s, p50 {} ms, p99 {} ms{}",
                    fmt_rate(stats.throughput),
                    fmt_ms(stats.latency.p50_us as f64),
                    fmt_ms(stats.latency.p99_us as f64),
                    if stats.errors > 0 {
                        format!(", {} errors", stats.errors)
                    } else {
                        String::new()
                    }
                );
                if side == "a" {
                    point.a.push(stats);
                } else {
                    point.b.push(stats);
                }
            }
        }
        points.push(point);
    }
    Ok(Comparison {
        row: args.row.clone(),
        a: Side {
            label: args.a_label.clone(),
            target: args.a.to_string(),
        },
        b: Side {
            label: args.b_label.clone(),
            target: args.b.to_string(),
        },
        workload: w.workload,
        level: args.level.to_string(),
        keys: w.keys,
        key_bytes: w.key_bytes,
        value_bytes: w.value_bytes,
        warmup_s: w.warmup.as_secs_f64(),
        duration_s: w.duration.as_secs_f64(),
        rounds: args.rounds,
        points,
    })
}

/// Runs `meridian bench report`.
pub fn report(args: ReportArgs) -> Result<()> {
    let mut all = Vec::new();
    for path in &args.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let c: Comparison = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not the output of `bench compare --json`",
                path.display()
            )
        })?;
        all.push(c);
    }
    if args.tsv {
        print!("{}", tsv(&all));
    } else {
        print!("{}", render(&all));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Latency;

    fn round(throughput: f64, p50_us: u64, p99_us: u64) -> RunStats {
        RunStats {
            ops: 1,
            throughput,
            latency: Latency {
                samples: 1,
                p50_us,
                p99_us,
                p999_us: p99_us * 2,
                ..Latency::default()
            },
            ..RunStats::default()
        }
    }

    #[test]
    fn summaries_take_medians_over_rounds() {
        let rounds = [
            round(1000.0, 500, 900),
            round(3000.0, 300, 700),
            round(2000.0, 400, 2000),
        ];
        let s = SideSummary::of(&rounds);
        assert_eq!(s.throughput, 2000.0);
        assert_eq!((s.throughput_min, s.throughput_max), (1000.0, 3000.0));
        assert_eq!(s.p50_us, 400.0);
        assert_eq!(s.p99_us, 900.0);
        assert_eq!(s.p999_us, 1800.0);
        assert_eq!(s.ops_per_fsync, None);
    }

    #[test]
    fn comparisons_render_with_ratio_and_legend() {
        let c = Comparison {
            row: "sync vs always".into(),
            a: Side {
                label: "meridian sync".into(),
                target: "meridian:/tmp/c/client.toml".into(),
            },
            b: Side {
                label: "redis always".into(),
                target: "redis://127.0.0.1:6390".into(),
            },
            workload: Workload::Set,
            level: "local".into(),
            keys: 1_000_000,
            key_bytes: 16,
            value_bytes: 100,
            warmup_s: 1.0,
            duration_s: 5.0,
            rounds: 2,
            points: vec![ComparePoint {
                clients: 16,
                a: vec![round(1000.0, 800, 900), round(1200.0, 800, 900)],
                b: vec![round(2000.0, 400, 500), round(2400.0, 400, 500)],
            }],
        };
        let text = render(std::slice::from_ref(&c));
        assert!(
            text.starts_with("sync vs always: A = meridian sync"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("sync vs always  "))
            .unwrap();
        for cell in [
            "16",
            "1.10k (1.00k–1.20k)",
            "2.20k (2.00k–2.40k)",
            "0.50×",
            "2.00×",
        ] {
            assert!(row.contains(cell), "{cell} missing from {row:?}");
        }
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Comparison>(&json).unwrap(), c);

        let tsv = tsv(std::slice::from_ref(&c));
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines[0], TSV_HEADER);
        assert_eq!(
            lines[1],
            "sync vs always\t16\t1100.0\t2200.0\t0.500\t0.800\t0.400\t0.900\t0.500\t-\t0\t0"
        );
        assert_eq!(lines.len(), 2);
    }
}
