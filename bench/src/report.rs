//! The bench's results (serialised to `bench/results.json`) and their Markdown rendering
//! (`bench/REPORT.md`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::latency::{self, LatencyCase};
use crate::throughput::ThroughputResult;

/// Issue 7's targets.
pub const COLD_START_MAX_RATIO: f64 = 2.0;
pub const PEAK_RSS_MAX_MIB: f64 = 40.0;
pub const ZIP_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Issue 6's: sustained rate within 2 % of the limiter's.
pub const RATE_MAX_DEVIATION_PCT: f64 = 2.0;
/// What the sender must sustain for one number when the limiter allows more (issue 6).
pub const CAPACITY_MIN_PER_S: f64 = 1000.0;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub rustc: String,
    pub memory_gib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdStart {
    pub binary: String,
    pub starts: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    /// median / hello-world's median.
    pub ratio: f64,
    /// Resident set high-water mark when it asked for its first event.
    pub init_rss_mib: f64,
    pub init_errors: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Warm {
    pub scenario: String,
    pub binary: String,
    pub events: usize,
    pub failed_events: usize,
    pub first_failure: Option<String>,
    pub cpu_us_per_event: f64,
    pub user_us_per_event: f64,
    pub system_us_per_event: f64,
    /// cpu_us_per_event / the PutItem reference's.
    pub ratio_to_reference: f64,
    pub wall_us_per_event: f64,
    /// Voluntary context switches (the process going to sleep) per event.
    #[serde(default)]
    pub wakeups_per_event: f64,
    pub peak_rss_mib: f64,
    /// AWS requests per event by `service:Operation`.
    pub requests_per_event: BTreeMap<String, f64>,
    pub dynamodb_per_event: f64,
    pub aws_per_event: f64,
    /// What the request count alone predicts: the Runtime API round trip (hello-world) plus,
    /// per AWS request, what one `PutItem` costs the reference beyond that round trip.
    pub predicted_cpu_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Size {
    pub binary: String,
    pub x86_64_bytes: Option<u64>,
    pub x86_64_zip_bytes: Option<u64>,
    pub arm64_bytes: Option<u64>,
    pub arm64_zip_bytes: Option<u64>,
}

/// A named bench (`make bench-…`) run by the report at a size that fits its time, kept as it
/// printed its figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamedBench {
    /// What it measures.
    pub what: String,
    /// The command, as run from the repository root.
    pub command: String,
    pub wall_s: f64,
    /// `None` when it ran to the end; else how it failed.
    pub failure: Option<String>,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub value: String,
    pub limit: String,
    pub met: bool,
    /// How far off, when missed.
    pub miss: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Results {
    pub generated_at: String,
    pub command: String,
    pub machine: Machine,
    /// The cargo profile of the measured (native) binaries, and its name.
    pub profile: BTreeMap<String, String>,
    #[serde(default)]
    pub profile_name: String,
    /// The profile of the arm64 packages, whose sizes the report gives (`release`).
    #[serde(default)]
    pub package_profile: BTreeMap<String, String>,
    pub settings: BTreeMap<String, String>,
    pub cold_start: Vec<ColdStart>,
    pub warm: Vec<Warm>,
    pub sizes: Vec<Size>,
    pub throughput: Vec<ThroughputResult>,
    /// CPU per event against a slower endpoint (absent from reports before it existed).
    #[serde(default)]
    pub latency: Vec<LatencyCase>,
    pub phonenumber_first_use_us: BTreeMap<String, f64>,
    /// The named benches run with the report (absent from reports before they were).
    #[serde(default)]
    pub named: Vec<NamedBench>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / 1024.0 / 1024.0)
}

fn opt_mib(bytes: Option<u64>) -> String {
    bytes.map(mib).unwrap_or_else(|| "n/a".into())
}

/// The targets of issues 7 and 21 (and issue 6's rate, 15's inbox, 18's rules) checked against
/// the results.
pub fn check_targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    for c in r.cold_start.iter().filter(|c| c.binary != "hello-lambda") {
        out.push(ratio_target(
            format!("cold start `{}` vs hello-world", c.binary),
            c.ratio,
            COLD_START_MAX_RATIO,
        ));
    }
    // Issue 21's ratios to the one-PutItem reference, with the DynamoDB requests allowed.
    for &(scenario, what, max_ratio, max_dynamodb) in WARM_LIMITS {
        let Some(w) = r.warm.iter().find(|w| w.scenario == scenario) else {
            continue;
        };
        out.push(ratio_target(
            format!("CPU per {what} vs one-PutItem reference"),
            w.ratio_to_reference,
            max_ratio,
        ));
        if let Some(max) = max_dynamodb {
            let met = w.dynamodb_per_event <= max;
            out.push(Target {
                what: format!("DynamoDB requests per {what}"),
                value: format!("{:.2}", w.dynamodb_per_event),
                limit: format!("≤ {max}"),
                met,
                miss: (!met).then(|| format!("+{:.2} requests", w.dynamodb_per_event - max)),
            });
        }
    }
    if let Some(w) = r.warm.iter().find(|w| w.binary == "sender" && w.scenario == SENDER_ONE) {
        out.push(ratio_target(
            "sender CPU per message vs what its AWS requests predict".into(),
            w.cpu_us_per_event / w.predicted_cpu_us,
            SENDER_MAX_RATIO_TO_PREDICTED,
        ));
    }
    let find = |scenario: &str| r.warm.iter().find(|w| w.scenario == scenario);
    if let (Some(none), Some(fifty)) = (find(AUTOMATION_NONE), find(AUTOMATION_FIFTY)) {
        // Issue 18's measure: what an inbound message costs in all, the webhook's write (rules
        // play no part in it) and its share of the events function, where rules are evaluated.
        // The events function's own ratio is in the warm table.
        if let Some(webhook) = find(INBOUND_CONVERSATION) {
            out.push(ratio_target(
                "CPU per inbound message (webhook + events function), 50 automation rules vs none".into(),
                (webhook.cpu_us_per_event + fifty.cpu_us_per_event)
                    / (webhook.cpu_us_per_event + none.cpu_us_per_event),
                AUTOMATION_MAX_RATIO,
            ));
        }
    }
    let contact = r.warm.iter().find(|w| w.scenario == CONTACT_GET);
    if let (Some(inbox), Some(contact)) = (r.warm.iter().find(|w| w.scenario == INBOX_PAGE), contact) {
        out.push(ratio_target(
            "CPU per GET /v1/conversations (page of 50) vs GET /v1/contacts/{id}".into(),
            inbox.cpu_us_per_event / contact.cpu_us_per_event,
            INBOX_CPU_MAX_RATIO,
        ));
    }
    out.extend(latency::targets(&r.latency));
    let mut peak: BTreeMap<&str, f64> = BTreeMap::new();
    for w in r.warm.iter().filter(|w| !is_reference(&w.binary)) {
        let e = peak.entry(w.binary.as_str()).or_default();
        *e = e.max(w.peak_rss_mib);
    }
    for (binary, rss) in peak {
        let met = rss <= PEAK_RSS_MAX_MIB;
        out.push(Target {
            what: format!("peak RSS `{binary}` under load"),
            value: format!("{rss:.1} MiB"),
            limit: format!("≤ {PEAK_RSS_MAX_MIB} MiB"),
            met,
            miss: (!met).then(|| format!("+{:.1} MiB", rss - PEAK_RSS_MAX_MIB)),
        });
    }
    for s in r.sizes.iter().filter(|s| !is_reference(&s.binary)) {
        let (zip, arch) = match (s.arm64_zip_bytes, s.x86_64_zip_bytes) {
            (Some(z), _) => (z, "arm64"),
            (None, Some(z)) => (z, "x86_64 (no arm64 package found)"),
            (None, None) => continue,
        };
        let met = zip <= ZIP_MAX_BYTES;
        out.push(Target {
            what: format!("zip `{}` ({arch})", s.binary),
            value: mib(zip),
            limit: format!("≤ {}", mib(ZIP_MAX_BYTES)),
            met,
            miss: (!met).then(|| format!("+{}", mib(zip - ZIP_MAX_BYTES))),
        });
    }
    for t in &r.throughput {
        if t.store_latency_ms.is_none() {
            // Against moto the endpoint, not the sender, sets the pace (see the table): only
            // throttling is judged there.
            out.push(Target {
                what: format!(
                    "sender binaries against moto: sends throttled by the fake Graph ({} sent)",
                    t.sent
                ),
                value: t.throttled.to_string(),
                limit: "0".into(),
                met: t.throttled == 0 && t.sent > 0,
                miss: (t.throttled > 0).then(|| format!("+{}", t.throttled)),
            });
            continue;
        }
        if t.capacity_probe {
            let rate = t.accuracy.sustained_per_s;
            out.push(Target {
                what: format!(
                    "sender capacity, one number, limiter at {} ({} s)",
                    t.config.rate, t.accuracy.seconds
                ),
                value: format!("{rate:.0}/s, {} throttled", t.throttled),
                limit: format!("≥ {CAPACITY_MIN_PER_S} /s, 0 throttled"),
                met: rate >= CAPACITY_MIN_PER_S && t.throttled == 0,
                miss: (rate < CAPACITY_MIN_PER_S).then(|| format!("{:+.0}/s", rate - CAPACITY_MIN_PER_S)),
            });
            continue;
        }
        let dev = t.accuracy.deviation_pct;
        let met = dev.abs() <= RATE_MAX_DEVIATION_PCT && t.throttled == 0 && t.accuracy.seconds >= 10;
        out.push(Target {
            what: format!("sender sustained rate, {} ({} s)", t.label, t.accuracy.seconds),
            value: format!(
                "{:.0}/s ({:+.1} %), {} throttled",
                t.accuracy.sustained_per_s, dev, t.throttled
            ),
            limit: format!("{} /s ± {RATE_MAX_DEVIATION_PCT} %, 0 throttled, ≥ 10 s", t.config.rate),
            met,
            miss: (!met).then(|| format!("{dev:+.1} %")),
        });
    }
    out
}

pub const INBOUND_NEW: &str = "inbound text webhook (new contact)";
pub const INBOUND_KNOWN: &str = "inbound text webhook (known contact)";
pub const INBOUND_CONVERSATION: &str = "inbound text webhook (conversation: contact seen by this instance)";
pub const CONTACT_GET: &str = "GET /v1/contacts/{id}";
pub const INBOX_PAGE: &str = "GET /v1/conversations (page of 50)";
pub const POST_MESSAGE: &str = "POST /v1/messages (text)";
pub const POST_REPLY: &str = "POST /v1/messages (text, reply: recipient this instance sent to)";
pub const SENDER_ONE: &str = "sender: one message per event";
pub const TEMPLATE_SEND: &str = "POST /v1/messages (template, validated against the registry)";
pub const REPORT_QUERY: &str = "GET /v1/reports/messages (90 days by day)";
pub const EVENTS_PER_RECORD: &str = "events function: the table's change stream, per record (batches of 100)";
pub const WEBHOOK_DELIVERY: &str = "webhook delivery, per delivery (batches of 10)";
pub const AUTOMATION_NONE: &str = "events function per inbound message, no automation rules";
pub const AUTOMATION_FIFTY: &str = "events function per inbound message, 50 automation rules (none fires)";
/// Issue 21: CPU ratio to the PutItem reference and DynamoDB requests, per scenario.
pub const WARM_LIMITS: &[(&str, &str, f64, Option<f64>)] = &[
    (
        INBOUND_CONVERSATION,
        "inbound text webhook, conversation (contact remembered)",
        1.2,
        Some(1.0),
    ),
    (
        INBOUND_KNOWN,
        "inbound text webhook, known contact new to the instance",
        2.0,
        Some(2.0),
    ),
    (INBOUND_NEW, "inbound text webhook, new contact", 3.0, Some(4.0)),
    (POST_MESSAGE, "POST /v1/messages (text)", 4.0, None),
    (
        POST_REPLY,
        "POST /v1/messages (text), reply to a customer this instance sent to",
        4.0,
        None,
    ),
];
/// Issue 21: the sender's CPU per message at most twice what its requests predict.
pub const SENDER_MAX_RATIO_TO_PREDICTED: f64 = 2.0;
/// Issue 18: fifty rules cost at most 10 % more per inbound message.
pub const AUTOMATION_MAX_RATIO: f64 = 1.10;

fn ratio_target(what: String, ratio: f64, max: f64) -> Target {
    let met = ratio <= max;
    Target {
        what,
        value: format!("{ratio:.2}×"),
        limit: format!("≤ {max}×"),
        met,
        miss: (!met).then(|| format!("+{:.0} %", (ratio / max - 1.0) * 100.0)),
    }
}

/// Issue 15: an inbox page costs at most twice a single contact read.
pub const INBOX_CPU_MAX_RATIO: f64 = 2.0;

pub fn is_reference(binary: &str) -> bool {
    matches!(binary, "hello-lambda" | "putitem-ref")
}

fn requests_cell(w: &Warm) -> String {
    if w.requests_per_event.is_empty() {
        return "0".into();
    }
    w.requests_per_event
        .iter()
        .map(|(op, n)| {
            let op = op
                .replace("dynamodb:", "")
                .replace("sqs:", "SQS ")
                .replace("s3:", "S3 ");
            if (n - n.round()).abs() < 0.005 {
                format!("{} {op}", n.round())
            } else {
                format!("{n:.2} {op}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn render(r: &Results, analysis: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Performance report\n");
    let _ = writeln!(
        md,
        "Generated by `{}` at {} — do not edit; `make bench` rewrites this file and `bench/results.json`.\n",
        r.command, r.generated_at
    );
    let m = &r.machine;
    let _ = writeln!(
        md,
        "Machine: {} × {}, {:.0} GiB, Linux {}, {}. Everything local (loopback): moto as the AWS endpoint, \
         the bench's own Runtime API and fake Graph. Times are wall-clock on a shared machine; ratios are \
         what to compare.\n",
        m.cpus, m.cpu_model, m.memory_gib, m.kernel, m.rustc
    );
    let keys = |p: &BTreeMap<String, String>| {
        p.iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if r.package_profile.is_empty() || r.package_profile == r.profile {
        let _ = writeln!(md, "Release profile: `{}`.\n", keys(&r.profile));
    } else {
        let _ = writeln!(
            md,
            "Measured (x86_64) binaries: profile `{}` (`{}`). Deployed arm64 packages, whose sizes the report \
             gives: profile `release` (`{}`).\n",
            r.profile_name,
            keys(&r.profile),
            keys(&r.package_profile)
        );
    }

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | limit | met |");
    let _ = writeln!(md, "| --- | --- | --- | --- |");
    for t in &r.targets {
        let met = if t.met {
            "yes".to_owned()
        } else {
            format!("**no** ({})", t.miss.clone().unwrap_or_default())
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", t.what, t.value, t.limit);
    }

    let _ = writeln!(md, "\n## Per function\n");
    // The x86_64 columns are of the measured build, the arm64 ones of the deployed packages.
    let measured = if r.profile_name.is_empty() {
        "release"
    } else {
        r.profile_name.as_str()
    };
    let _ = writeln!(
        md,
        "| function | cold start median (p10–p90) | vs hello | RSS at init | peak RSS under load | binary x86_64 ({measured}) | zip x86_64 ({measured}) | binary arm64 (release) | zip arm64 (release) |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for c in &r.cold_start {
        let size = r.sizes.iter().find(|s| s.binary == c.binary);
        let peak = r
            .warm
            .iter()
            .filter(|w| w.binary == c.binary)
            .map(|w| w.peak_rss_mib)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))));
        let _ = writeln!(
            md,
            "| `{}` | {:.2} ms ({:.2}–{:.2}){} | {:.2}× | {:.1} MiB | {} | {} | {} | {} | {} |",
            c.binary,
            c.median_ms,
            c.p10_ms,
            c.p90_ms,
            if c.init_errors > 0 {
                format!(", {} init errors", c.init_errors)
            } else {
                String::new()
            },
            c.ratio,
            c.init_rss_mib,
            peak.map(|p| format!("{p:.1} MiB")).unwrap_or_else(|| "—".into()),
            opt_mib(size.and_then(|s| s.x86_64_bytes)),
            opt_mib(size.and_then(|s| s.x86_64_zip_bytes)),
            opt_mib(size.and_then(|s| s.arm64_bytes)),
            opt_mib(size.and_then(|s| s.arm64_zip_bytes)),
        );
    }
    let starts = r.cold_start.first().map(|c| c.starts).unwrap_or(0);
    let _ = writeln!(
        md,
        "\nCold start: process start (spawn) until the function's first `GET /2018-06-01/runtime/invocation/next` \
         reaches the bench's Runtime API; {starts} starts each, interleaved (the order rotates every round) with \
         `hello-lambda`, a `lambda_runtime` hello world built with the same profile."
    );

    let _ = writeln!(md, "\n## Warm cost per event\n");
    let _ = writeln!(
        md,
        "| scenario | function | events | CPU µs/event (user+sys) | vs PutItem ref | predicted from requests | wall µs/event | peak RSS | AWS requests per event |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for w in &r.warm {
        let _ = writeln!(
            md,
            "| {} | `{}` | {}{} | {:.0} ({:.0}+{:.0}) | {:.2}× | {:.0} | {:.0} | {:.1} MiB | {} |",
            w.scenario,
            w.binary,
            w.events,
            if w.failed_events > 0 {
                format!(" (**{} failed**)", w.failed_events)
            } else {
                String::new()
            },
            w.cpu_us_per_event,
            w.user_us_per_event,
            w.system_us_per_event,
            w.ratio_to_reference,
            w.predicted_cpu_us,
            w.wall_us_per_event,
            w.peak_rss_mib,
            requests_cell(w),
        );
    }
    let _ = writeln!(
        md,
        "\nCPU is the function process's own (process CPU clock: user + system, all threads) over the measured \
         events after a warm-up, driven one at a time through the Runtime API like Lambda does; AWS requests \
         are counted by a proxy between the function and the endpoint. \"Predicted from requests\" = the \
         hello-world's CPU per event + (reference − hello-world) × AWS requests: the part above it is the \
         function's own work (parsing, rules, serialisation, logging). Locally the endpoint is plain HTTP, so \
         TLS costs are not in these figures."
    );
    for w in r.warm.iter().filter(|w| w.first_failure.is_some()) {
        let _ = writeln!(
            md,
            "\nFirst failure in `{}`: `{}`",
            w.scenario,
            w.first_failure.as_deref().unwrap_or_default()
        );
    }

    latency::render(&mut md, &r.latency);

    if !r.throughput.is_empty() {
        let _ = writeln!(md, "\n## Sender throughput (one phone number)\n");
        let _ = writeln!(
            md,
            "| run | senders × batch | limit | Graph delay | sustained /s (steady s) | vs limit | overall /s | max in an aligned second | max in any 1 s | min aligned second | throttled (130429) | retried | sender CPU µs/msg | endpoint |"
        );
        let _ = writeln!(md, "|{}", " --- |".repeat(14));
        for t in &r.throughput {
            let a = &t.accuracy;
            let endpoint = match (
                t.endpoint_cpu_share,
                t.endpoint_requests_per_s,
                t.endpoint_requests_per_message,
            ) {
                (Some(c), Some(r), Some(m)) => format!("{:.0} % of a core, {r:.0} req/s, {m:.1} req/msg", c * 100.0),
                (Some(c), _, _) => format!("{:.0} % of a core", c * 100.0),
                _ => "—".into(),
            };
            let _ = writeln!(
                md,
                "| {}{} | {} × {} | {}/s | {} ms | {:.1} ({} s){} | {:+.1} % | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
                t.label,
                t.store_latency_ms
                    .map(|l| format!(" ({l} ms per store call)"))
                    .unwrap_or_default(),
                t.config.instances,
                t.config.batch_size,
                t.config.rate,
                t.config.graph_delay.as_millis(),
                a.sustained_per_s,
                a.seconds,
                if t.supply_exhausted { ", queue ran dry" } else { "" },
                a.deviation_pct,
                t.overall_per_s,
                a.max_aligned_second,
                a.max_sliding_second,
                a.min_aligned_second,
                t.throttled,
                t.retried,
                t.sender_cpu_us_per_message
                    .map(|c| format!("{c:.0}"))
                    .unwrap_or_else(|| "—".into()),
                endpoint,
            );
        }
        let _ = writeln!(
            md,
            "\nMeasured at the fake Graph (arrival times of accepted sends); \"steady\" = from 2 s after the first \
             send to the last whole second before feeding stopped. The fake Graph answers `130429` to anything \
             beyond the limit within one aligned second."
        );
    }

    if !r.phonenumber_first_use_us.is_empty() {
        let _ = writeln!(
            md,
            "\n## `phonenumber` first use (the measured build, fresh process, median of runs)\n"
        );
        let _ = writeln!(md, "| call | µs |");
        let _ = writeln!(md, "| --- | --- |");
        for (k, v) in &r.phonenumber_first_use_us {
            let _ = writeln!(md, "| {k} | {v:.0} |");
        }
    }

    for n in &r.named {
        let _ = writeln!(md, "\n## {}\n", n.what);
        let _ = writeln!(
            md,
            "`{}` ({:.0} s{}):\n\n```text\n{}\n```",
            n.command,
            n.wall_s,
            n.failure
                .as_ref()
                .map(|f| format!(", **failed**: {f}"))
                .unwrap_or_default(),
            n.output.trim_end()
        );
    }

    if !r.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes from this run\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if let Some(a) = analysis {
        let _ = writeln!(md, "\n{}", a.trim_end());
    }
    md
}
