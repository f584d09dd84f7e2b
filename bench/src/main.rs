//! `make bench`: measures every function's native build (the `measure` profile) on this machine
//! and writes `bench/REPORT.md` and `bench/results.json`. Everything is local: a fresh moto endpoint
//! provisioned from `template.yaml`, the bench's own Lambda Runtime API, a counting proxy in
//! front of moto and a fake Graph API. Run after building the binaries (see the Makefile):
//!
//! ```sh
//! target/measure/bench [--events 300] [--warmup 30] [--starts 25] [--feed-secs 15] [--quick]
//!                       [--endpoint-delay-ms 0,10,50] [--latency-events 50] [--latency-rounds 2]
//!                       [--skip-named]
//! ```
//!
//! Last, it runs the named benches whose paths need a harness of their own (a campaign through
//! the engine, the media worker with large files, the console) and keeps what they print in the
//! report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use serde_json::{Value, json};

use bench::endpoint::LocalEndpoint;
use bench::functions::{FunctionSpec, Proc, from_template, release_binary};
use bench::graph::FakeGraph;
use bench::latency::{LatencyCase, LatencyPoint};
use bench::proxy::CountingProxy;
use bench::report::{
    self, CONTACT_GET, ColdStart, INBOUND_CONVERSATION, INBOUND_KNOWN, INBOUND_NEW, INBOX_PAGE, Machine, NamedBench,
    POST_MESSAGE, POST_REPLY, Results, SENDER_ONE, Size, Warm,
};
use bench::runtime_api::{Reply, RuntimeApi};
use bench::stats::{median, percentile};
use bench::throughput::{self, BENCH_PHONE_NUMBER_ID, ThroughputConfig, customer_phone};
use bench::{procfs, throughput::batch_failures};

mod paths;
use crm_shared::admin::{self, CreatedTenant};
use crm_shared::config::Env;
use crm_shared::jobs::SendJob;
use crm_shared::store::{ContactStore, CustomerIdentity, DynamoStore, OutboundStore};
use crm_shared::tenant::NewTenant;
use devstack::provision::{self, Provisioned};
use devstack::template;

const APP_SECRET: &str = "bench-app-secret-0123456789";
const VERIFY_TOKEN: &str = "bench-verify-token";
const CURSOR_SECRET: &str = "bench-cursor-secret-0123456789abcdef";
const HELLO: &str = "hello-lambda";
const REFERENCE: &str = "putitem-ref";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

struct Options {
    events: usize,
    warmup: usize,
    starts: usize,
    feed_secs: u64,
    out: PathBuf,
    /// Where the release binaries are (default: `target/release`).
    bin_dir: Option<PathBuf>,
    /// Profile every warm run with `perf record -e cpu-clock` into this directory.
    perf: Option<PathBuf>,
    /// Only these functions (default: every function of the template).
    functions: Option<Vec<String>>,
    skip_cold: bool,
    skip_warm: bool,
    skip_throughput: bool,
    /// Skip the scenarios of the paths added since the first report (`paths`).
    skip_paths: bool,
    /// The latency scenario: the AWS endpoint's delays (ms), measured events per delay and
    /// round, and rounds (the delays interleaved). 100 × 2 keeps it to about six minutes: the
    /// sender at 50 ms takes ~0.45 s per event.
    endpoint_delays_ms: Vec<u64>,
    latency_events: usize,
    latency_rounds: usize,
    skip_latency: bool,
    skip_named: bool,
    /// Only rewrite REPORT.md from results.json and ANALYSIS.md (no measurement).
    render_only: bool,
}

fn parse_args(root: &Path) -> Result<Options, String> {
    // Sized so that `make bench` stays under 45 min on 2 cores from a fresh clone, builds
    // included: moto serves a few dozen requests a second and slows as the table fills, so each
    // measured event costs the run far more wall time than CPU. 300 events put well over 100 ms
    // of CPU into every mean (the noise is the machine's, not the count's).
    let mut o = Options {
        events: 300,
        warmup: 30,
        starts: 25,
        feed_secs: 15,
        out: root.join("bench"),
        bin_dir: None,
        perf: None,
        functions: None,
        skip_cold: false,
        skip_warm: false,
        skip_throughput: false,
        skip_paths: false,
        endpoint_delays_ms: vec![0, 10, 50],
        latency_events: 50,
        latency_rounds: 2,
        skip_latency: false,
        skip_named: false,
        render_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--events" => o.events = num("--events")? as usize,
            "--warmup" => o.warmup = num("--warmup")? as usize,
            "--starts" => o.starts = num("--starts")? as usize,
            "--feed-secs" => o.feed_secs = num("--feed-secs")?,
            "--out" => o.out = PathBuf::from(args.next().ok_or("--out needs a directory")?),
            "--functions" => {
                o.functions = Some(
                    args.next()
                        .ok_or("--functions needs a comma-separated list")?
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "--perf" => o.perf = Some(PathBuf::from(args.next().ok_or("--perf needs a directory")?)),
            "--bin-dir" => o.bin_dir = Some(PathBuf::from(args.next().ok_or("--bin-dir needs a directory")?)),
            "--endpoint-delay-ms" => {
                o.endpoint_delays_ms = args
                    .next()
                    .ok_or("--endpoint-delay-ms needs a comma-separated list")?
                    .split(',')
                    .map(|d| {
                        d.trim()
                            .parse()
                            .map_err(|_| format!("--endpoint-delay-ms: not a number: {d}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--latency-events" => o.latency_events = num("--latency-events")? as usize,
            "--latency-rounds" => o.latency_rounds = num("--latency-rounds")?.max(1) as usize,
            "--skip-latency" => o.skip_latency = true,
            "--skip-named" => o.skip_named = true,
            "--skip-throughput" => o.skip_throughput = true,
            "--skip-paths" => o.skip_paths = true,
            "--skip-cold" => o.skip_cold = true,
            "--skip-warm" => o.skip_warm = true,
            "--render-only" => o.render_only = true,
            "--quick" => {
                // A smoke run of the whole pipeline; its numbers are not the report's.
                o.events = 100;
                o.warmup = 10;
                o.starts = 5;
                o.feed_secs = 6;
                o.latency_events = 30;
                o.latency_rounds = 1;
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--events N] [--warmup N] [--starts N] [--feed-secs N] [--out DIR] [--bin-dir DIR] [--perf DIR] [--functions a,b] [--skip-cold] [--skip-warm] [--skip-throughput] [--endpoint-delay-ms 0,10,50] [--latency-events N] [--latency-rounds N] [--skip-latency] [--skip-named] [--skip-paths] [--quick] [--render-only]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// Everything the measurements share.
struct Bench {
    /// SDK configuration for the bench's own requests to the local endpoint (set-up, reads).
    sdk: aws_config::SdkConfig,
    root: PathBuf,
    bin_dir: PathBuf,
    perf: Option<PathBuf>,
    logs: PathBuf,
    home: PathBuf,
    moto: LocalEndpoint,
    provisioned: Provisioned,
    proxy: CountingProxy,
    graph: FakeGraph,
    store: DynamoStore,
    tenant: CreatedTenant,
    functions: Vec<FunctionSpec>,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", Utc::now().format("%H:%M:%S"), msg.as_ref());
}

impl Bench {
    fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn memory_mb(&self, binary: &str) -> u32 {
        self.functions
            .iter()
            .find(|f| f.binary == binary)
            .map(|f| f.memory_mb)
            .unwrap_or(256)
    }

    /// The environment Lambda would give `binary` (template `Globals` resources, secrets,
    /// Lambda's own variables), pointing at `runtime_api` and the AWS `endpoint`.
    fn env(&self, binary: &str, runtime_api: &str, endpoint: &str) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
            ("TZ", ":UTC"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]bench"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
            ("RUST_LOG", "info"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_SESSION_TOKEN", "test"),
            ("WHATSAPP_APP_SECRET", APP_SECRET),
            ("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN),
            ("CURSOR_SECRET", CURSOR_SECRET),
            ("SEND_RATE_PER_SECOND", "1000"),
            // The bench measures CPU per request, not the tenant quota: a quota refusal
            // (`429`) would be a cheaper request and skew every ratio.
            ("TENANT_REQUESTS_PER_SECOND", "1000000"),
            ("TENANT_REQUEST_BURST", "1000000"),
            // The bench's webhook receiver listens on loopback (never the production default).
            ("WEBHOOK_ALLOW_LOOPBACK", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("HOME".into(), self.home.display().to_string()));
        env.push(("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.to_owned()));
        env.push(("AWS_LAMBDA_FUNCTION_NAME".into(), binary.to_owned()));
        env.push((
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            self.memory_mb(binary).to_string(),
        ));
        env.push(("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/{binary}")));
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.to_owned()));
        env.push(("GRAPH_API_BASE".into(), self.graph.base_url()));
        env.extend(self.provisioned.function_env());
        env
    }
}

async fn setup(root: &Path, out: &Path, bin_dir: &Path, only: Option<&[String]>) -> Result<Bench, String> {
    let mut functions = from_template(
        &std::fs::read_to_string(root.join("template.yaml")).map_err(|e| format!("template.yaml: {e}"))?,
    )?;
    if let Some(only) = only {
        functions.retain(|f| only.contains(&f.binary));
    }
    let mut missing: Vec<String> = [HELLO, REFERENCE]
        .into_iter()
        .filter(|b| !bin_dir.join(b).exists())
        .map(str::to_owned)
        .collect();
    missing.extend(
        functions
            .iter()
            .filter(|f| !bin_dir.join(&f.binary).exists())
            .map(|f| f.binary.clone()),
    );
    if !missing.is_empty() {
        return Err(format!(
            "release binaries missing in {}: {} (run `make bench`, which builds them)",
            bin_dir.display(),
            missing.join(", ")
        ));
    }
    let logs = out.join("out/logs");
    let home = out.join("out/home");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    log("starting moto and provisioning from template.yaml");
    let moto = LocalEndpoint::start(root).map_err(|e| format!("local AWS endpoint: {e}"))?;
    let endpoint = moto.endpoint_url();
    let sdk = sdk_config(&endpoint).await;
    let resources = template::load(&root.join("template.yaml")).map_err(|e| e.to_string())?;
    // The functions read their secrets from the local Secrets Manager, as on AWS.
    let secrets = std::collections::BTreeMap::from([
        ("MetaAppSecret".to_owned(), APP_SECRET.to_owned()),
        ("MetaVerifyToken".to_owned(), VERIFY_TOKEN.to_owned()),
        ("CursorKey".to_owned(), CURSOR_SECRET.to_owned()),
    ]);
    let provisioned = provision::provision_with_secrets(&sdk, &Env::default(), &resources, &secrets)
        .await
        .map_err(|e| e.to_string())?;
    let store = DynamoStore::new(crm_shared::aws::dynamodb_client(&sdk), &provisioned.tables["DataTable"]);
    let tenant = admin::create_tenant(
        &store,
        NewTenant::validated("Bench", BENCH_PHONE_NUMBER_ID, "100000000000000", "bench-graph-token")
            .map_err(|e| e.to_string())?,
    )
    .await
    .map_err(|e| e.to_string())?;
    let proxy = CountingProxy::start(&endpoint).await.map_err(|e| e.to_string())?;
    let graph = FakeGraph::start().await.map_err(|e| e.to_string())?;
    Ok(Bench {
        sdk,
        root: root.to_owned(),
        bin_dir: bin_dir.to_owned(),
        perf: None,
        logs,
        home,
        moto,
        provisioned,
        proxy,
        graph,
        store,
        tenant,
        functions,
    })
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await
}

// ---------------------------------------------------------------------------------------------
// Cold starts

async fn cold_starts(b: &Bench, rounds: usize) -> Result<Vec<ColdStart>, String> {
    let mut order: Vec<String> = std::iter::once(HELLO.to_owned())
        .chain(b.functions.iter().map(|f| f.binary.clone()))
        .collect();
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut rss: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    log(format!("cold starts: {rounds} rounds × {} binaries", order.len()));
    for round in 0..rounds {
        order.rotate_left(1);
        for name in &order {
            let rt = RuntimeApi::start().await.map_err(|e| e.to_string())?;
            let env = b.env(name, &rt.host_port(), &b.proxy.url());
            let binary = b.binary(name);
            // Let the machine settle between starts.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let started = Instant::now();
            let proc = Proc::spawn(&binary, &env, None).map_err(|e| format!("{name}: {e}"))?;
            let asked = rt.wait_first_next(Duration::from_secs(10)).await;
            let mem = procfs::memory_kib(proc.pid()).ok();
            drop(proc);
            match asked {
                Some(at) if rt.init_error().is_none() => {
                    times
                        .entry(name.clone())
                        .or_default()
                        .push((at - started).as_secs_f64() * 1e3);
                    if let Some((hwm, _)) = mem {
                        rss.entry(name.clone()).or_default().push(hwm as f64 / 1024.0);
                    }
                }
                _ => {
                    *errors.entry(name.clone()).or_default() += 1;
                    if round == 0 {
                        log(format!(
                            "{name} did not ask for an event: {}",
                            rt.init_error().unwrap_or_else(|| "no request within 10 s".into())
                        ));
                    }
                }
            }
        }
    }
    let hello = median(times.get(HELLO).map(Vec::as_slice).unwrap_or_default());
    let mut out = Vec::new();
    for name in std::iter::once(HELLO.to_owned()).chain(b.functions.iter().map(|f| f.binary.clone())) {
        let t = times.get(&name).cloned().unwrap_or_default();
        out.push(ColdStart {
            binary: name.clone(),
            starts: t.len(),
            median_ms: median(&t),
            p10_ms: percentile(&t, 10.0),
            p90_ms: percentile(&t, 90.0),
            ratio: median(&t) / hello,
            init_rss_mib: median(rss.get(&name).map(Vec::as_slice).unwrap_or_default()),
            init_errors: errors.get(&name).copied().unwrap_or(0),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Warm runs

#[derive(Clone, Copy)]
enum Expect {
    /// An API Gateway response with this status.
    Http(u16),
    /// An SQS batch response without failures.
    NoBatchFailures,
    Anything,
}

fn check(expect: Expect, reply: &Reply) -> Result<(), String> {
    let body = match reply {
        Reply::Response(b) => b,
        Reply::Error(b) => return Err(format!("invocation error: {}", String::from_utf8_lossy(b))),
    };
    match expect {
        Expect::Anything => Ok(()),
        Expect::Http(status) => {
            let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
            if v["statusCode"].as_u64() == Some(status as u64) {
                Ok(())
            } else {
                Err(format!(
                    "status {} (want {status}): {}",
                    v["statusCode"],
                    v["body"].as_str().unwrap_or_default()
                ))
            }
        }
        Expect::NoBatchFailures => match batch_failures(body) {
            Ok(f) if f.is_empty() => Ok(()),
            Ok(f) => Err(format!("{} batch item failures", f.len())),
            Err(e) => Err(e),
        },
    }
}

struct WarmRun {
    result: Warm,
    replies: Vec<Reply>,
}

/// Starts `binary`, feeds it `warmup` then the remaining events one at a time, and measures the
/// measured part.
async fn warm(
    b: &Bench,
    scenario: &str,
    binary: &str,
    events: Vec<Vec<u8>>,
    warmup: usize,
    expect: Expect,
) -> Result<WarmRun, String> {
    log(format!(
        "warm: {scenario} ({binary}, {} + {} events)",
        warmup,
        events.len() - warmup
    ));
    let rt = RuntimeApi::start().await.map_err(|e| e.to_string())?;
    let env = b.env(binary, &rt.host_port(), &b.proxy.url());
    let log_path = b
        .logs
        .join(format!("{}.log", scenario.replace([' ', '/', '(', ')', '{', '}'], "_")));
    let proc = Proc::spawn(&b.binary(binary), &env, Some(&log_path)).map_err(|e| e.to_string())?;
    let pid = proc.pid();
    let mut replies = Vec::with_capacity(events.len());
    let mut failed = 0;
    let mut first_failure = None;
    let mut measure_from = None;
    let mut perf = None;
    for (i, event) in events.into_iter().enumerate() {
        if i == warmup {
            b.proxy.take();
            measure_from = Some((
                Instant::now(),
                procfs::cpu_time(pid).map_err(|e| e.to_string())?,
                procfs::user_system(pid).map_err(|e| e.to_string())?,
                procfs::voluntary_switches(pid).map_err(|e| e.to_string())?,
            ));
        }
        if i == warmup
            && let Some(dir) = &b.perf
        {
            perf = Some(start_perf(dir, scenario, pid)?);
        }
        let reply = rt.invoke(Bytes::from(event), INVOKE_TIMEOUT).await?;
        if let Err(e) = check(expect, &reply) {
            if i >= warmup {
                failed += 1;
            }
            if first_failure.is_none() {
                log(format!("{scenario}: event {i} failed: {e}"));
                first_failure = Some(e);
            }
        }
        replies.push(reply);
    }
    let (t0, cpu0, (u0, s0), sw0) = measure_from.ok_or("no measured events")?;
    let wall = t0.elapsed();
    let cpu = procfs::cpu_time(pid).map_err(|e| e.to_string())? - cpu0;
    let (u1, s1) = procfs::user_system(pid).map_err(|e| e.to_string())?;
    let switches = procfs::voluntary_switches(pid).map_err(|e| e.to_string())? - sw0;
    let (hwm, _) = procfs::memory_kib(pid).map_err(|e| e.to_string())?;
    let counts = b.proxy.take();
    if let Some((child, data)) = perf {
        finish_perf(child, &data);
    }
    drop(proc);
    let n = (replies.len() - warmup) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let requests_per_event: BTreeMap<String, f64> = counts.iter().map(|(k, v)| (k.clone(), *v as f64 / n)).collect();
    let dynamodb = counts
        .iter()
        .filter(|(k, _)| k.starts_with("dynamodb:"))
        .map(|(_, v)| *v as f64)
        .sum::<f64>()
        / n;
    let aws = counts.values().map(|v| *v as f64).sum::<f64>() / n;
    // user/system from /proc are tick-based; scale them to the precise total.
    let (du, ds) = ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64());
    let user_share = if du + ds > 0.0 { du / (du + ds) } else { 1.0 };
    let cpu_us = per(cpu);
    Ok(WarmRun {
        result: Warm {
            scenario: scenario.to_owned(),
            binary: binary.to_owned(),
            events: n as usize,
            failed_events: failed,
            first_failure,
            cpu_us_per_event: cpu_us,
            user_us_per_event: cpu_us * user_share,
            system_us_per_event: cpu_us * (1.0 - user_share),
            ratio_to_reference: f64::NAN,
            wall_us_per_event: per(wall),
            wakeups_per_event: switches as f64 / n,
            peak_rss_mib: hwm as f64 / 1024.0,
            requests_per_event,
            dynamodb_per_event: dynamodb,
            aws_per_event: aws,
            predicted_cpu_us: f64::NAN,
        },
        replies,
    })
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `perf record -e cpu-clock -g` attached to `pid` (profiling runs only: `--perf DIR`).
fn start_perf(dir: &Path, scenario: &str, pid: u32) -> Result<(std::process::Child, PathBuf), String> {
    let data = dir.join(format!("{}.perf.data", slug(scenario)));
    let child = std::process::Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "cpu-clock",
            "-F",
            "1000",
            "--call-graph",
            "dwarf,32768",
            "-o",
        ])
        .arg(&data)
        .args(["-p", &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("perf: {e}"))?;
    std::thread::sleep(Duration::from_millis(300));
    Ok((child, data))
}

/// Stops `perf record` and writes the flat profile next to its data.
fn finish_perf(mut child: std::process::Child, data: &Path) {
    // SAFETY: kill(2) on the perf process this bench started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let _ = child.wait();
    // Self time by symbol, and inclusive time (callers included) by symbol.
    for (suffix, children) in [("self.txt", "--no-children"), ("inclusive.txt", "--children")] {
        if let Ok(out) = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                children,
                "--sort",
                "symbol",
                "-g",
                "none",
                "--percent-limit",
                "0.5",
                "-i",
            ])
            .arg(data)
            .output()
        {
            let _ = std::fs::write(data.with_extension(suffix), out.stdout);
        }
    }
}

/// An API Gateway HTTP API (v2) event, as the local gateway builds it.
fn apigw_event(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "abcdef1234.execute-api.us-east-1.amazonaws.com")
        .header("user-agent", "bench/1.0");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let (parts, ()) = req.body(()).expect("valid request").into_parts();
    devstack::gateway::api_gateway_event(&parts, body)
        .to_string()
        .into_bytes()
}

fn webhook_event(body: &str) -> Vec<u8> {
    apigw_event(
        "POST",
        "/webhooks/whatsapp",
        &[
            ("content-type", "application/json".into()),
            (
                "x-hub-signature-256",
                crm_shared::whatsapp::sign(APP_SECRET.as_bytes(), body.as_bytes()),
            ),
        ],
        body.as_bytes(),
    )
}

fn change(value: Value) -> String {
    change_of("100000000000000", "messages", value)
}

/// A webhook body carrying one change of `field` for the WABA `waba_id`.
fn change_of(waba_id: &str, field: &str, value: Value) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": field, "value": value}]}]
    })
    .to_string()
}

fn metadata() -> Value {
    json!({"display_phone_number": "15550000000", "phone_number_id": BENCH_PHONE_NUMBER_ID})
}

/// A one-message inbound text delivery from customer `i`.
fn inbound_text(i: usize, round: usize) -> Vec<u8> {
    inbound_text_from(i, i, round)
}

/// Message `n` of a run, from customer `i`.
fn inbound_text_from(i: usize, n: usize, round: usize) -> Vec<u8> {
    let wa_id = customer_phone(i).trim_start_matches('+').to_owned();
    let ts = Utc::now().timestamp() - 5;
    webhook_event(&change(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "contacts": [{"profile": {"name": format!("Customer {i}")}, "wa_id": wa_id}],
        "messages": [{
            "from": wa_id,
            "id": format!("wamid.BENCHIN{round}x{n:08}"),
            "timestamp": ts.to_string(),
            "type": "text",
            "text": {"body": "Hi, is the blue jacket still available in size M?"}
        }]
    })))
}

/// A `delivered` status for an outbound message to customer `i`.
fn status_delivered(wamid: &str, i: usize) -> Vec<u8> {
    let recipient = customer_phone(i).trim_start_matches('+').to_owned();
    webhook_event(&change(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(),
        "statuses": [{
            "id": wamid,
            "status": "delivered",
            "timestamp": Utc::now().timestamp().to_string(),
            "recipient_id": recipient,
            "conversation": {"id": format!("conv{i:08}"), "origin": {"type": "utility"}},
            "pricing": {"billable": true, "pricing_model": "PMP", "category": "utility", "type": "regular"}
        }]
    })))
}

/// An SQS event carrying one send job, as the outbound queue delivers it.
fn send_job_event(i: usize, job: &SendJob) -> Vec<u8> {
    let body = serde_json::to_string(job).expect("job serializes");
    sqs_event(&[(format!("sqs-{i}"), body)], "wcrm-outbound-queue")
}

/// The SQS event of `(message id, body)` records from `queue`, as Lambda's mapping delivers it.
fn sqs_event(records: &[(String, String)], queue: &str) -> Vec<u8> {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| {
            json!({
                "messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1767225600000"},
                "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"), "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records }).to_string().into_bytes()
}

/// `POST /v1/messages` of a text to `to`, as the API Gateway event the api function receives.
fn text_send_event(b: &Bench, to: &str, text: &str) -> Vec<u8> {
    let body = json!({"to": to, "type": "text", "text": {"body": text}});
    apigw_event(
        "POST",
        "/v1/messages",
        &[bearer(b), ("content-type", "application/json".into())],
        body.to_string().as_bytes(),
    )
}

fn bearer(b: &Bench) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", b.tenant.api_key.expose()))
}

/// The contacts of the first `total` bench customers (the inbound runs create them).
async fn bench_contact_ids(b: &Bench, total: usize) -> Result<Vec<String>, String> {
    let mut contact_ids = Vec::with_capacity(total);
    for i in 0..total {
        let identity = CustomerIdentity {
            phone: Some(customer_phone(i)),
            user_id: None,
        };
        let id = b
            .store
            .match_contact(&b.tenant.tenant.tenant_id, &identity)
            .await
            .map_err(|e| e.to_string())?
            .map(|(id, _)| id)
            .ok_or_else(|| format!("no contact for customer {i}: the inbound run did not store it"))?;
        contact_ids.push(id);
    }
    Ok(contact_ids)
}

/// Copies the contact cards of the inbox's first pages onto their conversations, as the events
/// function does on AWS once a conversation opens (this bench feeds it no stream): the steady
/// state an agent's inbox is in.
async fn copy_inbox_cards(b: &Bench) -> Result<(), String> {
    use crm_shared::store::{ConversationStore, InboxQuery};
    let tenant_id = &b.tenant.tenant.tenant_id;
    let query = InboxQuery {
        filter: Default::default(),
        visibility: crm_shared::conversation::Visibility::All,
        reader: "bench".into(),
        now: chrono::Utc::now(),
    };
    let page = b
        .store
        .inbox(tenant_id, &query, 100, None)
        .await
        .map_err(|e| e.to_string())?;
    for entry in &page.items {
        b.store
            .refresh_contact_cards(tenant_id, &entry.conversation.contact_id)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Starts `binary` and hands it `events` one at a time, unmeasured (a scenario's set-up).
async fn invoke_all(b: &Bench, binary: &str, events: Vec<Vec<u8>>, expect: Expect) -> Result<Vec<Reply>, String> {
    let rt = RuntimeApi::start().await.map_err(|e| e.to_string())?;
    let env = b.env(binary, &rt.host_port(), &b.proxy.url());
    let log_path = b.logs.join(format!("setup-{binary}.log"));
    let proc = Proc::spawn(&b.binary(binary), &env, Some(&log_path)).map_err(|e| e.to_string())?;
    let mut replies = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let reply = rt.invoke(Bytes::from(event), INVOKE_TIMEOUT).await?;
        check(expect, &reply).map_err(|e| format!("set-up event {i} of {binary} failed: {e}"))?;
        replies.push(reply);
    }
    drop(proc);
    b.proxy.take();
    Ok(replies)
}

async fn warm_runs(b: &Bench, events: usize, warmup: usize) -> Result<Vec<Warm>, String> {
    let total = events + warmup;
    let mut out = Vec::new();

    let small = |i: usize| json!({"n": i}).to_string().into_bytes();
    let reference = warm(
        b,
        "one DynamoDB PutItem (reference)",
        REFERENCE,
        (0..total).map(small).collect(),
        warmup,
        Expect::Anything,
    )
    .await?;
    out.push(reference.result);
    let hello = warm(
        b,
        "echo (Runtime API round trip only)",
        HELLO,
        (0..total).map(small).collect(),
        warmup,
        Expect::Anything,
    )
    .await?;
    out.push(hello.result);

    let first = warm(
        b,
        INBOUND_NEW,
        "webhook",
        (0..total).map(|i| inbound_text(i, 1)).collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(first.result);
    let known = warm(
        b,
        INBOUND_KNOWN,
        "webhook",
        (0..total).map(|i| inbound_text(i, 2)).collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(known.result);
    // A conversation: customers writing again to an instance that has seen them (warm-up
    // included), so the contact is remembered and only the write is left.
    let conversation = warm(
        b,
        INBOUND_CONVERSATION,
        "webhook",
        (0..total).map(|n| inbound_text_from(n % warmup.max(1), n, 3)).collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(conversation.result);

    let contact_ids = bench_contact_ids(b, total).await?;
    let get = warm(
        b,
        CONTACT_GET,
        "api",
        contact_ids
            .iter()
            .map(|id| apigw_event("GET", &format!("/v1/contacts/{id}"), &[bearer(b)], b""))
            .collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(get.result);

    // The inbox: the inbound runs opened one conversation per customer (thousands), so every
    // page is full; the same first page each time, as an agent refreshing the inbox.
    copy_inbox_cards(b).await?;
    let inbox = warm(
        b,
        INBOX_PAGE,
        "api",
        (0..total)
            .map(|_| apigw_event("GET", "/v1/conversations?limit=50", &[bearer(b)], b""))
            .collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(inbox.result);

    let post = warm(
        b,
        POST_MESSAGE,
        "api",
        (0..total)
            .map(|i| text_send_event(b, &customer_phone(i), &format!("Yes! Order #{i} is reserved for you.")))
            .collect(),
        warmup,
        Expect::Http(202),
    )
    .await?;
    let mut message_ids = Vec::with_capacity(total);
    for reply in &post.replies {
        if let Reply::Response(body) = reply {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            let inner: Value = serde_json::from_str(v["body"].as_str().unwrap_or("{}")).unwrap_or_default();
            if let Some(id) = inner["id"].as_str() {
                message_ids.push(id.to_owned());
            }
        }
    }
    out.push(post.result);
    if message_ids.len() < total {
        return Err(format!("only {} of {total} sends were queued", message_ids.len()));
    }

    b.graph.configure(Duration::ZERO, 0);
    b.graph.take();
    let tenant_id = b.tenant.tenant.tenant_id.clone();
    let sends = warm(
        b,
        SENDER_ONE,
        "sender",
        message_ids
            .iter()
            .enumerate()
            .map(|(i, id)| send_job_event(i, &SendJob::new(&tenant_id, id)))
            .collect(),
        warmup,
        Expect::NoBatchFailures,
    )
    .await?;
    out.push(sends.result);
    let wamids = b.graph.take().wamids;
    if wamids.len() < total {
        return Err(format!("the fake Graph saw only {} of {total} sends", wamids.len()));
    }

    let statuses = warm(
        b,
        "status webhook (delivered)",
        "webhook",
        wamids.iter().enumerate().map(|(i, w)| status_delivered(w, i)).collect(),
        warmup,
        Expect::Http(200),
    )
    .await?;
    out.push(statuses.result);

    // A reply in a conversation: every measured send goes to a customer this instance sent to
    // during its warm-up (as an agent answering the customers in their inbox).
    let customers = warmup.max(1);
    let replies = warm(
        b,
        POST_REPLY,
        "api",
        (0..total)
            .map(|i| text_send_event(b, &customer_phone(i % customers), &format!("Reply {i}.")))
            .collect(),
        warmup,
        Expect::Http(202),
    )
    .await?;
    out.push(replies.result);

    Ok(out)
}

/// Each run's ratio to the PutItem reference and what its request count predicts.
fn relate_to_reference(out: &mut [Warm]) {
    let ref_cpu = out.iter().find(|w| w.binary == REFERENCE).map(|w| w.cpu_us_per_event);
    let hello_cpu = out.iter().find(|w| w.binary == HELLO).map(|w| w.cpu_us_per_event);
    if let (Some(r), Some(h)) = (ref_cpu, hello_cpu) {
        for w in out {
            w.ratio_to_reference = w.cpu_us_per_event / r;
            w.predicted_cpu_us = h + (r - h) * w.aws_per_event;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput

async fn seed_throughput_messages(b: &Bench, count: usize, first_customer: usize) -> Result<Vec<SendJob>, String> {
    let tenant_id = b.tenant.tenant.tenant_id.clone();
    let mut jobs = Vec::with_capacity(count);
    let indices: Vec<usize> = (first_customer..first_customer + count).collect();
    for chunk in indices.chunks(16) {
        let made = futures::future::join_all(chunk.iter().map(|&i| {
            let tenant_id = tenant_id.clone();
            async move {
                let contact = throughput::recent_contact(&tenant_id, &customer_phone(i));
                b.store.create_contact(&contact).await.map_err(|e| e.to_string())?;
                let message = throughput::queued_text(&tenant_id, &contact.contact_id, i);
                b.store.create_message(&message).await.map_err(|e| e.to_string())?;
                Ok::<_, String>(SendJob::new(&tenant_id, &message.message_id))
            }
        }))
        .await;
        for m in made {
            jobs.push(m?);
        }
    }
    Ok(jobs)
}

async fn throughput_runs(
    b: &Bench,
    feed_secs: u64,
    first_customer: usize,
) -> Result<Vec<throughput::ThroughputResult>, String> {
    let config = ThroughputConfig {
        instances: 20,
        batch_size: 10,
        rate: 1000,
        feed_for: Duration::from_secs(feed_secs),
        graph_delay: Duration::from_millis(100),
    };
    let mut out = Vec::new();

    // 1. The real sender binary against moto.
    // moto serves on the order of 100 DynamoDB requests/s (serialized, Python): a few hundred
    // messages outlast the run; the report says so if the queue runs dry.
    let seed = 40 * feed_secs as usize + 200;
    log(format!(
        "throughput: seeding {seed} contacts and queued messages into moto"
    ));
    let jobs = seed_throughput_messages(b, seed, first_customer).await?;
    let rt = Arc::new(RuntimeApi::start().await.map_err(|e| e.to_string())?);
    // Through the counting proxy, to show where the time goes (requests per send, per second).
    let endpoint = b.proxy.url();
    let mut procs = Vec::new();
    for i in 0..config.instances {
        let env = b.env("sender", &rt.host_port(), &endpoint);
        procs.push(
            Proc::spawn(
                &b.binary("sender"),
                &env,
                Some(&b.logs.join(format!("throughput-sender-{i}.log"))),
            )
            .map_err(|e| e.to_string())?,
        );
    }
    rt.wait_first_next(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moto = Some(b.moto.pid());
    let cpu_of = |pids: &[u32]| -> Duration { pids.iter().filter_map(|&p| procfs::cpu_time(p).ok()).sum() };
    let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
    b.proxy.take();
    let (s0, m0, t0) = (cpu_of(&pids), moto.map(|p| cpu_of(&[p])), Instant::now());
    log(format!(
        "throughput: {} sender processes against moto, {} s",
        config.instances, feed_secs
    ));
    let invoke = {
        let rt = rt.clone();
        move |event: aws_lambda_events::sqs::SqsEvent| {
            let rt = rt.clone();
            async move {
                let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
                match rt.invoke(Bytes::from(body), INVOKE_TIMEOUT).await? {
                    Reply::Response(r) => batch_failures(&r),
                    Reply::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
                }
            }
        }
    };
    let mut result = throughput::run_processes("sender binaries + moto", &b.graph, &config, jobs, invoke).await;
    let wall = t0.elapsed().as_secs_f64();
    let requests: u64 = b.proxy.take().values().sum();
    result.endpoint_requests_per_s = Some(requests as f64 / wall);
    if result.sent > 0 {
        result.endpoint_requests_per_message = Some(requests as f64 / result.sent as f64);
    }
    let sender_cpu = cpu_of(&pids) - s0;
    if result.sent > 0 {
        result.sender_cpu_us_per_message = Some(sender_cpu.as_secs_f64() * 1e6 / result.sent as f64);
    }
    if let (Some(m0), Some(p)) = (m0, moto) {
        result.endpoint_cpu_share = Some((cpu_of(&[p]) - m0).as_secs_f64() / wall);
    }
    drop(procs);
    out.push(result);

    // 2. The sender's own pipeline over the in-memory store.
    for latency_ms in [0u64, 5] {
        log(format!(
            "throughput: sender pipeline over the in-memory store ({latency_ms} ms per call)"
        ));
        out.push(throughput::run_in_memory(&b.graph, &config, Duration::from_millis(latency_ms)).await);
    }
    // 3. The sender's ceiling: the limiter (and the fake Graph's limit) at twice the target.
    log("throughput: sender capacity over the in-memory store (5 ms per call, limiter at 2,000/s)");
    let capacity = ThroughputConfig { rate: 2000, ..config };
    let mut probe = throughput::run_in_memory(&b.graph, &capacity, Duration::from_millis(5)).await;
    probe.capacity_probe = true;
    probe.label = "in-memory store, capacity probe".into();
    out.push(probe);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Latency: CPU per event while the AWS endpoint answers slowly (see `bench::latency`)

const LATENCY_WEBHOOK: &str = "inbound text webhook (conversation)";
const LATENCY_SENDER: &str = "sender: one message per event";
const LATENCY_REFERENCE: &str = "one DynamoDB PutItem (reference)";

/// Customers of the latency runs: their own range, so earlier runs do not change their shape.
const LATENCY_FIRST_CUSTOMER: usize = 300_000;

struct LatencyRun {
    cpu_us: f64,
    wall_us: f64,
    wakeups: f64,
    aws: f64,
    failed: usize,
}

impl From<&Warm> for LatencyRun {
    fn from(w: &Warm) -> Self {
        LatencyRun {
            cpu_us: w.cpu_us_per_event,
            wall_us: w.wall_us_per_event,
            wakeups: w.wakeups_per_event,
            aws: w.aws_per_event,
            failed: w.failed_events,
        }
    }
}

/// The webhook's conversation case, a contact read through the API and one send per event, each
/// at every delay of the proxy, `rounds` times with the delays' order rotating.
async fn latency_runs(
    b: &Bench,
    delays_ms: &[u64],
    events: usize,
    warmup: usize,
    rounds: usize,
) -> Result<Vec<LatencyCase>, String> {
    let warmup = warmup.max(1);
    let total = events + warmup;
    let customers = warmup.min(total);
    // The reference (one PutItem, plain SDK configuration) is the control: what it gains with
    // the delay is the machine's, not a function's.
    let cases = [
        (LATENCY_WEBHOOK, "webhook"),
        (CONTACT_GET, "api"),
        (LATENCY_SENDER, "sender"),
        (LATENCY_REFERENCE, REFERENCE),
    ];
    let mut runs: BTreeMap<(usize, u64), Vec<LatencyRun>> = BTreeMap::new();
    let mut contact_ids: Vec<String> = Vec::new();
    let mut order = delays_ms.to_vec();
    b.graph.configure(Duration::ZERO, 0);
    for round in 0..rounds {
        for (k, &delay) in order.iter().enumerate() {
            let run_no = round * delays_ms.len() + k;
            // Sends need queued messages of their own (seeded straight into moto, not delayed).
            let jobs = seed_throughput_messages(b, total, LATENCY_FIRST_CUSTOMER + 10_000 * (run_no + 1)).await?;
            b.proxy.set_delay(Duration::from_millis(delay));
            // The warm-up messages come from the customers every measured message repeats, so
            // the measured ones find their contact remembered: one write each.
            let inbound = warm(
                b,
                &format!("latency {delay} ms: {LATENCY_WEBHOOK}"),
                "webhook",
                (0..total)
                    .map(|n| inbound_text_from(LATENCY_FIRST_CUSTOMER + n % customers, n, 100 + run_no))
                    .collect(),
                warmup,
                Expect::Http(200),
            )
            .await;
            if contact_ids.is_empty() && inbound.is_ok() {
                b.proxy.set_delay(Duration::ZERO);
                for i in 0..customers {
                    let identity = CustomerIdentity {
                        phone: Some(customer_phone(LATENCY_FIRST_CUSTOMER + i)),
                        user_id: None,
                    };
                    let (id, _) = b
                        .store
                        .match_contact(&b.tenant.tenant.tenant_id, &identity)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no contact for latency customer {i}"))?;
                    contact_ids.push(id);
                }
                b.proxy.set_delay(Duration::from_millis(delay));
            }
            let get = warm(
                b,
                &format!("latency {delay} ms: {CONTACT_GET}"),
                "api",
                (0..total)
                    .map(|n| {
                        let id = &contact_ids[n % contact_ids.len()];
                        apigw_event("GET", &format!("/v1/contacts/{id}"), &[bearer(b)], b"")
                    })
                    .collect(),
                warmup,
                Expect::Http(200),
            )
            .await;
            let sends = warm(
                b,
                &format!("latency {delay} ms: {LATENCY_SENDER}"),
                "sender",
                jobs.iter().enumerate().map(|(i, job)| send_job_event(i, job)).collect(),
                warmup,
                Expect::NoBatchFailures,
            )
            .await;
            let reference = warm(
                b,
                &format!("latency {delay} ms: {LATENCY_REFERENCE}"),
                REFERENCE,
                (0..total).map(|i| json!({"n": i}).to_string().into_bytes()).collect(),
                warmup,
                Expect::Anything,
            )
            .await;
            b.proxy.set_delay(Duration::ZERO);
            for (case, run) in [inbound, get, sends, reference].into_iter().enumerate() {
                let run = run?;
                log(format!(
                    "latency {delay} ms: {}: {:.0} µs CPU/event, {:.0} µs wall/event, {:.1} wake-ups/event",
                    cases[case].0,
                    run.result.cpu_us_per_event,
                    run.result.wall_us_per_event,
                    run.result.wakeups_per_event
                ));
                runs.entry((case, delay))
                    .or_default()
                    .push(LatencyRun::from(&run.result));
            }
        }
        order.rotate_left(1);
    }
    Ok(cases
        .iter()
        .enumerate()
        .map(|(case, (scenario, binary))| {
            let points: Vec<(u64, &Vec<LatencyRun>)> = delays_ms
                .iter()
                .map(|&d| (d, runs.get(&(case, d)).expect("measured")))
                .collect();
            LatencyCase {
                scenario: (*scenario).to_owned(),
                binary: (*binary).to_owned(),
                events,
                failed_events: points.iter().flat_map(|(_, r)| r.iter().map(|r| r.failed)).sum(),
                points: points
                    .iter()
                    .map(|(delay_ms, r)| LatencyPoint {
                        delay_ms: *delay_ms,
                        cpu_us_rounds: r.iter().map(|r| r.cpu_us).collect(),
                        wall_us_per_event: median(&r.iter().map(|r| r.wall_us).collect::<Vec<_>>()),
                        wakeups_per_event: median(&r.iter().map(|r| r.wakeups).collect::<Vec<_>>()),
                        aws_per_event: median(&r.iter().map(|r| r.aws).collect::<Vec<_>>()),
                    })
                    .collect(),
            }
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Sizes, first use of phonenumber, machine

fn zip_size(binary: &Path, scratch: &Path) -> Option<u64> {
    let dir = scratch.join("zip");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    std::fs::copy(binary, dir.join("bootstrap")).ok()?;
    let status = std::process::Command::new("zip")
        .args(["-q", "-X", "-9", "bootstrap.zip", "bootstrap"])
        .current_dir(&dir)
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    std::fs::metadata(dir.join("bootstrap.zip")).ok().map(|m| m.len())
}

fn sizes(b: &Bench, scratch: &Path) -> Vec<Size> {
    let lambda_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| b.root.join("target"))
        .join("lambda");
    let len = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
    std::iter::once(HELLO.to_owned())
        .chain(b.functions.iter().map(|f| f.binary.clone()))
        .map(|name| {
            let native = b.binary(&name);
            Size {
                x86_64_bytes: len(native.clone()),
                x86_64_zip_bytes: zip_size(&native, scratch),
                arm64_bytes: len(lambda_dir.join(&name).join("bootstrap")),
                arm64_zip_bytes: len(lambda_dir.join(&name).join("bootstrap.zip")),
                binary: name,
            }
        })
        .collect()
}

/// The named benches the report runs (command, what it measures): the paths whose figures
/// need a harness of their own, at a size that fits `make bench`'s time. A command's first word
/// is one of the bench's binaries (beside the functions) or, failing that, a program on PATH;
/// each runs from the repository root with `CONSOLE_STACK_PROFILE` naming the measured
/// profile (the console bench starts that build of the local stack).
const NAMED_BENCHES: &[(&[&str], &str)] = &[
    (
        &["broadcast-bench", "20000"],
        "Broadcast plan and send per recipient (20,000 recipients, the engine over the in-memory store)",
    ),
    (
        &["media-rss", "--files", "10", "--mib", "100"],
        "Media worker with large files (10 concurrent 100 MiB documents, peak RSS against 128 MB)",
    ),
    (
        &["sdk-request", "--requests", "3000"],
        "SDK client CPU per DynamoDB request against an endpoint that answers at once (connections kept alive)",
    ),
    (
        &["sdk-request", "--requests", "3000", "--close"],
        "The same with a new connection per request (as moto answers: `Connection: close`)",
    ),
    (
        &["event-log-units", "--messages", "3200", "--rate", "1000"],
        "The event log key at 1,000 msg/s with three statuses each: write units per event, deflated packs vs listed",
    ),
    (
        &["bash", "console/tests/run.sh", "--bench"],
        "Console: what it ships and the time to an interactive inbox (60 conversations, local stack)",
    ),
];

/// Runs [`NAMED_BENCHES`] one after the other (nothing else runs meanwhile) and keeps what each
/// printed; one that fails is reported as failed, and the others still run.
fn named_benches(b: &Bench, profile: &str) -> Vec<NamedBench> {
    NAMED_BENCHES
        .iter()
        .map(|(command, what)| {
            let (program, args) = command.split_first().expect("a command");
            let own = b.binary(program);
            let (exe, shown) = if own.exists() {
                // As it was run: relative to the repository root when it lies inside it.
                let shown = own.strip_prefix(&b.root).unwrap_or(&own).display().to_string();
                (own, shown)
            } else {
                (PathBuf::from(program), (*program).to_owned())
            };
            let shown = std::iter::once(shown)
                .chain(args.iter().map(|a| (*a).to_owned()))
                .collect::<Vec<_>>()
                .join(" ");
            log(format!("named bench: {shown}"));
            let started = Instant::now();
            let run = std::process::Command::new(exe)
                .args(args.iter())
                .current_dir(&b.root)
                .env("CONSOLE_STACK_PROFILE", profile)
                .stdin(std::process::Stdio::null())
                .output();
            let (output, failure) = match run {
                Ok(out) => {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let failure = (!out.status.success()).then(|| {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        format!("{}: {}", out.status, stderr.lines().last().unwrap_or_default())
                    });
                    (text, failure)
                }
                Err(e) => (String::new(), Some(format!("could not start: {e}"))),
            };
            NamedBench {
                what: (*what).to_owned(),
                command: shown,
                wall_s: started.elapsed().as_secs_f64(),
                failure,
                output,
            }
        })
        .collect()
}

fn phonenumber_first_use(b: &Bench) -> BTreeMap<String, f64> {
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..7 {
        let Ok(out) = std::process::Command::new(b.binary("phone-first-use")).output() else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            continue;
        };
        for (k, x) in v.as_object().into_iter().flatten() {
            if let Some(x) = x.as_f64() {
                samples.entry(k.clone()).or_default().push(x);
            }
        }
    }
    samples.into_iter().map(|(k, v)| (k, median(&v))).collect()
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let cmd = |c: &str, a: &[&str]| {
        std::process::Command::new(c)
            .args(a)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        kernel: cmd("uname", &["-r"]),
        rustc: cmd("rustc", &["--version"]),
        memory_gib: mem_kib / 1024.0 / 1024.0,
    }
}

/// The keys of `[profile.<name>]` in the workspace's Cargo.toml, those it inherits included
/// (one level: `inherits = "release"`).
fn cargo_profile(root: &Path, name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    let section = |wanted: &str| {
        let mut out = BTreeMap::new();
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                inside = line == format!("[profile.{wanted}]");
                continue;
            }
            if inside
                && !line.starts_with('#')
                && let Some((k, v)) = line.split_once('=')
            {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        out
    };
    let own = section(name);
    let mut out = match own.get("inherits") {
        Some(parent) => section(parent.trim_matches('"')),
        None => BTreeMap::new(),
    };
    out.extend(own.into_iter().filter(|(k, _)| k != "inherits"));
    out
}

/// The cargo profile a binary directory holds (`target/<profile>`; `release` when unknown).
fn profile_of(bin_dir: &Path) -> String {
    match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => "release".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------

/// Rewrites REPORT.md from the last results.json and the current ANALYSIS.md.
fn render_only(out: &Path) -> Result<(), String> {
    let json = std::fs::read_to_string(out.join("results.json")).map_err(|e| format!("results.json: {e}"))?;
    let results: Results = serde_json::from_str(&json).map_err(|e| format!("results.json: {e}"))?;
    let analysis = std::fs::read_to_string(out.join("ANALYSIS.md")).ok();
    std::fs::write(out.join("REPORT.md"), report::render(&results, analysis.as_deref())).map_err(|e| e.to_string())
}

async fn run(opts: Options, root: PathBuf) -> Result<(), String> {
    if opts.render_only {
        return render_only(&opts.out);
    }
    let started = Instant::now();
    // By default the binaries beside the bench's own (make bench builds them all together).
    let bin_dir = match opts.bin_dir.clone() {
        Some(dir) => dir,
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| release_binary(&root, "x").with_file_name("")),
    };
    let measured_profile = profile_of(&bin_dir);
    let mut b = setup(&root, &opts.out, &bin_dir, opts.functions.as_deref()).await?;
    if let Some(dir) = &opts.perf {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        b.perf = Some(dir.clone());
    }
    let b = b;
    let mut results = Results {
        generated_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        command: std::iter::once("make bench".to_owned())
            .chain(std::env::args().skip(1).map(|a| format!("(bench {a})")))
            .collect::<Vec<_>>()
            .join(" "),
        machine: machine(),
        profile: cargo_profile(&root, &measured_profile),
        profile_name: measured_profile.clone(),
        package_profile: cargo_profile(&root, "release"),
        ..Results::default()
    };
    results.settings = BTreeMap::from([
        ("events".into(), opts.events.to_string()),
        ("warmup".into(), opts.warmup.to_string()),
        ("starts".into(), opts.starts.to_string()),
        ("feed_secs".into(), opts.feed_secs.to_string()),
        (
            "endpoint_delays_ms".into(),
            opts.endpoint_delays_ms
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("latency_events".into(), opts.latency_events.to_string()),
        ("latency_rounds".into(), opts.latency_rounds.to_string()),
    ]);
    if !opts.skip_cold {
        results.cold_start = cold_starts(&b, opts.starts).await?;
        results.phonenumber_first_use_us = phonenumber_first_use(&b);
    }
    if !opts.skip_warm {
        let mut warm = warm_runs(&b, opts.events, opts.warmup).await?;
        if !opts.skip_paths {
            let contact_ids = bench_contact_ids(&b, opts.events + opts.warmup).await?;
            warm.extend(paths::path_runs(&b, opts.events, opts.warmup, &contact_ids).await?);
        }
        relate_to_reference(&mut warm);
        results.warm = warm;
    }
    if !opts.skip_latency && !opts.endpoint_delays_ms.is_empty() {
        results.latency = latency_runs(
            &b,
            &opts.endpoint_delays_ms,
            opts.latency_events,
            opts.warmup,
            opts.latency_rounds,
        )
        .await?;
    }
    if !opts.skip_throughput {
        results.throughput = throughput_runs(&b, opts.feed_secs, 100_000).await?;
    }
    if !opts.skip_named {
        results.named = named_benches(&b, &measured_profile);
        for n in results.named.iter().filter(|n| n.failure.is_some()) {
            results.notes.push(format!("the named bench `{}` failed", n.command));
        }
    }
    results.sizes = sizes(&b, &opts.out.join("out"));
    if results
        .sizes
        .iter()
        .any(|s| !report::is_reference(&s.binary) && s.arm64_zip_bytes.is_none())
    {
        results.notes.push(
            "arm64 packages missing for some functions: run `make package` (make bench does) for deployed sizes".into(),
        );
    }
    for w in results.warm.iter().filter(|w| w.failed_events > 0) {
        results.notes.push(format!(
            "{} of {} measured events of \"{}\" failed; see bench/out/logs",
            w.failed_events, w.events, w.scenario
        ));
    }
    results.targets = report::check_targets(&results);
    results
        .notes
        .push(format!("bench wall time {:.0} s", started.elapsed().as_secs_f64()));
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(opts.out.join("results.json"), json + "\n").map_err(|e| e.to_string())?;
    let analysis = std::fs::read_to_string(opts.out.join("ANALYSIS.md")).ok();
    std::fs::write(
        opts.out.join("REPORT.md"),
        report::render(&results, analysis.as_deref()),
    )
    .map_err(|e| e.to_string())?;
    log(format!(
        "wrote {} and {}",
        opts.out.join("REPORT.md").display(),
        opts.out.join("results.json").display()
    ));
    let missed: Vec<&str> = results
        .targets
        .iter()
        .filter(|t| !t.met)
        .map(|t| t.what.as_str())
        .collect();
    if !missed.is_empty() {
        log(format!("targets missed: {}", missed.join("; ")));
    }
    Ok(())
}

fn main() {
    let root = devstack::workspace_root();
    let opts = match parse_args(&root) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = runtime.block_on(run(opts, root)) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_that_inherits_release_shows_release_keys_with_its_own_on_top() {
        let root = std::env::temp_dir().join(format!("bench-profile-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            "[profile.release]\nopt-level = \"s\"\nlto = \"fat\"\n# a comment = no\n\n[profile.measure]\ninherits = \"release\"\nlto = false\n",
        )
        .unwrap();
        let measure = cargo_profile(&root, "measure");
        assert_eq!(measure.get("opt-level").map(String::as_str), Some("\"s\""));
        assert_eq!(measure.get("lto").map(String::as_str), Some("false"));
        assert!(!measure.contains_key("inherits"));
        assert_eq!(
            cargo_profile(&root, "release").get("lto").map(String::as_str),
            Some("\"fat\"")
        );
        assert_eq!(profile_of(&root.join("target").join("measure")), "measure");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
