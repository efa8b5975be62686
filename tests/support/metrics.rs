//! A node's Prometheus endpoint as an operator sees it: `GET /metrics`
//! over plain HTTP/1.1, and the samples of the text exposition.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on one scrape (the endpoint answers at once).
const SCRAPE_LIMIT: Duration = Duration::from_secs(10);

/// `GET http://<addr>/metrics`: the body of a `200 OK` answer.
pub async fn scrape(addr: SocketAddr) -> Result<String> {
    let fetch = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(SCRAPE_LIMIT, fetch)
        .await
        .with_context(|| format!("scraping {addr}: no answer in {SCRAPE_LIMIT:?}"))?
        .with_context(|| format!("scraping {addr}"))?;
    let text = String::from_utf8(raw).context("the exposition is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a blank line")?;
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "GET /metrics answered {head:?}"
    );
    Ok(body.to_owned())
}

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition: every sample, and each family's `# TYPE`.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → its type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
    /// Family name → its `# HELP` text.
    pub help: BTreeMap<String, String>,
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"").context("a label without =\"")?;
        // Values here never contain escaped quotes (names and levels).
        let (value, after) = after.split_once('"').context("an unterminated label")?;
        out.insert(name.to_owned(), value.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    Ok(out)
}

impl Exposition {
    /// Parses the text format: `# HELP`, `# TYPE` and sample lines; any
    /// other line is an error.
    pub fn parse(text: &str) -> Result<Exposition> {
        let mut out = Exposition::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.help.insert(name.to_owned(), help.to_owned());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').context("# TYPE without a type")?;
                out.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                bail!("an unexpected comment line: {line:?}");
            }
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("a sample without a value: {line:?}"))?;
            let value: f64 = value
                .parse()
                .with_context(|| format!("a sample with a bad value: {line:?}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (
                    name,
                    parse_labels(
                        labels
                            .strip_suffix('}')
                            .with_context(|| format!("unclosed labels: {line:?}"))?,
                    )?,
                ),
                None => (series, BTreeMap::new()),
            };
            out.samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok(out)
    }

    /// The samples of `name` whose labels include every `(label, value)` of
    /// `with`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample of `name` with these labels (among
    /// others); an error if there is none or more than one.
    pub fn value(&self, name: &str, with: &[(&str, &str)]) -> Result<f64> {
        let found: Vec<&Sample> = self.matching(name, with).collect();
        match found.as_slice() {
            [one] => Ok(one.value),
            [] => bail!("no sample {name} with {with:?}"),
            many => bail!("{} samples {name} with {with:?}: {many:?}", many.len()),
        }
    }

    /// The sum of every sample of `name` with these labels (0 if none).
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.matching(name, with).map(|s| s.value).sum()
    }
}

/// [`scrape`] and [`Exposition::parse`].
pub async fn scrape_parsed(addr: SocketAddr) -> Result<Exposition> {
    Exposition::parse(&scrape(addr).await?)
}
